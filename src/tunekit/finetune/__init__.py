"""``tunekit train``: fine-tuning on the user's own data (JSONL, CSV or a `datasets` folder) for sequence
classification, token classification and generation (causal LM or seq2seq), with any tunekit objective and
trick, through the Hugging Face Trainer.

Needs the ``hf`` extra (transformers, tokenizers) and, for the report's curves, the ``cli`` extra
(matplotlib); a `datasets` folder needs the ``datasets`` package. `TrainConfig` imports neither the Trainer
nor PEFT, so ``tunekit train --help`` reads its options quickly; `train` imports them when first used.
"""

from .config import TINY_MODELS, TrainConfig

__all__ = ["TINY_MODELS", "TrainConfig", "TrainResult", "train"]


def __getattr__(name: str):
    if name in ("TrainResult", "train"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
