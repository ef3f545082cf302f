"""`TrainConfig`: every option of ``tunekit train``, typed, from defaults < a YAML file < flags.

Built with `tunekit.runs.config`: each field is a ``--flag-name`` (``add_config_arguments``) and a key
of the YAML file; an unknown field, a value of the wrong type or a choice not offered is a ValueError that
names the field, and so is a float that is NaN or infinite (`validate_config`).

Nothing here re-lists what another layer owns: the tasks, problem types and the objectives that fit them come
from `tunekit.losses.registry`; the objective's options are its module's keyword arguments
(``--objective-options "gamma: 2"``), checked by the module itself; the tricks are the fields of
`tunekit.hf.TrainerTricks`, one flag each, checked by the tricks themselves. `TrainConfig.validate` adds the
checks between fields, a precision the device honours, and model / tokenizer folders that hold one: all
before any data is read or anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..hf.trainer_tricks import TrainerTricks
from ..losses.registry import (
    GENERATION_TASKS,
    PROBLEM_TYPES,
    SINGLE_LABEL,
    TASKS,
    find_objective,
    objectives_for,
)
from ..runs.config import check_at_least, group, option

__all__ = ["TINY_MODELS", "TrainConfig", "check_folders", "default_model"]

TINY_MODELS: dict[str, tuple[str, ...]] = {
    "tiny-bert": ("sequence_classification", "token_classification"),
    "tiny-gpt2": ("causal_lm",),
    "tiny-llama": ("causal_lm",),
    "tiny-t5": ("seq2seq",),
}
"""Named tiny architectures (random weights from a config) and the tasks each can do."""

# the smallest vocab_size of the tokenizer trained for a tiny architecture: below it the vocabulary cannot
# hold what it starts from. A byte-level BPE (tiny-gpt2, tiny-llama, tiny-t5) starts from its initial
# alphabet, the 256 byte symbols, and its 2 specials (<pad>, <eos>). tiny-bert's WordPiece starts from its 5
# specials and every character of the texts, alone and as a ## continuation: that depends on the texts
# (`train_tokenizer` checks them), so the floor here is where the lower-cased ASCII letters and digits (36)
# fit, 5 + 2 x 36
BPE_MIN_VOCAB_SIZE = 256 + 2
WORDPIECE_MIN_VOCAB_SIZE = 5 + 2 * 36
_BPE = (BPE_MIN_VOCAB_SIZE, "a byte-level BPE: 256 byte symbols and 2 specials")
MIN_VOCAB_SIZES: dict[str, tuple[int, str]] = {
    "tiny-bert": (
        WORDPIECE_MIN_VOCAB_SIZE,
        "a WordPiece: 5 specials, and the lower-cased letters and digits alone and as ## continuations",
    ),
    "tiny-gpt2": _BPE,
    "tiny-llama": _BPE,
    "tiny-t5": _BPE,
}


# the objectives that fit each task, for --help (the registry decides)
_OBJECTIVES = "; ".join(
    f"{task}: {', '.join(objectives_for(task))}" for task in TASKS if task != "sequence_classification"
) + "".join(
    f"; {kind}: {', '.join(objectives_for('sequence_classification', kind))}" for kind in PROBLEM_TYPES
)


@dataclass
class TrainConfig:
    """What ``tunekit train`` fine-tunes, on which data, with which objective and tricks."""

    # ---- task and data ----
    train_file: Path = field(
        metadata={"help": "training data: a .jsonl / .csv file or a `datasets` folder (save_to_disk)"}
    )
    task: Literal[TASKS] = option("sequence_classification", "what to train")
    eval_file: Path | None = option(
        None, "evaluation data in the same format; none: hold out --eval-fraction of the training data"
    )
    eval_fraction: float = option(0.1, "share of the training data held out when there is no eval file")
    text_field: str = option(
        "text", "the input field: a text, or for token classification its words (a list or a spaced string)"
    )
    label_field: str = option(
        "label",
        "the class (sequence classification; a list of classes for multi_label_classification, a number for "
        "regression) or the tags, one per word (token classification)",
    )
    problem_type: Literal[PROBLEM_TYPES] = option(
        SINGLE_LABEL,
        "sequence classification: single_label_classification (one class per example), "
        "multi_label_classification (a list of classes per example) or regression (a number per example)",
    )
    label_separator: str = option(
        "|", "multi_label_classification: what separates the classes in a text label (CSV)"
    )
    target_field: str | None = option(
        "target", "the output text of generation; for causal_lm `none` trains on the whole text"
    )
    labels: tuple[str, ...] = option(
        (),
        "the label set, in order; empty: the sorted labels of the training data, integers in numeric order "
        "(not for regression)",
    )

    # ---- model ----
    model: str | None = option(
        None,
        "a local Hugging Face model folder, or tiny-bert / tiny-gpt2 / tiny-llama / tiny-t5 (random weights; "
        "none: tiny-bert for classification, tiny-gpt2 for causal_lm, tiny-t5 for seq2seq)",
    )
    tokenizer: Path | None = option(
        None, "a tokenizer folder; none: the model folder's, or one trained on the training texts"
    )
    vocab_size: int = option(2000, "vocabulary of a tokenizer trained on the training texts")
    tiny_hidden_size: int = option(64, "hidden size of a tiny architecture")
    tiny_layers: int = option(2, "layers of a tiny architecture")
    tiny_heads: int = option(2, "attention heads of a tiny architecture")
    max_length: int = option(128, "tokens per example (inputs and targets are cut there)")
    lora_r: int | None = option(
        None, "train LoRA adapters (PEFT) of this rank instead of every weight; none: full fine-tuning"
    )
    lora_alpha: float | None = option(None, "LoRA's scaling numerator (alpha / r); none: 2 x lora_r")
    lora_targets: tuple[str, ...] = option(
        (), "the modules LoRA adapts, e.g. q_proj,v_proj; empty: PEFT's default for the architecture"
    )

    # ---- optimisation ----
    epochs: int = option(3, "training epochs")
    batch_size: int = option(16, "examples per device and step")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(5e-5, "peak learning rate")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = option(
        "linear", "learning-rate schedule"
    )
    warmup_steps: int = option(0, "optimizer steps of linear warm-up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: none)")
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "training precision (bf16 / fp16 need a GPU)")
    cpu: bool = option(False, "train on the CPU even when a GPU is available", changes_results=False)
    fused: bool = option(
        True,
        "causal_lm / seq2seq: score the last hidden states with the objective's fused-linear form, never "
        "the (tokens x vocabulary) logits, where the model allows it (--no-fused: through the logits)",
    )
    packing: bool = option(
        False,
        "causal_lm: the examples of a batch in one row without padding, position ids restarting at 0 "
        "for each example (transformers' DataCollatorWithFlattening)",
    )
    seed: int = option(0, "random seed (model init, data order, dropout)")

    # ---- objective and tricks ----
    objective: str = option("cross_entropy", "training objective (tunekit.losses.registry): " + _OBJECTIVES)
    objective_options: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "the objective module's keyword options, e.g. 'gamma: 2, alpha: [1, 3]' for focal"},
    )
    tricks: TrainerTricks = group(TrainerTricks, "tricks (tunekit.hf.TrainerTricks)")

    # ---- checkpoints ----
    keep_checkpoints: int | None = option(2, "epoch checkpoints kept (none: all)", changes_results=False)

    def validate(self) -> None:
        self._validate_problem_type()
        if self.model in TINY_MODELS and self.task not in TINY_MODELS[self.model]:
            raise ValueError(
                f"model {self.model} cannot do task {self.task}; it does "
                + ", ".join(TINY_MODELS[self.model])
            )
        if self.task == "seq2seq" and self.target_field is None:
            raise ValueError("target_field is required for seq2seq (the output text)")
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        check_at_least(
            self,
            (
                "epochs",
                "batch_size",
                "gradient_accumulation_steps",
                "tiny_hidden_size",
                "tiny_layers",
                "tiny_heads",
            ),
        )
        # a causal LM learns from a position predicting the next one: one token teaches nothing (`encode`
        # checks max_length against the tokenizer's own special tokens)
        check_at_least(self, ("max_length",), minimum=2)
        check_at_least(self, ("warmup_steps",), minimum=0)
        if self.tiny_hidden_size % self.tiny_heads:
            raise ValueError(
                f"tiny_hidden_size ({self.tiny_hidden_size}) must be a multiple of "
                f"tiny_heads ({self.tiny_heads})"
            )
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.max_grad_norm < 0:  # the Trainer clips only above 0: a negative norm would turn clipping off
            raise ValueError(f"max_grad_norm must be >= 0 (0: no clipping), got {self.max_grad_norm}")
        if not 0 <= self.seed < 2**32:  # numpy's seed range (the Trainer seeds numpy too)
            raise ValueError(f"seed must be in [0, 2**32), got {self.seed}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels has duplicates: {list(self.labels)}")
        self._validate_lora()
        if self.packing and self.task != "causal_lm":
            raise ValueError(f"packing is for task causal_lm, not {self.task}")
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be >= 1 or none, got {self.keep_checkpoints}")
        self._validate_vocab_size()
        self._validate_objective_and_tricks()
        self._validate_precision()
        check_folders(self)

    def _validate_vocab_size(self) -> None:
        check_at_least(self, ("vocab_size",))
        name = default_model(self.task) if self.model is None else self.model
        if self.tokenizer is not None or name not in MIN_VOCAB_SIZES:
            return  # no tokenizer is trained: the vocabulary is the tokenizer's own
        minimum, start = MIN_VOCAB_SIZES[name]
        if self.vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be >= {minimum} for the tokenizer trained for {name} ({start}), "
                f"got {self.vocab_size}"
            )

    def _validate_objective_and_tricks(self) -> None:
        """The objective fits the task (`find_objective`), takes these options, and builds as training will
        build it (its own checks); the tricks checked themselves when `TrainerTricks` was made."""
        from ..hf import TrainerLoss

        find_objective(self.objective, self.task, self.problem_type)
        try:
            TrainerLoss(self.objective, task=self.task, **self.objective_options)
        except ValueError as error:
            raise ValueError(f"objective_options: {error}") from None
        if self.problem_type != SINGLE_LABEL and self.tricks.rdrop_weight > 0:
            raise ValueError(
                f"rdrop_weight applies to single-label classification (a softmax KL), not problem_type "
                f"{self.problem_type}"
            )

    def _validate_precision(self) -> None:
        """bf16 / fp16 only where the Trainer honours them: refused here, before anything is written."""
        if self.precision == "fp32":
            return
        from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

        # the Trainer's own condition for bf16 (TrainingArguments raises it, but only once the run has begun)
        if self.precision == "bf16" and not (
            self.cpu or is_torch_bf16_gpu_available() or is_torch_xla_available()
        ):
            raise ValueError(
                "precision bf16 needs a GPU that supports it (CUDA: Ampere or newer), and there is none; "
                "add --cpu to train in bf16 on the CPU, or use --precision fp32"
            )
        # on the CPU the Trainer (accelerate) has no fp16 autocast: it would train in fp32 and say fp16
        if self.precision == "fp16" and (self.cpu or not _accelerator_available()):
            where = "--cpu trains on the CPU" if self.cpu else "there is none"
            raise ValueError(
                f"precision fp16 needs a GPU, and {where} (on the CPU the Trainer has no fp16: it would "
                "train in fp32); use --precision fp32, or bf16 with --cpu"
            )

    def _validate_lora(self) -> None:
        if self.lora_r is None:
            for name in ("lora_alpha", "lora_targets"):
                if getattr(self, name):
                    raise ValueError(f"{name} is an option of LoRA: set lora_r too")
            return
        check_at_least(self, ("lora_r",))
        if self.lora_alpha is not None and self.lora_alpha <= 0:
            raise ValueError(f"lora_alpha must be > 0, got {self.lora_alpha}")

    def _validate_problem_type(self) -> None:
        if self.problem_type != SINGLE_LABEL and self.task != "sequence_classification":
            raise ValueError(
                f"problem_type {self.problem_type} is for task sequence_classification, not {self.task}"
            )
        if self.problem_type == "regression" and self.labels:
            raise ValueError(
                f"labels {list(self.labels)} are for classification, not problem_type regression"
            )
        if not self.label_separator:
            raise ValueError("label_separator must not be empty")

    @property
    def generation(self) -> bool:
        return self.task in GENERATION_TASKS


def _accelerator_available() -> bool:
    """Whether the Trainer would train on a device other than the CPU (without ``--cpu``)."""
    import os

    import torch
    from transformers.utils import is_torch_xla_available

    if os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes", "on"):
        return False
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6: CUDA, MPS, XPU and the others
    if accelerator is not None and accelerator.is_available():
        return True
    return torch.cuda.is_available() or torch.backends.mps.is_available() or is_torch_xla_available()


def check_folders(config: TrainConfig) -> None:
    """ValueError unless the config's model folder holds a model (and a tokenizer, without ``--tokenizer``)
    and its tokenizer folder a tokenizer: checked before anything is read or written (the loaders' own
    errors speak of sentencepiece and tiktoken)."""
    from ..workbench.folders import check_model_folder, check_tokenizer_folder

    if config.model is not None and config.model not in TINY_MODELS:
        hint = f", nor one of the tiny architectures ({', '.join(TINY_MODELS)})"
        check_model_folder(Path(config.model), option="model", not_a_folder_hint=hint)
        if config.tokenizer is None:
            check_tokenizer_folder(Path(config.model), option="model", hint="pass --tokenizer FOLDER")
    if config.tokenizer is not None:
        check_tokenizer_folder(Path(config.tokenizer), option="tokenizer")


def default_model(task: str) -> str:
    """The tiny architecture a task trains when no model is given."""
    return next(name for name, tasks in TINY_MODELS.items() if task in tasks)
