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

from ..hf import TrainerLoss, TunekitSeq2SeqTrainer, TunekitTrainer
from ..hf.output_layer import output_layer
from ..losses.registry import SINGLE_LABEL
from ..runs import RunFolder, RunFolderError
from ..runs.config import config_diff, config_to_dict
from ..runs.folder import free_space
from .checkpoints import STAGING, StagedCheckpoints, latest_checkpoint, set_aside
from .config import TINY_MODELS, TrainConfig
from .data import Example, check_labels, label_set, load_examples, split_off
from .encode import collator, encode
from .metrics import compute_metrics_for, metric_names, preprocess_for
from .models import AUTO_CLASSES, load_model, load_tokenizer, model_name, with_lora
from .report import METRICS_FILE, REPORT_FILE, epoch_rows, write_report

__all__ = ["TrainResult", "train"]

logger = logging.getLogger(__name__)

CHECKPOINTS, MODEL_DIR = "checkpoints", "model"
OUTPUTS = (CHECKPOINTS, MODEL_DIR, METRICS_FILE, REPORT_FILE)  # and the curves, recorded as they are drawn


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
    identity = _run_identity(config)
    folder = RunFolder(out_dir, kind="train", outputs=OUTPUTS, compare=_compare_identities)
    if main_process:  # read-only: the folder may take this run
        folder.check(identity, fresh=fresh)
        _check_model_outside(config, out_dir, fresh)
    checkpoint, broken = _checkpoint_to_resume(config, out_dir, resume, fresh)

    # every check of the data, the model and the options, before anything is written
    train_examples, eval_examples, eval_source = _data(config)
    labels = _labels(config, train_examples, eval_examples)
    per_class = "alpha" if config.objective == "focal" else "weight"  # focal's alpha, cross-entropy's weight
    values = config.objective_options.get(per_class)
    if labels and isinstance(values, list) and len(values) != len(labels):
        raise ValueError(
            f"objective_options: {per_class} has {len(values)} values for {len(labels)} labels "
            f"({', '.join(labels)}): give one per label, in label order"
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
    claim = folder.claim(identity, fresh=fresh) if main_process else contextlib.nullcontext([])
    with claim as discarded:
        if discarded:
            logger.warning("discarded the earlier run in %s (%s)", out_dir, ", ".join(discarded))
        if main_process:
            for path, reason in broken:
                aside = set_aside(path, reason)
                logger.warning("%s cannot be resumed from (%s): set aside as %s", path, reason, aside.name)
            shutil.rmtree(out_dir / CHECKPOINTS / STAGING, ignore_errors=True)  # a save that never completed
        started = time.monotonic()
        metrics = metric_names(config.task, config.problem_type)
        reporter = _Reporter(folder, config, facts, metrics, started, on_epoch, main_process)
        trainer = _trainer(
            config, out_dir, model, tokenizer, train_rows.rows, eval_rows, labels, progress, fused
        )
        trainer.add_callback(reporter)
        for callback in callbacks:
            trainer.add_callback(callback)
        with _no_shard_bars(), _checkpoint_write_errors(out_dir):
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
                with contextlib.suppress(OSError):  # an empty staging folder: every save completed
                    (out_dir / CHECKPOINTS / STAGING).rmdir()
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
        output_dir=str(out_dir / CHECKPOINTS / STAGING),  # StagedCheckpoints moves each one out when complete
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
        report_to=[],
        disable_tqdm=not progress,
        dataloader_pin_memory=torch.cuda.is_available() and not config.cpu,
    )
    options = config.objective_options
    trainer_class = TunekitSeq2SeqTrainer if seq2seq else TunekitTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_rows,
        eval_dataset=eval_rows.rows if eval_rows is not None else None,
        data_collator=collator(config.task, tokenizer, model, packing=config.packing),
        processing_class=tokenizer,
        compute_loss_func=TrainerLoss(config.objective, task=config.task, fused=fused, **options),
        compute_metrics=compute_metrics_for(config.task, config.problem_type),
        preprocess_logits_for_metrics=preprocess_for(config.task, config.problem_type),
        tricks=config.tricks,
    )
    trainer.add_callback(StagedCheckpoints(out_dir / CHECKPOINTS, keep=config.keep_checkpoints))
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
    if len(labels) < 2 and config.task == "sequence_classification" and config.problem_type == SINGLE_LABEL:
        raise ValueError(
            f"{config.train_file}: only one label ({', '.join(labels)}); classification needs two or more"
        )
    return labels


def _texts(example: Example) -> list[str]:
    text = " ".join(example.text) if isinstance(example.text, tuple) else example.text
    return [text] if example.target is None else [text, example.target]


