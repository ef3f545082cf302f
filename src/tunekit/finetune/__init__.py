"""``tunekit train``: fine-tuning on the user's own data (JSONL, CSV or a `datasets` folder) for sequence
classification, token classification and generation (causal LM or seq2seq), with any tunekit objective and
trick, through the Hugging Face Trainer.

Needs the ``hf`` extra (transformers, tokenizers) and, for the report's curves, the ``cli`` extra
(matplotlib); a `datasets` folder needs the ``datasets`` package.
"""

from .config import OBJECTIVES_BY_TASK, TASKS, TINY_MODELS, TrainConfig
from .run import TrainResult, train

__all__ = ["OBJECTIVES_BY_TASK", "TASKS", "TINY_MODELS", "TrainConfig", "TrainResult", "train"]
