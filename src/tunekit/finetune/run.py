"""`train`: fine-tune a model on the user's data with a tunekit objective and tricks, through
`TunekitTrainer` / `TunekitSeq2SeqTrainer` (so ``torchrun`` / ``accelerate launch`` runs work unchanged).

The output folder holds::

    config.json          the options of the run (a resumed run must have the same)
    checkpoints/         a checkpoint per epoch (model, optimizer, scheduler, RNG, EMA state)
    model/               the final model and tokenizer (save_pretrained; LoRA adapters merged in)
    metrics.json, report.md, loss.png, <metric>.png    rewritten after every epoch

A run whose folder has checkpoints resumes from the last one (the Trainer's ``resume_from_checkpoint``:
the same final weights as an uninterrupted run); `fresh` starts over.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers.trainer_utils import get_last_checkpoint

from ..experiments.config import config_diff, config_to_dict
from ..experiments.report import write_json
from ..hf import TrainerLoss, TrainerTricks, TunekitSeq2SeqTrainer, TunekitTrainer
from ..hf.output_layer import output_layer
from .config import TINY_MODELS, TrainConfig, objective_options
from .data import Example, check_labels, label_set, load_examples, split_off
from .encode import collator, encode
from .metrics import compute_metrics_for, metric_names, preprocess_for
from .models import AUTO_CLASSES, load_model, load_tokenizer, model_name, with_lora
from .report import METRICS_FILE, REPORT_FILE, epoch_rows, write_report

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)

CONFIG_FILE, CHECKPOINTS, MODEL_DIR = "config.json", "checkpoints", "model"


@dataclass
class TrainResult:
    """What `train` made: the per-epoch metrics and where the model and the report are."""

    out_dir: Path
    model_dir: Path
    epochs: list[dict[str, float]]
    resumed_from: Path | None

    @property
    def report(self) -> Path:
        return self.out_dir / REPORT_FILE


def train(
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool | None = None,
    fresh: bool = False,
    progress: bool = True,
    on_epoch: Callable[[Mapping[str, float]], None] | None = None,
    callbacks: Sequence[transformers.TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune as `config` says, writing into `out_dir` (see the module docstring).

    Args:
        resume: True to require a checkpoint to resume from, False to refuse to resume (an error when the
            folder has checkpoints), None to resume when there are checkpoints.
        fresh: delete what an earlier run wrote in `out_dir` (checkpoints, model, report) first.
        progress: the Trainer's progress bars.
        on_epoch: called (on the main process) with each finished epoch's row of metrics.
        callbacks: more Trainer callbacks.

    Raises ValueError for bad data (naming the file and line), a model or tokenizer that cannot be loaded,
    and a folder whose checkpoints were made with other options.
    """
    out_dir = Path(out_dir)
    main_process = _is_main_process()
    if fresh and main_process:
        _clear(out_dir)
    checkpoint = _checkpoint_to_resume(config, out_dir, resume, fresh)

    train_examples, eval_examples, eval_source = _data(config)
    labels = _labels(config, train_examples, eval_examples)
    options = objective_options(config)
    if "alpha" in options and len(options["alpha"]) != len(labels):
        raise ValueError(
            f"focal_alpha has {len(options['alpha'])} values for {len(labels)} labels ({', '.join(labels)}): "
            "give one per label, in label order"
        )
    texts = [t for e in train_examples for t in _texts(e)]
    tokenizer = load_tokenizer(config, texts, checkpoint)
    model = load_model(config, tokenizer, labels)
    if config.lora_r is not None:
        model = with_lora(model, config)
    fused, loss_path = _loss_path(config, model)
    label2id = {label: i for i, label in enumerate(labels)}
    train_rows = encode(train_examples, tokenizer, config.task, label2id, config.max_length)
    eval_rows = (
        encode(eval_examples, tokenizer, config.task, label2id, config.max_length) if eval_examples else None
    )

    facts = {
        "task": config.task,
        "problem_type": config.problem_type if config.task == "sequence_classification" else None,
        "model": model_name(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "lora": config.lora_r is not None,
        "loss_path": loss_path,
        "tokenizer": str(config.tokenizer) if config.tokenizer else _tokenizer_source(config),
        "train_examples": len(train_examples),
        "eval_examples": len(eval_examples),
        "eval_source": eval_source,
        "labels": list(labels),
        "truncated": train_rows.truncated + (eval_rows.truncated if eval_rows else 0),
        "unsupervised": train_rows.unsupervised + (eval_rows.unsupervised if eval_rows else 0),
        "objective": _describe_objective(config),
        "tricks": _describe_tricks(config),
        "model_dir": str(out_dir / MODEL_DIR),
        "auto_class": AUTO_CLASSES[config.task].__name__,
        "resumed_from": str(checkpoint) if checkpoint else None,
    }
    if main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / CONFIG_FILE, _run_identity(config))

    started = time.monotonic()
    metrics = metric_names(config.task, config.problem_type)
    reporter = _Reporter(out_dir, config, facts, metrics, started, on_epoch, main_process)
    trainer = _trainer(config, out_dir, model, tokenizer, train_rows.rows, eval_rows, labels, progress, fused)
    trainer.add_callback(reporter)
    for callback in callbacks:
        trainer.add_callback(callback)
    with _no_shard_bars():
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        model_dir = out_dir / MODEL_DIR
        epochs = epoch_rows(trainer.state.log_history)
        finished = trainer.state.global_step >= trainer.state.max_steps
        if finished:
            _save_model(trainer, model_dir, main_process)
            if main_process:
                tokenizer.save_pretrained(str(model_dir))
    if main_process:
        reporter.write(epochs, complete=finished)
    return TrainResult(out_dir, model_dir, epochs, checkpoint)


# ---------------------------------------------------------------------------------------------------------
# set-up


def _trainer(
    config: TrainConfig,
    out_dir: Path,
    model: transformers.PreTrainedModel,
    tokenizer: Any,
    train_rows: list[dict],
    eval_rows: Any,
    labels: Sequence[str],
    progress: bool,
    fused: bool,
) -> transformers.Trainer:
    seq2seq = config.task == "seq2seq"
    args_class = transformers.Seq2SeqTrainingArguments if seq2seq else transformers.TrainingArguments
    evaluate = "epoch" if eval_rows is not None else "no"
    args = args_class(
        output_dir=str(out_dir / CHECKPOINTS),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim="adamw_torch",
        bf16=config.precision == "bf16",
        fp16=config.precision == "fp16",
        use_cpu=config.cpu,
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy=evaluate,
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=config.keep_checkpoints,
        report_to=[],
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available() and not config.cpu,
    )
    tricks = TrainerTricks(
        ema_decay=config.ema_decay,
        adversarial=None if config.adversarial == "none" else config.adversarial,
        adversarial_epsilon=config.adversarial_epsilon,
        pgd_alpha=config.pgd_alpha,
        pgd_steps=config.pgd_steps,
        rdrop_alpha=config.rdrop_alpha,
        layer_decay=config.layer_decay,
        head_lr=config.head_lr,
    )
    options = objective_options(config)
    trainer_class = TunekitSeq2SeqTrainer if seq2seq else TunekitTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows.rows if eval_rows is not None else None,
        data_collator=collator(config.task, tokenizer, model, packing=config.packing),
        processing_class=tokenizer,
        compute_loss_func=TrainerLoss(config.objective, task=config.task, fused=fused, **options),
        compute_metrics=compute_metrics_for(config.task, len(labels), config.problem_type),
        preprocess_logits_for_metrics=preprocess_for(config.task, config.problem_type),
        tricks=tricks,
    )
    # the bars stay, the raw log dicts go: the caller gets each epoch's row through on_epoch
    trainer.remove_callback(transformers.PrinterCallback)
    if progress:
        trainer.remove_callback(transformers.ProgressCallback)
        trainer.add_callback(_QuietProgress())
    return trainer


def _loss_path(config: TrainConfig, model: Any) -> tuple[bool, str]:
    """Whether the loss takes the fused path, and how the report says which path ran."""
    if not config.generation:
        return False, "logits (a classification head: its logits are small)"
    if not config.fused:
        return False, "logits (--no-fused)"
    try:
        output_layer(model)
    except ValueError as error:
        return False, f"logits: the fused path does not apply to this model ({error})"
    return True, (
        f"fused: the last hidden states and the output layer's weight into linear_{config.objective}"
        f"{'_loss' if config.objective != 'cross_entropy' else ''}, no (tokens x vocabulary) logits"
    )


def _save_model(trainer: transformers.Trainer, model_dir: Path, main_process: bool) -> None:
    """The final model (EMA averages when ema_decay is set), LoRA adapters merged into a copy of it, so that
    the folder loads with transformers alone."""
    model = trainer.model
    if not hasattr(model, "merge_and_unload"):
        trainer.save_model(str(model_dir))
        return
    with trainer.averaged_weights(trainer.tricks.ema_save):
        merged = copy.deepcopy(model).merge_and_unload()
    if main_process:
        merged.save_pretrained(str(model_dir))


def _data(config: TrainConfig) -> tuple[list[Example], list[Example], str]:
    examples = load_examples(Path(config.train_file), config)
    if config.eval_file is not None:
        return examples, load_examples(Path(config.eval_file), config), str(config.eval_file)
    train_examples, held_out = split_off(examples, config.eval_fraction, config.seed)
    source = f"{config.train_file} (a random {config.eval_fraction:g} held out)" if held_out else "none"
    return train_examples, held_out, source


def _labels(config: TrainConfig, train: Sequence[Example], evaluation: Sequence[Example]) -> tuple[str, ...]:
    if config.generation or config.problem_type == "regression":
        return ()
    labels = label_set(train, config.labels)
    source = "the label set given by --labels" if config.labels else "the labels of the training data"
    check_labels(evaluation, labels, source)
    if not labels:
        raise ValueError(f"{config.train_file}: no example has a label; multi_label needs one or more")
    # one class is a valid multi-label head (one yes/no decision), not a single-label one
    if len(labels) < 2 and config.task == "sequence_classification" and config.problem_type == "single_label":
        raise ValueError(
            f"{config.train_file}: only one label ({', '.join(labels)}); classification needs two or more"
        )
    return labels


