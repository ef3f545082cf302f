"""The checks both code-generation experiments make on the options they share: the BPE's size, the GPT-2's
shape, dropout and the learning rates. Standard library only, so a config validates without transformers."""

from __future__ import annotations

from typing import Any

__all__ = ["MIN_VOCAB_SIZE", "check_model_options"]

# a byte-level BPE holds its 256 byte symbols and <pad>, <sep>, <eos> (`tokenizer.train_tokenizer`)
MIN_VOCAB_SIZE = 256 + 3


def check_model_options(config: Any) -> None:
    """ValueError naming the option unless ``vocab_size >= MIN_VOCAB_SIZE``, ``0 <= dropout < 1``,
    ``n_embd`` is a multiple of ``n_head`` and both learning rates are > 0."""
    if config.vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be >= {MIN_VOCAB_SIZE} (the BPE's 256 byte symbols and its 3 specials), "
            f"got {config.vocab_size}"
        )
    if not 0 <= config.dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout!r}")
    if config.n_embd % config.n_head:
        raise ValueError(f"n_embd={config.n_embd} must be a multiple of n_head={config.n_head}")
    for name in ("learning_rate", "pretrain_learning_rate"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be > 0, got {getattr(config, name)!r}")
