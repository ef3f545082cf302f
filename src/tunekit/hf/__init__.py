"""The Hugging Face integration: `transformers` models, tokenizers, `generate` and the Trainer.

Needs the ``hf`` extra (``pip install 'tunekit[hf]'``); the rest of tunekit depends on torch alone.
`TunekitSFTTrainer` also needs the ``trl`` extra, imported when it is first used.
"""

try:
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("tunekit.hf needs transformers and tokenizers: pip install 'tunekit[hf]'") from error

from .decoding import (
    DEFAULT_STRATEGIES,
    Decoded,
    Strategy,
    compare_strategies,
    decode,
    format_comparison,
    format_steps,
    format_token_log_probs,
    score_continuation,
    sequence_log_prob,
    token_log_probs,
)
from .long_text import SlidingWindowClassifier, aggregate_windows, classify_long_texts, tokenize_windows
from .loss_func import TASKS, ModelLoss, TrainerLoss
from .pooled_classifier import PooledClassifier
from .tokenizer_training import train_byte_level_bpe
from .trainer import TrainerTricks, TunekitSeq2SeqTrainer, TunekitTrainer, TunekitTrainerMixin

__all__ = [
    "DEFAULT_STRATEGIES",
    "TASKS",
    "Decoded",
    "ModelLoss",
    "PooledClassifier",
    "SlidingWindowClassifier",
    "Strategy",
    "TrainerLoss",
    "TrainerTricks",
    "TunekitSFTTrainer",
    "TunekitSeq2SeqTrainer",
    "TunekitTrainer",
    "TunekitTrainerMixin",
    "aggregate_windows",
    "classify_long_texts",
    "compare_strategies",
    "decode",
    "format_comparison",
    "format_steps",
    "format_token_log_probs",
    "score_continuation",
    "sequence_log_prob",
    "token_log_probs",
    "tokenize_windows",
    "train_byte_level_bpe",
]


def __getattr__(name: str):
    if name == "TunekitSFTTrainer":  # TRL only when asked for
        from .sft import TunekitSFTTrainer

        return TunekitSFTTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
