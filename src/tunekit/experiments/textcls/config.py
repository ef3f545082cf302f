"""The options both classification experiments share: the data, the tiny BERT, its pre-training and its
fine-tuning. Each experiment's config class derives from `ClassifierConfig` and adds its arms."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ...runs.config import check_at_least, option

__all__ = ["MIN_VOCAB_SIZE", "ClassifierConfig"]

# a WordPiece's floor: its 5 specials and room for characters; `workbench.tokenizers.train_wordpiece` refuses
# a size below the specials and the corpus's own characters, alone and as ## continuations (141: the stdlib)
MIN_VOCAB_SIZE = 100


@dataclass
class ClassifierConfig:
    seeds: int = option(3, "seeds per arm (0, 1, ...)", changes_results=False)
    corpus: Path | None = option(None, "a tree of .py files instead of the standard library")
    device: str = option("cpu", "torch device, e.g. cpu or cuda", changes_results=False)
    vocab_size: int = option(2000, "WordPiece vocabulary trained on the training texts")
    max_length: int = option(48, "longest text in tokens (longer ones are cut)")
    hidden_size: int = option(64, "BERT width")
    layers: int = option(2, "BERT layers")
    heads: int = option(2, "BERT attention heads")
    dropout: float = option(0.1, "dropout in the encoder and before the head")
    pretrain_epochs: int = option(10, "masked-language-model epochs on the training texts (0: none)")
    pretrain_learning_rate: float = option(1e-3, "AdamW learning rate of the pre-training")
    epochs: int = option(8, "fine-tuning epochs per arm")
    batch_size: int = option(32, "training batch size")
    learning_rate: float = option(5e-4, "AdamW peak learning rate of the fine-tuning (linear decay)")
    threads: int = option(
        1,
        "torch CPU threads (0: torch's default); one is fastest for so small a model",
        changes_results=False,
    )

    QUICK: ClassVar[dict[str, Any]] = {
        "seeds": 1,
        "vocab_size": 300,
        "hidden_size": 16,
        "pretrain_epochs": 1,
        "epochs": 1,
        "max_length": 24,
    }

    def describe_model(self) -> str:
        """``"A BERT of 2 layers x 64 (pre-trained with 10 MLM epochs on the training texts)"``."""
        origin = (
            f"pre-trained with {self.pretrain_epochs} MLM epochs on the training texts"
            if self.pretrain_epochs
            else "random init, no pre-training"
        )
        return f"A BERT of {self.layers} layers x {self.hidden_size} ({origin})"

    def validate(self) -> None:
        check_at_least(
            self,
            ("seeds", "vocab_size", "max_length", "hidden_size", "layers", "heads", "epochs", "batch_size"),
        )
        check_at_least(self, ("pretrain_epochs", "threads"), minimum=0)
        if self.vocab_size < MIN_VOCAB_SIZE:
            raise ValueError(f"vocab_size must be >= {MIN_VOCAB_SIZE} (a WordPiece), got {self.vocab_size}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be a multiple of heads={self.heads}")
        for name in ("learning_rate", "pretrain_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.corpus is not None:
            from ..codegen.data import check_corpus_root  # the corpus is read as the code-generation one is

            check_corpus_root(Path(self.corpus))