def _texts(example: Example) -> list[str]:
    text = " ".join(example.text) if isinstance(example.text, tuple) else example.text
    return [text] if example.target is None else [text, example.target]


def _checkpoint_to_resume(
    config: TrainConfig, out_dir: Path, resume: bool | None, fresh: bool
) -> Path | None:
    folder = out_dir / CHECKPOINTS
    last = None if fresh or not folder.is_dir() else get_last_checkpoint(str(folder))
    if last is None:
        if resume:
            raise ValueError(f"nothing to resume: {folder} has no checkpoint")
        return None
    if resume is False:
        raise ValueError(
            f"{out_dir} has checkpoints of an earlier run: resume it, or start over with --fresh"
        )
    saved = out_dir / CONFIG_FILE
    if saved.is_file():
        changed = config_diff(TrainConfig, json.loads(saved.read_text()), _run_identity(config))
        if changed:
            shown = ", ".join(f"{name} {old!r} -> {new!r}" for name, (old, new) in changed.items())
            raise ValueError(
                f"{out_dir} has checkpoints of a run with other options ({shown}); resume with the same "
                "options, or use --fresh or another --out"
            )
    return Path(last)


def _run_identity(config: TrainConfig) -> dict[str, Any]:
    """The options and a fingerprint of each data file: what a resumed run must share with the first one."""
    identity = config_to_dict(config)
    for name in ("train_file", "eval_file"):
        path = getattr(config, name)
        if path is not None and Path(path).is_file():
            identity[f"{name}_sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return identity


def _clear(out_dir: Path) -> None:
    """Remove what a run writes (and nothing else the folder may hold)."""
    for name in (CHECKPOINTS, MODEL_DIR):
        shutil.rmtree(out_dir / name, ignore_errors=True)
    for name in (CONFIG_FILE, METRICS_FILE, REPORT_FILE):
        (out_dir / name).unlink(missing_ok=True)
    for png in out_dir.glob("*.png"):
        png.unlink()


@contextlib.contextmanager
def _no_shard_bars() -> Iterator[None]:
    """No bar from transformers for writing each checkpoint's shards between the Trainer's own bars."""
    was_enabled = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers.utils.logging.enable_progress_bar()


def _is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch (before the Trainer sets up the process group)."""
    return int(os.environ.get("RANK", "0")) == 0


def _tokenizer_source(config: TrainConfig) -> str:
    name = model_name(config)
    if name in TINY_MODELS:
        return f"trained on the training texts (vocabulary {config.vocab_size})"
    return f"the model folder's ({name})"


def _describe_objective(config: TrainConfig) -> str:
    options = objective_options(config)
    if not options:
        return f"{config.objective} (default options)"
    return config.objective + " (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"


def _describe_tricks(config: TrainConfig) -> str:
    tricks = []
    if config.ema_decay is not None:
        tricks.append(f"EMA (decay {config.ema_decay}; evaluated and saved with the averages)")
    if config.adversarial == "fgm":
        tricks.append(f"FGM (epsilon {config.adversarial_epsilon})")
    if config.adversarial == "pgd":
        tricks.append(
            f"PGD (epsilon {config.adversarial_epsilon}, {config.pgd_steps} steps of {config.pgd_alpha})"
        )
    if config.rdrop_alpha > 0:
        tricks.append(f"R-Drop (alpha {config.rdrop_alpha})")
    if config.layer_decay is not None:
        tricks.append(f"layer-wise LR decay {config.layer_decay}")
    return ", ".join(tricks)


# ---------------------------------------------------------------------------------------------------------
# callbacks


class _Reporter(transformers.TrainerCallback):
    """Rewrites the report after every epoch's checkpoint (so a resumed run's report never runs ahead of its
    checkpoints) and hands the epoch's row to ``on_epoch``."""

    def __init__(self, out_dir, config, facts, metric_names, started, on_epoch, main_process) -> None:
        self.out_dir, self.config, self.facts = out_dir, config, facts
        self.metric_names, self.started, self.on_epoch = metric_names, started, on_epoch
        self.main_process = main_process

    def write(self, epochs: Sequence[Mapping[str, float]], *, complete: bool) -> None:
        write_report(
            self.out_dir,
            config=self.config,
            facts=self.facts,
            epochs=epochs,
            metric_names=self.metric_names,
            complete=complete,
            seconds=time.monotonic() - self.started,
        )

    def on_save(self, args, state, control, **kwargs):
        if not self.main_process:
            return
        epochs = epoch_rows(state.log_history)
        self.write(epochs, complete=False)
        if self.on_epoch is not None and epochs:
            self.on_epoch(epochs[-1])


class _QuietProgress(transformers.ProgressCallback):
    """The Trainer's progress bars without the dict it prints at every log."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        pass
