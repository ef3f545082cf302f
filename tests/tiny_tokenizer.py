"""Tokenizers trained locally on text from the running Python's standard library (no download).

They are cached per process: do not change their settings in a test (deep-copy one to do so)."""

from __future__ import annotations

import argparse
import collections
import functools
import inspect
import json
import pathlib
import textwrap

import tokenizers
import transformers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}


def stdlib_text(limit: int = 1000) -> list[str]:
    """Docstrings of standard-library functions and classes: English prose, the same on every machine
    with the same Python."""
    texts = []
    for module in (json, textwrap, inspect, functools, argparse, collections, pathlib):
        for _, member in inspect.getmembers(module):
            doc = inspect.getdoc(member)
            if doc and len(texts) < limit:
                texts.append(doc)
    return texts


@functools.cache
def wordpiece_tokenizer(vocab_size: int = 300) -> transformers.PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer: ``[CLS] text [SEP]``, pad id 0."""
    tok = tokenizers.Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = list(SPECIAL.values())  # [PAD] gets id 0
    tok.train_from_iterator(
        stdlib_text(),
        trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False),
    )
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)


@functools.cache
def bpe_tokenizer(vocab_size: int = 300) -> transformers.PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE tokenizer; ``<|endoftext|>`` (id 0) is bos, eos and pad."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(stdlib_text(), trainer)
    eos = "<|endoftext|>"
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=eos, eos_token=eos, pad_token=eos
    )
