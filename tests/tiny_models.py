"""Configs of the tiny Hugging Face models the tests build with random weights (nothing is downloaded).

Every builder fills in the tiny sizes the tests share (hidden size 32, 2 layers of 2 heads, feed-forward size
64, under each architecture's own names); `bert_config`, `t5_config` and `gpt2_config` also turn dropout off
unless given ``dropout``. A test passes its vocabulary size and, as keyword overrides, whatever else it needs
(labels, positions, other sizes); an override wins over a default. The tests seed torch before building a
model from a config, so the same config gives the same weights.
"""

from __future__ import annotations

from typing import Any, TypeVar

import transformers

SIZES = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
Config = TypeVar("Config", bound=transformers.PretrainedConfig)


def tiny_config(config_class: type[Config], vocab_size: int, **overrides: Any) -> Config:
    """`config_class` (one that names its sizes as BERT and Llama do) with SIZES and, for anything not
    overridden, its own defaults: dropout included."""
    return config_class(vocab_size=vocab_size, **{**SIZES, **overrides})


def bert_config(vocab_size: int, *, dropout: float = 0.0, **overrides: Any) -> transformers.BertConfig:
    """A BERT of SIZES with `dropout` in its hidden layers and attention probabilities."""
    dropouts = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    return tiny_config(transformers.BertConfig, vocab_size, **{**dropouts, **overrides})


def llama_config(vocab_size: int, **overrides: Any) -> transformers.LlamaConfig:
    """A Llama of SIZES (its only dropout, in the attention, is 0 by default)."""
    return tiny_config(transformers.LlamaConfig, vocab_size, **overrides)


def t5_config(vocab_size: int, *, dropout: float = 0.0, **overrides: Any) -> transformers.T5Config:
    """A T5 of model size 32, 2 encoder and 2 decoder blocks of 2 heads of size 16, feed-forward size 64, with
    `dropout`; the decoder starts from id 0, the pad id."""
    options = {
        "d_model": 32,
        "d_kv": 16,
        "d_ff": 64,
        "num_layers": 2,
        "num_heads": 2,
        "dropout_rate": dropout,
        "decoder_start_token_id": 0,
    }
    return transformers.T5Config(vocab_size=vocab_size, **{**options, **overrides})


def gpt2_config(vocab_size: int, *, dropout: float = 0.0, **overrides: Any) -> transformers.GPT2Config:
    """A GPT-2 of embedding size 32, 2 blocks of 2 heads, with `dropout` in the embeddings, the attention and
    the residuals; id 0 is bos and eos."""
    options = {
        "n_embd": 32,
        "n_layer": 2,
        "n_head": 2,
        "resid_pdrop": dropout,
        "embd_pdrop": dropout,
        "attn_pdrop": dropout,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    return transformers.GPT2Config(vocab_size=vocab_size, **{**options, **overrides})
