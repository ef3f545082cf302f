"""Tokenizers trained in memory, for models built from a config (the experiments, `tunekit train`): a
byte-level BPE (GPT-2 style) and a lower-casing WordPiece (BERT style)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence

import tokenizers
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

__all__ = ["BERT_SPECIAL_TOKENS", "train_byte_level_bpe", "train_wordpiece", "wordpiece_vocab"]

BERT_SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
"""The special tokens of the WordPiece tokenizers, as keyword arguments of a transformers tokenizer."""
_BERT_NORMALIZER = normalizers.BertNormalizer(lowercase=True)
_BERT_PRE_TOKENIZER = pre_tokenizers.BertPreTokenizer()


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


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, *, model_max_length: int | None = None
) -> transformers.PreTrainedTokenizerFast:
    """A lower-casing BERT WordPiece over `wordpiece_vocab(texts, vocab_size)`: ``[CLS] text [SEP]`` (and
    ``[CLS] a [SEP] b [SEP]`` for a pair), ``[PAD]`` id 0, the specials of `BERT_SPECIAL_TOKENS`;
    `model_max_length` when given (else transformers' default, no limit). The same texts, in any order,
    give the same tokenizer in every process."""
    tok = tokenizers.Tokenizer(models.WordPiece(wordpiece_vocab(texts, vocab_size), unk_token="[UNK]"))
    tok.normalizer = _BERT_NORMALIZER
    tok.pre_tokenizer = _BERT_PRE_TOKENIZER
    tok.decoder = decoders.WordPiece()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    limit = {} if model_max_length is None else {"model_max_length": model_max_length}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **limit, **BERT_SPECIAL_TOKENS)


def wordpiece_vocab(texts: Iterable[str], vocab_size: int) -> dict[str, int]:
    """token -> id: the 5 specials, every character of the texts (lower-cased and cut into words as BERT
    does) alone and as a ``##`` continuation, sorted, then the most frequent words (ties in alphabetical
    order) up to `vocab_size` tokens. A word outside it is cut into the longest known pieces, at worst its
    characters, so only a word with a character never seen becomes ``[UNK]``.

    Counted here rather than learnt by `tokenizers`' ``WordPieceTrainer``, because that trainer is not
    deterministic. Measured with tokenizers 0.23.3, training 5 times on the same 3,093 texts (the training
    split of `tunekit run imbalanced`) gave 5 different vocabularies at every size tried (120 to 8,000
    tokens), within one process and across fresh ones, with ``RAYON_NUM_THREADS`` 1, 2 or 16 alike: the
    specials and characters keep their ids, but the ``##`` continuations come in another (hash) order on
    each call, and at 2,000 tokens the learnt pieces differ as well (``authen`` in one vocabulary,
    ``authent`` in the next: pairs of equal counts merged in another order). A resumed run, every process
    of a multi-process run and a cached encoder need the same ids: this count depends only on the texts
    (not their order, the process or its hash seed; pinned by tests/test_workbench.py).

    Raises ValueError when `vocab_size` is not an integer or leaves no room beyond the specials and
    characters.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
        normalized = _BERT_NORMALIZER.normalize_str(text)
        counts.update(word for word, _ in _BERT_PRE_TOKENIZER.pre_tokenize_str(normalized))
    characters = sorted({c for word in counts for c in word})
    vocab = [*BERT_SPECIAL_TOKENS.values(), *characters, *(f"##{c}" for c in characters)]
    if vocab_size < len(vocab):  # the vocabulary would outgrow vocab_size and hold no word
        raise ValueError(
            f"vocab_size {vocab_size} is below the {len(vocab)} tokens a WordPiece of these texts starts "
            f"with ({len(BERT_SPECIAL_TOKENS)} specials and their {len(characters)} distinct characters, "
            "alone and as ## continuations); raise --vocab-size"
        )
    known = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
    return {token: i for i, token in enumerate(vocab)}
