"""The classifier both classification experiments train: a tiny BERT encoder (random init, optionally
pre-trained with masked-language modelling on the training texts, cached) under
`tunekit.hf.PooledClassifier`, fine-tuned through `TunekitTrainer` with a `TrainerLoss` objective and
`TrainerTricks`. Its tokenizer is `tunekit.workbench.tokenizers.train_wordpiece` (see `prepare`).

Every training step goes through tunekit: the MLM pre-training scores its (B, N, V) logits with
``TrainerLoss("cross_entropy", task="token_classification")``, the fine-tuning with any objective of
`tunekit.losses.registry.CLASSIFICATION_LOSSES` for ``task="sequence_classification"``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import transformers

from ..._dtypes import upcast
from ...hf import PooledClassifier, TrainerLoss, TrainerTricks, TunekitTrainer
from ...workbench.training import EpochEndCallback, quiet_arguments

__all__ = ["build_classifier", "encoder_config", "fine_tune", "predict_probabilities", "pretrain_encoder"]


def encoder_config(tokenizer: Any, config: Any) -> transformers.BertConfig:
    """A BERT of `config`'s sizes (``hidden_size``, ``layers``, ``heads``, ``max_length``, ``dropout``)."""
    return transformers.BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
        intermediate_size=2 * config.hidden_size,
        max_position_embeddings=config.max_length,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.dropout,
        pad_token_id=tokenizer.pad_token_id,
    )


def _rows(tokenizer: Any, texts: Sequence[str], labels: Sequence[int] | None, max_length: int) -> list[dict]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    rows = [
        {"input_ids": ids, "attention_mask": mask}
        for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    ]
    if labels is not None:
        for row, label in zip(rows, labels, strict=True):
            row["labels"] = int(label)
    return rows


def _arguments(config: Any, output_dir: Path, *, epochs: int, learning_rate: float, seed: int) -> Any:
    """A linear decay after a warm-up of a tenth of the steps, weight decay 0.01 (`quiet_arguments`)."""
    return quiet_arguments(
        output_dir,
        config,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        lr_scheduler_type="linear",
        warmup_steps=0.1,  # a fraction of the steps
        weight_decay=0.01,
    )


def pretrain_encoder(
    tokenizer: Any, texts: Sequence[str], config: Any, output_dir: Path, *, seed: int = 0
) -> transformers.BertForMaskedLM:
    """A BERT of `config` trained for ``config.pretrain_epochs`` epochs of masked-language modelling on
    `texts` (15% of the tokens masked), scored by tunekit's cross-entropy."""
    torch.manual_seed(seed)
    model = transformers.BertForMaskedLM(encoder_config(tokenizer, config))
    trainer = TunekitTrainer(
        model=model,
        args=_arguments(
            config,
            output_dir,
            epochs=config.pretrain_epochs,
            learning_rate=config.pretrain_learning_rate,
            seed=seed,
        ),
        train_dataset=_rows(tokenizer, texts, None, config.max_length),
        data_collator=transformers.DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=0.15, seed=seed
        ),
        compute_loss_func=TrainerLoss("cross_entropy", task="token_classification"),
    )
    trainer.remove_callback(transformers.PrinterCallback)
    trainer.train()
    return trainer.model


def build_classifier(
    tokenizer: Any, config: Any, num_labels: int, *, pretrained: Path | None, pooling: str, seed: int
) -> PooledClassifier:
    """A `PooledClassifier` on the pre-trained encoder (or a random one when `pretrained` is None), its head
    seeded by `seed`. BERT's own pooler layer is left out: the classifier pools with `pooling`."""
    torch.manual_seed(seed)
    options = {"pooling": pooling, "dropout": config.dropout, "encoder_kwargs": {"add_pooling_layer": False}}
    if pretrained is None:
        return PooledClassifier.from_config(encoder_config(tokenizer, config), num_labels, **options)
    return PooledClassifier.from_pretrained(pretrained, num_labels, **options)


def fine_tune(
    model: PooledClassifier,
    tokenizer: Any,
    rows: Sequence[tuple[str, int]],
    *,
    objective: str,
    options: dict,
    tricks: TrainerTricks,
    config: Any,
    seed: int,
    output_dir: Path,
    on_epoch_end: Callable[[int, Callable[[Sequence[str]], torch.Tensor]], None] | None = None,
) -> Callable[[Sequence[str]], torch.Tensor]:
    """Train `model` on (text, label) `rows` for ``config.epochs`` with `objective` (a name in
    `CLASSIFICATION_LOSSES`, with `options`) and `tricks`; return ``predict(texts) -> (N, C)`` class
    probabilities of the weights to evaluate (the EMA's averages when the tricks keep one).

    ``on_epoch_end(epoch, predict)`` runs after each epoch (counted from 1) with the same ``predict``."""
    texts, labels = zip(*rows, strict=True)
    trainer = TunekitTrainer(
        model=model,
        args=_arguments(
            config, output_dir, epochs=config.epochs, learning_rate=config.learning_rate, seed=seed
        ),
        train_dataset=_rows(tokenizer, texts, labels, config.max_length),
        data_collator=transformers.DataCollatorWithPadding(tokenizer),
        compute_loss_func=TrainerLoss(objective, task="sequence_classification", **options),
        tricks=tricks,
    )
    trainer.remove_callback(transformers.PrinterCallback)

    def predict(texts: Sequence[str]) -> torch.Tensor:
        averages = (
            trainer.ema.average_parameters(trainer.model)
            if trainer.ema is not None
            else contextlib.nullcontext()
        )
        with averages:
            return predict_probabilities(trainer.model, tokenizer, texts, config)

    if on_epoch_end is not None:
        trainer.add_callback(EpochEndCallback(lambda epoch, model: on_epoch_end(epoch, predict)))
    trainer.train()
    return predict


def predict_probabilities(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], config: Any
) -> torch.Tensor:
    """(N, C) softmax probabilities of `model` for `texts`, in eval mode, batches of 256."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 256):
            batch = tokenizer(
                list(texts[start : start + 256]),
                truncation=True,
                max_length=config.max_length,
                padding=True,
                return_tensors="pt",
            )
            logits = model(
                input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device)
            ).logits
            out.append(upcast(logits).softmax(-1).cpu())
    model.train(was_training)
    return torch.cat(out)
