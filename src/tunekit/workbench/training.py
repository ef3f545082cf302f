"""What an application that trains through the Hugging Face Trainer adds around it: transformers kept
quiet inside the application's own progress output, the arguments of a run that saves and logs nothing, and
a function run at each epoch's end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers

__all__ = ["EpochEndCallback", "quiet_arguments", "quiet_transformers"]


def quiet_transformers() -> None:
    """No download / loading bars or advice from transformers inside the application's own progress bars."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def quiet_arguments(
    output_dir: Path, config: Any, *, epochs: int, learning_rate: float, seed: int, **options: Any
) -> transformers.TrainingArguments:
    """``TrainingArguments`` of a run in memory: torch's AdamW at `learning_rate` for `epochs`,
    ``config.batch_size`` examples per batch, the CPU when ``config.device`` is ``"cpu"``, `seed` for the
    weights and the data order alike, and nothing saved, logged, reported or drawn as a progress bar;
    `options` are the rest (the schedule, weight decay, the sampling)."""
    return transformers.TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=epochs,
        learning_rate=learning_rate,
        optim="adamw_torch",
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=config.device == "cpu",
        seed=seed,
        data_seed=seed,
        **options,
    )


class EpochEndCallback(transformers.TrainerCallback):
    """Calls ``function(epoch, model)`` after each training epoch (epochs counted from 1), with the model in
    eval mode under ``torch.no_grad()``; the model's train / eval mode is restored afterwards, so an
    evaluation in the middle of training changes nothing that training sees."""

    def __init__(self, function: Callable[[int, torch.nn.Module], None]) -> None:
        self.function = function

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.function(round(state.epoch), model)
        model.train(was_training)
