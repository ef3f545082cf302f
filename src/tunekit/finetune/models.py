"""The model and tokenizer ``tunekit train`` fine-tunes: a local Hugging Face folder, or a named tiny
architecture built from a config with random weights and a tokenizer trained on the training texts.

Nothing is downloaded: folders are read with ``local_files_only=True``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import transformers
from tokenizers import processors

from ..workbench.tokenizers import train_byte_level_bpe, train_wordpiece
from .config import BPE_MIN_VOCAB_SIZE, TINY_MODELS, TrainConfig, check_folders, default_model

__all__ = ["AUTO_CLASSES", "load_model", "load_tokenizer", "model_name", "train_tokenizer", "with_lora"]

AUTO_CLASSES = {
    "sequence_classification": transformers.AutoModelForSequenceClassification,
    "token_classification": transformers.AutoModelForTokenClassification,
    "causal_lm": transformers.AutoModelForCausalLM,
    "seq2seq": transformers.AutoModelForSeq2SeqLM,
}
PAD, EOS = "<pad>", "<eos>"


def model_name(config: TrainConfig) -> str:
    """The model the config asks for: its ``model``, or the task's tiny architecture."""
    return config.model if config.model is not None else default_model(config.task)


def train_tokenizer(
    architecture: str, texts: Iterable[str], vocab_size: int, max_length: int
) -> transformers.PreTrainedTokenizerFast:
    """A tokenizer trained in memory on `texts` for a tiny architecture.

    tiny-bert: lower-cased WordPiece over the most frequent words (`workbench.tokenizers.train_wordpiece`:
    counted, as `tokenizers`' own trainer is not deterministic), ``[CLS] text [SEP]``, [PAD] id 0. The
    others: byte-level BPE (any text encodes losslessly) with ``<pad>`` id 0 and ``<eos>`` id 1; tiny-t5's
    encodings end with ``<eos>``, as T5's do. The same texts give the same tokenizer (a resumed run, and
    every process of a multi-process run, trains the same one).

    Raises ValueError for a `vocab_size` below what the vocabulary starts with: the BPE's 256 bytes and 2
    specials, the WordPiece's 5 specials and the texts' characters alone and as ``##`` continuations.
    """
    if architecture == "tiny-bert":
        return train_wordpiece(texts, vocab_size, model_max_length=max_length)
    if vocab_size < BPE_MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be >= {BPE_MIN_VOCAB_SIZE} for a byte-level BPE (256 bytes + 2 specials), "
            f"got {vocab_size}"
        )
    tok = train_byte_level_bpe(texts, vocab_size, [PAD, EOS])
    if architecture == "tiny-t5":
        tok.post_processor = processors.TemplateProcessing(
            single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}", special_tokens=[(EOS, tok.token_to_id(EOS))]
        )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        bos_token=EOS,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def load_tokenizer(config: TrainConfig, texts: Sequence[str], checkpoint: Path | None = None) -> Any:
    """The config's tokenizer folder, else the model folder's, else for a tiny model the one saved in the
    `checkpoint` a run resumes from, else one trained on `texts`.

    A tokenizer without a pad token pads with its eos token (GPT-2's and Llama's have none)."""
    name = model_name(config)
    check_folders(config)
    if config.tokenizer is None and name in TINY_MODELS and checkpoint is not None:
        return _from_folder(transformers.AutoTokenizer, checkpoint, "tokenizer")
    if config.tokenizer is not None:
        tokenizer = _from_folder(transformers.AutoTokenizer, Path(config.tokenizer), "tokenizer")
    elif name in TINY_MODELS:
        return train_tokenizer(name, texts, config.vocab_size, config.max_length)
    else:
        tokenizer = _from_folder(transformers.AutoTokenizer, Path(name), "model")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {name} has neither a pad nor an eos token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainConfig, tokenizer: Any, labels: Sequence[str]) -> transformers.PreTrainedModel:
    """The model for `config.task`: a tiny architecture with random weights (seeded by `config.seed`) or a
    local folder through the task's ``AutoModelFor...``; classification heads get `labels` as
    ``id2label`` (a head of another size is re-initialised), a sequence classifier also Hugging Face's
    ``problem_type``; a regression head has one output, named after the label field."""
    name = model_name(config)
    label_options = {}
    if config.task == "sequence_classification" and config.problem_type == "regression":
        labels = (config.label_field,)
    if config.task in ("sequence_classification", "token_classification"):
        label_options = {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
        }
    if config.task == "sequence_classification":
        label_options["problem_type"] = config.problem_type
    auto_class = AUTO_CLASSES[config.task]
    transformers.set_seed(config.seed)
    if name in TINY_MODELS:
        model_config = _tiny_config(name, config, tokenizer, label_options)
        return auto_class.from_config(model_config)
    model = _from_folder(auto_class, Path(name), "model", ignore_mismatched_sizes=True, **label_options)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def _tiny_config(name: str, config: TrainConfig, tokenizer: Any, label_options: dict) -> Any:
    hidden, layers, heads = config.tiny_hidden_size, config.tiny_layers, config.tiny_heads
    vocab = len(tokenizer)
    if name == "tiny-bert":
        return transformers.BertConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=config.max_length,
            pad_token_id=tokenizer.pad_token_id,
            **label_options,
        )
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.eos_token_id,
    }
    if name == "tiny-gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab,
            n_positions=config.max_length,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            **specials,
        )
    if name == "tiny-llama":
        return transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=4 * hidden,
            max_position_embeddings=config.max_length,
            **specials,
        )
    return transformers.T5Config(
        vocab_size=vocab,
        d_model=hidden,
        d_kv=hidden // heads,
        d_ff=4 * hidden,
        num_layers=layers,
        num_heads=heads,
        decoder_start_token_id=tokenizer.pad_token_id,
        **specials,
    )


# PEFT's task types: which head LoRA's model keeps trainable (a classifier's head is saved whole)
_LORA_TASK_TYPES = {
    "sequence_classification": "SEQ_CLS",
    "token_classification": "TOKEN_CLS",
    "causal_lm": "CAUSAL_LM",
    "seq2seq": "SEQ_2_SEQ_LM",
}


def with_lora(model: transformers.PreTrainedModel, config: TrainConfig) -> Any:
    """``model`` with LoRA adapters of rank ``config.lora_r`` on ``config.lora_targets`` (PEFT's default
    modules for the architecture when empty), only the adapters (and a classifier's head) trainable."""
    import peft  # the trl extra

    lora = peft.LoraConfig(
        r=config.lora_r,
        lora_alpha=2 * config.lora_r if config.lora_alpha is None else config.lora_alpha,
        target_modules=list(config.lora_targets) or None,
        task_type=_LORA_TASK_TYPES[config.task],
    )
    try:
        return peft.get_peft_model(model, lora)
    except ValueError as error:  # no module matches, or no default for this architecture
        raise ValueError(f"cannot add LoRA adapters to {type(model).__name__}: {error}") from None


def _from_folder(loader: Any, folder: Path, what: str, **kwargs: Any) -> Any:
    if not folder.is_dir():
        names = ", ".join(TINY_MODELS)
        hint = f", nor one of the tiny architectures ({names})" if what == "model" else ""
        raise ValueError(f"{what} {str(folder)!r} is not a folder{hint}")
    try:
        return loader.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"cannot load a {what} from {folder}: {error}") from None
