"""A byte-level BPE trained in memory, for models built from a config (the experiments, `tunekit train`)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

__all__ = ["train_byte_level_bpe"]


def train_byte_level_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str], *, min_frequency: int = 0
) -> tokenizers.Tokenizer:
    """A byte-level BPE of `vocab_size` tokens trained on `texts`, with `special_tokens` first (ids 0, 1,
    ...). The 256 byte symbols are always in the vocabulary, so any text encodes and decodes losslessly;
    the same texts in the same order give the same tokenizer; nothing is printed. Merges need at least
    `min_frequency` occurrences (0: any)."""
    tokenizer = tokenizers.Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer
