"""Models of the backdoor experiment: a tiny GPT-2 from a config, pre-trained with cross-entropy, then
fine-tuned per arm through tunekit's own Trainer integration (`TunekitTrainer` + `TrainerLoss`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from ...hf import TrainerLoss, TrainerTricks, TunekitTrainer
from .tokenizer import Encoded


def quiet_transformers() -> None:
    """No download / loading bars or advice from transformers inside the experiment's own progress bars."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


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
    `on_epoch_end(epoch, model)` runs after each epoch (epochs counted from 1)."""
    args = transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        optim="adamw_torch",
        train_sampling_strategy="group_by_length",  # less padding: batches of similar lengths
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=config.device == "cpu",
        seed=seed,
        data_seed=seed,
    )
    callbacks = [] if on_epoch_end is None else [_EpochEnd(on_epoch_end)]
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


class _EpochEnd(transformers.TrainerCallback):
    def __init__(self, function: Callable[[int, transformers.PreTrainedModel], None]) -> None:
        self.function = function

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.function(round(state.epoch), model)
        model.train(was_training)
