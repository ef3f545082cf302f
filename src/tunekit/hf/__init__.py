"""Training with tunekit inside the Hugging Face Trainer: a model's loss from any objective
(`TrainerLoss`), the tricks (`TrainerTricks`), the Trainers that run them, and a pooled classification head.

Needs the ``hf`` extra (``pip install 'tunekit[hf]'``); the losses and tricks depend on torch alone.
`TunekitSFTTrainer` also needs the ``trl`` extra, imported when it is first used. Decoding inspection is
`tunekit.decoding`, long-text classification `tunekit.long_text`.
"""

try:
    import transformers  # noqa: F401  (light: transformers imports its modules when they are first used)
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("tunekit.hf needs transformers and tokenizers: pip install 'tunekit[hf]'") from error

# name -> module: each is imported when first used, so `tunekit.hf.trainer_tricks` (what a command line reads
# for its flags) does not import the Trainer, nor `TunekitSFTTrainer` TRL
_HOMES = {
    "ModelLoss": "loss_func",
    "PooledClassifier": "pooled_classifier",
    "TrainerLoss": "loss_func",
    "TrainerTricks": "trainer_tricks",
    "TunekitSFTTrainer": "sft",
    "TunekitSeq2SeqTrainer": "trainer",
    "TunekitTrainer": "trainer",
    "TunekitTrainerMixin": "trainer",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
