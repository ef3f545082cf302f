"""The code-generation experiments' model: a tiny GPT-2 from a config, pre-trained with cross-entropy and
cached with its tokenizer (`pretrained_model`), then fine-tuned per arm through tunekit's own Trainer
integration (`TunekitTrainer` + `TrainerLoss`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from ...hf import TrainerLoss, TrainerTricks, TunekitTrainer
from ...workbench.training import EpochEndCallback, quiet_arguments
from .data import Pair
from .tokenizer import Encoded, encode_pairs, load_tokenizer, save_tokenizer, train_tokenizer

__all__ = ["PRETRAINING_OPTIONS", "build_model", "pretrained_model", "rows", "set_dropout", "train"]

# the config's options that shape the tokenizer and the pre-trained model: part of their cache key
PRETRAINING_OPTIONS = (
    "vocab_size",
    "n_layer",
    "n_embd",
    "n_head",
    "dropout",
    "max_length",
    "pretrain_epochs",
    "batch_size",
    "pretrain_learning_rate",
)


def pretrained_model(
    config: Any, work: Path, *, tokenizer_pairs: Sequence[Pair], pretrain: Sequence[Pair], progress: Any
) -> tuple[transformers.PreTrainedTokenizerFast, Path]:
    """(tokenizer, folder of the pre-trained model), read back from `work` or made there when missing.

    The tokenizer: a BPE of ``config.vocab_size`` tokens trained on the descriptions and codes of
    `tokenizer_pairs`, in their order. The model: `build_model` seeded with 0, trained with cross-entropy on
    `pretrain` for ``config.pretrain_epochs`` epochs (none: the random weights) at
    ``config.pretrain_learning_rate``, then saved with its tokenizer, a complete local model folder (the
    backdoor's ``--model`` takes it). `work` must be keyed by the pairs and `PRETRAINING_OPTIONS`.
    """
    tokenizer_dir, pretrained = work / "tokenizer", work / "pretrained"
    if not (tokenizer_dir / "tokenizer.json").exists():
        progress.write("training the tokenizer")
        texts = [t for p in tokenizer_pairs for t in (p.nl, p.code)]
        save_tokenizer(train_tokenizer(texts, config.vocab_size), tokenizer_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    if not (pretrained / "config.json").exists():
        progress.write(f"pre-training on {len(pretrain)} pairs ({config.pretrain_epochs} epochs)")
        torch.manual_seed(0)
        model = build_model(tokenizer, config)
        if config.pretrain_epochs:
            model = train(
                model,
                tokenizer,
                encode_pairs(tokenizer, pretrain, max_length=config.max_length),
                objective="cross_entropy",
                options={},
                config=config,
                epochs=config.pretrain_epochs,
                learning_rate=config.pretrain_learning_rate,
                seed=0,
                output_dir=work / "trainer",
            )
        model.save_pretrained(pretrained)
        tokenizer.save_pretrained(pretrained)
    return tokenizer, pretrained


def build_model(tokenizer: Any, config: Any) -> transformers.GPT2LMHeadModel:
    """A GPT-2 of `config`'s sizes with random weights (seeded by the caller)."""
    model_config = transformers.GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=config.max_length,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return transformers.GPT2LMHeadModel(model_config)


def set_dropout(model: torch.nn.Module, p: float) -> None:
    """Every `nn.Dropout` of `model` drops with probability `p` (GPT-2's attention reads its rate from its
    `attn_dropout` module; an attention that reads a float from its config, as Llama's does, keeps it)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p


def rows(examples: Sequence[Encoded]) -> list[dict[str, list[int]]]:
    """Trainer dataset rows; the collator pads them per batch."""
    return [
        {"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
        for e in examples
    ]


def train(
    model: transformers.PreTrainedModel,
    tokenizer: Any,
    examples: Sequence[Encoded],
    *,
    objective: str | Callable,
    options: dict,
    config: Any,
    epochs: int,
    learning_rate: float,
    seed: int,
    output_dir: Path,
    on_epoch_end: Callable[[int, transformers.PreTrainedModel], None] | None = None,
    tricks: TrainerTricks | None = None,
) -> transformers.PreTrainedModel:
    """Train `model` on `examples` with a tunekit objective (a registered name built with `options`, or a
    loss module: see `TrainerLoss`) for `epochs`, AdamW at a constant `learning_rate`, with `tricks`;
    `on_epoch_end(epoch, model)` runs after each epoch (epochs counted from 1; `EpochEndCallback`)."""
    args = quiet_arguments(
        output_dir,
        config,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        train_sampling_strategy="group_by_length",  # less padding: batches of similar lengths
    )
    callbacks = [] if on_epoch_end is None else [EpochEndCallback(on_epoch_end)]
    trainer = TunekitTrainer(
        model=model,
        args=args,
        train_dataset=rows(examples),
        data_collator=transformers.DataCollatorForSeq2Seq(tokenizer, padding=True),
        compute_loss_func=TrainerLoss(objective, task="causal_lm", **options),
        callbacks=callbacks,
        tricks=tricks,
    )
    trainer.remove_callback(transformers.PrinterCallback)  # the experiment reports its own progress
    trainer.train()
    return trainer.model
