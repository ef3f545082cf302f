"""`TrainConfig`: every option of ``tunekit train``, typed, from defaults < a YAML file < flags.

Built with `tunekit.runs.config`: each field is a ``--flag-name`` (``add_config_arguments``) and a key
of the YAML file; an unknown field, a value of the wrong type or a choice not offered is a ValueError that
names the field, and so is a float that is NaN or infinite (`validate_config`). `TrainConfig.validate` adds
each option's range, the checks between fields (an objective the task cannot use, an objective option set for
another objective, an objective of another problem type), the objective's and the tricks' own checks, a
precision the device honours, and model / tokenizer folders that hold one: all before any data is read or
anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..losses import CLASSIFICATION_LOSSES
from ..runs.config import check_at_least, option

__all__ = [
    "OBJECTIVES_BY_TASK",
    "OBJECTIVE_OPTIONS",
    "PROBLEM_TYPES",
    "TASKS",
    "TINY_MODELS",
    "TrainConfig",
    "check_folders",
    "default_model",
    "objective_options",
    "objectives_for",
]

Task = Literal["sequence_classification", "token_classification", "causal_lm", "seq2seq"]
TASKS: tuple[str, ...] = ("sequence_classification", "token_classification", "causal_lm", "seq2seq")

# named tiny architectures (random weights from a config) and the tasks each can do
TINY_MODELS: dict[str, tuple[str, ...]] = {
    "tiny-bert": ("sequence_classification", "token_classification"),
    "tiny-gpt2": ("causal_lm",),
    "tiny-llama": ("causal_lm",),
    "tiny-t5": ("seq2seq",),
}

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

# the problem types of a sequence classifier (``--problem-type``) -> Hugging Face's ``config.problem_type``,
# the key of each objective in `CLASSIFICATION_LOSSES`
ProblemType = Literal["single_label", "multi_label", "regression"]
PROBLEM_TYPES: dict[str, str] = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def objectives_for(problem_type: str) -> tuple[str, ...]:
    """The objectives of `CLASSIFICATION_LOSSES` that score a head of `problem_type` (a key of
    `PROBLEM_TYPES`), in registry order."""
    hf_name = PROBLEM_TYPES[problem_type]
    return tuple(name for name, spec in CLASSIFICATION_LOSSES.items() if spec.problem_type == hf_name)


# the objectives `TrainerLoss` can apply per task; a sequence classifier's are further split by problem type
# (`objectives_for`), a token classifier has one class per token (single-label objectives only)
OBJECTIVES_BY_TASK: dict[str, tuple[str, ...]] = {
    "sequence_classification": tuple(CLASSIFICATION_LOSSES),
    "token_classification": objectives_for("single_label"),
    "causal_lm": ("cross_entropy", "dece", "gce", "smile"),
    "seq2seq": ("cross_entropy", "dece", "gce", "smile"),
}

# config field -> (the objectives that take it, the objective's keyword)
OBJECTIVE_OPTIONS: dict[str, tuple[tuple[str, ...], str]] = {
    "label_smoothing": (("cross_entropy", "dece"), "label_smoothing"),
    "focal_gamma": (("focal", "binary_focal"), "gamma"),
    "focal_alpha": (("focal",), "alpha"),
    "dece_alpha_base": (("dece",), "alpha_base"),
    "gce_q": (("gce",), "q"),
    "smile_subset": (("smile",), "subset"),
    "smile_first_token_mle": (("smile",), "first_token_mle"),
    "dice_self_adjusting": (("dice", "multilabel_dice"), "self_adjusting"),
    "mse_corr_weight": (("mse_corr",), "corr_weight"),
}


@dataclass
class TrainConfig:
    """What ``tunekit train`` fine-tunes, on which data, with which objective and tricks."""

    # ---- task and data ----
    train_file: Path = field(
        metadata={"help": "training data: a .jsonl / .csv file or a `datasets` folder (save_to_disk)"}
    )
    task: Task = option("sequence_classification", "what to train")
    eval_file: Path | None = option(
        None, "evaluation data in the same format; none: hold out --eval-fraction of the training data"
    )
    eval_fraction: float = option(0.1, "share of the training data held out when there is no eval file")
    text_field: str = option(
        "text", "the input field: a text, or for token classification its words (a list or a spaced string)"
    )
    label_field: str = option(
        "label",
        "the class (sequence classification; a list of classes for multi_label, a number for regression) or "
        "the tags, one per word (token classification)",
    )
    problem_type: ProblemType = option(
        "single_label",
        "sequence classification: single_label (one class per example), multi_label (a list of classes "
        "per example) or regression (a number per example)",
    )
    label_separator: str = option("|", "multi_label: what separates the classes in a text label (CSV)")
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
    optimizer: Literal["adamw", "badam"] = option(
        "adamw",
        "adamw: every weight at every step; badam: one transformer layer at a time (BAdam: AdamW on the "
        "active layer, the embeddings and head frozen), for gradients + optimizer state of one layer",
    )
    switch_every: int | None = option(None, "badam: optimizer steps per layer before the next; none: 50")
    block_order: Literal["random", "ascending", "descending"] | None = option(
        None, "badam: the order of the layers, a new permutation each round for random; none: random"
    )
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

    # ---- objective ----
    objective: str = option(
        "cross_entropy",
        "training objective: cross_entropy, focal or dice for single-label classification; binary_focal or "
        "multilabel_dice for multi_label; mse_corr for regression; cross_entropy, dece, gce or smile for "
        "generation",
    )
    label_smoothing: float | None = option(None, "label smoothing (cross_entropy, dece)")
    focal_gamma: float | None = option(None, "focal, binary_focal: the focusing exponent; none: 2")
    focal_alpha: tuple[float, ...] | None = option(None, "focal: one weight per class, in label order")
    dece_alpha_base: float | None = option(None, "dece: alpha = alpha_base ** epoch; none: 0.985")
    gce_q: float | None = option(None, "gce: q in (0, 1]; none: 0.7")
    smile_subset: Literal["sequence", "random", "reverse"] | None = option(
        None, "smile: the vocabulary subset; none: sequence"
    )
    smile_first_token_mle: bool | None = option(
        None, "smile: the first target token over the full vocabulary; none: true"
    )
    dice_self_adjusting: float | None = option(
        None, "dice, multilabel_dice: Li et al.'s (1 - p)^a weighting; none: 0"
    )
    mse_corr_weight: float | None = option(None, "mse_corr: the weight of 1 - Pearson r; none: 1.5")

    # ---- tricks ----
    ema_decay: float | None = option(
        None, "EMA of the weights with this decay, e.g. 0.999 (evaluated, saved)"
    )
    adversarial: Literal["none", "fgm", "pgd"] = option("none", "adversarial training on the embeddings")
    adversarial_epsilon: float = option(1.0, "FGM's perturbation norm / PGD's radius")
    pgd_steps: int = option(3, "PGD steps")
    pgd_step_size: float = option(0.3, "PGD step size")
    rdrop_weight: float = option(0.0, "weight of R-Drop's KL term (0: off)")
    layer_decay: float | None = option(None, "layer-wise learning-rate decay factor in (0, 1]")
    head_lr: float | None = option(None, "the head's learning rate with layer decay; none: learning_rate")

    # ---- checkpoints ----
    keep_checkpoints: int | None = option(2, "epoch checkpoints kept (none: all)", changes_results=False)

    def validate(self) -> None:
        allowed = OBJECTIVES_BY_TASK[self.task]
        if self.objective not in allowed:
            raise ValueError(
                f"objective {self.objective!r} does not apply to task {self.task}; choose one of "
                + ", ".join(allowed)
            )
        self._validate_problem_type()
        for name, (objectives, _) in OBJECTIVE_OPTIONS.items():
            if getattr(self, name) is not None and self.objective not in objectives:
                raise ValueError(
                    f"{name} is an option of objective {' / '.join(objectives)}, not of {self.objective!r}"
                )
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
        self._validate_optimizer()
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
        """Build the objective and the tricks as training will: their own checks, before any data is read."""
        from ..hf import TrainerLoss

        try:
            TrainerLoss(self.objective, task=self.task, **objective_options(self))
        except ValueError as error:
            message = str(error)
            for name, (_, keyword) in OBJECTIVE_OPTIONS.items():
                if getattr(self, name) is not None and message.startswith(f"{keyword} "):
                    message = name + message[len(keyword) :]  # the option's name, not the objective's
                    break
            raise ValueError(message) from None
        self.trainer_tricks()  # TrainerTricks checks its options

    def trainer_tricks(self) -> Any:
        """The `tunekit.hf.TrainerTricks` these options ask for."""
        from ..hf import TrainerTricks

        return TrainerTricks(
            ema_decay=self.ema_decay,
            adversarial=None if self.adversarial == "none" else self.adversarial,
            adversarial_epsilon=self.adversarial_epsilon,
            pgd_step_size=self.pgd_step_size,
            pgd_steps=self.pgd_steps,
            rdrop_weight=self.rdrop_weight,
            layer_decay=self.layer_decay,
            head_lr=self.head_lr,
            badam=self.optimizer == "badam",
            **{name: value for name in ("switch_every", "block_order") if (value := getattr(self, name))},
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

    def _validate_optimizer(self) -> None:
        if self.optimizer != "badam":
            for name in ("switch_every", "block_order"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name} is an option of --optimizer badam, not {self.optimizer}")
            return
        if self.switch_every is not None:
            check_at_least(self, ("switch_every",))
        if self.adversarial != "none":
            raise ValueError(
                f"adversarial {self.adversarial} perturbs the input embeddings along their gradient, and "
                "optimizer badam keeps them frozen: choose one"
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
        if self.problem_type != "single_label" and self.task != "sequence_classification":
            raise ValueError(
                f"problem_type {self.problem_type} is for task sequence_classification, not {self.task}"
            )
        if self.task == "sequence_classification":
            fitting = objectives_for(self.problem_type)
            if self.objective not in fitting:
                spec = CLASSIFICATION_LOSSES[self.objective]
                needed = next(k for k, v in PROBLEM_TYPES.items() if v == spec.problem_type)
                raise ValueError(
                    f"objective {self.objective!r} does not fit problem_type {self.problem_type}: it scores "
                    f"{needed} heads; for {self.problem_type} choose one of {', '.join(fitting)}"
                )
        if self.problem_type != "single_label" and self.rdrop_weight > 0:
            raise ValueError(
                f"rdrop_weight applies to single_label classification (a softmax KL), not problem_type "
                f"{self.problem_type}"
            )
        if self.problem_type == "regression" and self.labels:
            raise ValueError(
                f"labels {list(self.labels)} are for classification, not problem_type regression"
            )
        if not self.label_separator:
            raise ValueError("label_separator must not be empty")

    @property
    def generation(self) -> bool:
        return self.task in ("causal_lm", "seq2seq")


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


def objective_options(config: TrainConfig) -> dict[str, Any]:
    """The chosen objective's keyword options that the config sets (the others keep their defaults)."""
    options = {}
    for name, (_, keyword) in OBJECTIVE_OPTIONS.items():
        value = getattr(config, name)
        if value is not None:
            options[keyword] = list(value) if isinstance(value, tuple) else value
    return options