def _checkpoint_to_resume(
    config: TrainConfig, out_dir: Path, resume: bool | None, fresh: bool
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint a resume can use, and the newer ones it cannot (with the reason)."""
    folder = out_dir / CHECKPOINTS
    if fresh:
        last, broken = None, []
    else:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        last, broken = latest_checkpoint(
            folder, world_size=world_size, ema=config.tricks.ema_decay is not None
        )
    why = "; ".join(f"{path.name}: {reason}" for path, reason in broken)
    if last is None:
        if broken:
            raise ValueError(
                f"no checkpoint in {folder} can be resumed from ({why}); start over with --fresh"
            )
        if resume:
            raise ValueError(f"nothing to resume: {folder} has no checkpoint")
        return None, []
    if resume is False:
        raise ValueError(
            f"{out_dir} has checkpoints of an earlier run: resume it, or start over with --fresh"
        )
    return last, broken


def _compare_identities(saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple]:
    """The options that differ, and the data files whose contents differ (shown by a short fingerprint)."""
    changes = config_diff(TrainConfig, saved, new)
    for key in [key for key in changes if key.endswith("_sha256")]:
        old, now = changes.pop(key)
        changes[f"{key.removesuffix('_sha256')} contents"] = (f"sha256 {old[:12]}", f"sha256 {now[:12]}")
    return changes


def _check_model_outside(config: TrainConfig, out_dir: Path, fresh: bool) -> None:
    """--fresh must not discard the model the run starts from."""
    if not fresh or config.model is None:
        return
    model = Path(config.model).expanduser()
    if model.exists() and model.resolve().is_relative_to(out_dir.resolve()):
        raise RunFolderError(
            f"--model {config.model} lies inside --out {out_dir}, which --fresh would discard; copy the "
            "model elsewhere or choose another --out"
        )


def _run_identity(config: TrainConfig) -> dict[str, Any]:
    """The options and a fingerprint of each data file: what a resumed run must share with the first one."""
    identity = config_to_dict(config)
    for name in ("train_file", "eval_file"):
        path = getattr(config, name)
        if path is not None and Path(path).is_file():
            identity[f"{name}_sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return identity


@contextlib.contextmanager
def _checkpoint_write_errors(out_dir: Path) -> Iterator[None]:
    """torch's checkpoint writer says only "file write failed" (a full disk, mostly): one line naming the
    folder and its free space. (OSErrors are the run folder's: `tunekit.runs.folder.write_errors`.)"""
    try:
        yield
    except RuntimeError as error:
        if "PytorchStreamWriter failed" not in str(error) and "file write failed" not in str(error):
            raise
        staging = out_dir / CHECKPOINTS / STAGING
        raise RunFolderError(
            f"cannot write a checkpoint into {staging}: torch's writer failed ({free_space(staging)} free "
            "there; a full disk is the usual cause); free some space and run the same command again"
        ) from error


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
    options = config.objective_options
    if not options:
        return f"{config.objective} (default options)"
    return config.objective + " (" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"


def _describe_tricks(config: TrainConfig) -> str:
    t = config.tricks
    tricks = []
    if t.ema_decay is not None:
        kept = "evaluated and saved" if t.ema_evaluate and t.ema_save else "kept"
        tricks.append(f"EMA (decay {t.ema_decay}; {kept} with the averages)")
    if t.adversarial == "fgm":
        tricks.append(f"FGM (epsilon {t.adversarial_epsilon})")
    if t.adversarial == "pgd":
        tricks.append(f"PGD (epsilon {t.adversarial_epsilon}, {t.pgd_steps} steps of {t.pgd_step_size})")
    if t.rdrop_weight > 0:
        tricks.append(f"R-Drop (weight {t.rdrop_weight})")
    if t.layer_decay is not None:
        tricks.append(f"layer-wise LR decay {t.layer_decay}")
    if t.badam:
        tricks.append(f"BAdam (one layer at a time, {t.switch_every} steps each, {t.block_order} order)")
    return ", ".join(tricks)


# ---------------------------------------------------------------------------------------------------------
# callbacks


class _Reporter(transformers.TrainerCallback):
    """Rewrites the report after every epoch's checkpoint (so a resumed run's report never runs ahead of its
    checkpoints) and hands the epoch's row to ``on_epoch``."""

    def __init__(self, folder, config, facts, metric_names, started, on_epoch, main_process) -> None:
        self.folder, self.config, self.facts = folder, config, facts
        self.metric_names, self.started, self.on_epoch = metric_names, started, on_epoch
        self.main_process = main_process

    def write(self, epochs: Sequence[Mapping[str, float]], *, complete: bool) -> None:
        written = write_report(
            self.folder.path,
            config=self.config,
            facts=self.facts,
            epochs=epochs,
            metric_names=self.metric_names,
            complete=complete,
            seconds=time.monotonic() - self.started,
        )
        self.folder.record(*written)

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
