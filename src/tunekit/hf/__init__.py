"""Training with tunekit inside the Hugging Face Trainer: a model's loss from any objective
(`TrainerLoss`), the tricks (`TrainerTricks`), the Trainers that run them, and a pooled classification head.

Needs the ``hf`` extra (``pip install 'tunekit[hf]'``); the losses and tricks depend on torch alone.
`TunekitSFTTrainer` also needs the ``trl`` extra, imported when it is first used. Decoding inspection is
`tunekit.decoding`, long-text classification `tunekit.long_text`.
"""

try:
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("tunekit.hf needs transformers and tokenizers: pip install 'tunekit[hf]'") from error

from .loss_func import TASKS, ModelLoss, TrainerLoss
from .pooled_classifier import PooledClassifier
from .trainer import TrainerTricks, TunekitSeq2SeqTrainer, TunekitTrainer, TunekitTrainerMixin

__all__ = [
    "TASKS",
    "ModelLoss",
    "PooledClassifier",
    "TrainerLoss",
    "TrainerTricks",
    "TunekitSFTTrainer",
    "TunekitSeq2SeqTrainer",
    "TunekitTrainer",
    "TunekitTrainerMixin",
]


def __getattr__(name: str):
    if name == "TunekitSFTTrainer":  # TRL only when asked for
        from .sft import TunekitSFTTrainer

        return TunekitSFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
