"""The registries of objectives, and what each one supports: the integrations, the command line, the shared
tests and the demo read them, so a new objective is one entry here plus its math, and no other place lists
tasks, problem types, objectives or their options.

`TOKEN_LOSSES` replace cross-entropy on sequences (logits and fused-linear forms); `CLASSIFICATION_LOSSES`
score the output of a classification or regression head, keyed by the Hugging Face ``problem_type`` whose
labels they take. `find_objective(name, task, problem_type)` is the one check that an objective fits a task;
`objectives_for(task, problem_type)` lists those that do.

Example::

    >>> objectives_for("sequence_classification", "regression")
    ('mse_corr',)
    >>> dict(TOKEN_LOSSES["gce"].options)
    {'q': 0.7, 'weight': None}
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from .cross_entropy import CrossEntropyLoss, cross_entropy, linear_cross_entropy
from .dece import DeCELoss, dece_loss, linear_dece_loss
from .dice import DiceLoss, dice_loss
from .focal import BinaryFocalLoss, FocalLoss, binary_focal_loss, focal_loss
from .gce import GCELoss, gce_loss, linear_gce_loss
from .mse_corr import MSECorrLoss, mse_corr_loss
from .smile import SMILELoss, linear_smile_loss, smile_loss

__all__ = [
    "CLASSIFICATION_LOSSES",
    "GENERATION_TASKS",
    "PROBLEM_TYPES",
    "SINGLE_LABEL",
    "TASKS",
    "TOKEN_LOSSES",
    "ClassificationLossSpec",
    "TokenLossSpec",
    "find_objective",
    "objectives_for",
]

TASKS = ("causal_lm", "seq2seq", "token_classification", "sequence_classification")
"""What a model is trained to do, as `tunekit.hf.TrainerLoss` aligns its labels with its logits."""
GENERATION_TASKS = ("causal_lm", "seq2seq")
"""The tasks whose head is a language-model head, (tokens x vocabulary): the fused-linear forms' tasks."""
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")
"""The labels of a classification head, as `transformers`' ``config.problem_type`` names them."""
SINGLE_LABEL = PROBLEM_TYPES[0]
"""``"single_label_classification"``: class indices, one label per item."""
# keyword options every objective has, set by the integration rather than chosen per objective
_SHARED_OPTIONS = ("ignore_index", "reduction")


def _options_of(module: type[nn.Module], fixed: Mapping[str, Any] = MappingProxyType({})) -> Mapping:
    """The module's own keyword options and their defaults, read from its constructor (not re-listed)."""
    parameters = inspect.signature(module).parameters.values()
    return MappingProxyType(
        {
            p.name: p.default
            for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
            and p.name not in _SHARED_OPTIONS
            and p.name not in fixed
        }
    )


@dataclass(frozen=True)
class TokenLossSpec:
    """One token-level objective: `function(logits, target, *extra_args, **kwargs)`, its fused-linear form
    `linear_function(hidden, weight, target, *extra_args, bias=None, **kwargs)` and its module.

    sequence_only: needs (B, N) logits and (B, N) labels (it scores sequences), so not a sequence classifier.
    uses_position_ids: scores sequences, not tokens alone: takes the batch's ``position_ids``, so packed
        sequences are scored apart.
    per_item: a sum over tokens divided by their count: takes ``num_items_in_batch``, accumulation is exact.
    class_weights: takes per-class weights (``weight=`` in the logits form and the module, ``class_weight=``
        in the fused-linear form, whose ``weight`` is the output projection), with ``F.cross_entropy``'s
        "mean" over the weights of the supervised targets.
    soft_targets: takes probability targets of the logits' shape (soft labels) besides class ids; the
        others raise ``ValueError`` on a floating-point target.
    """

    name: str
    function: Callable
    linear_function: Callable
    module: type[nn.Module]
    extra_args: tuple = ()
    sequence_only: bool = False
    uses_position_ids: bool = False
    per_item: bool = True
    class_weights: bool = False
    soft_targets: bool = False
    problem_type: str = SINGLE_LABEL  # one class (token id) per position

    @property
    def tasks(self) -> tuple[str, ...]:
        """Every task whose labels are class ids: a language model's, a tagger's and (unless it scores
        sequences) a single-label sequence classifier's."""
        return TASKS[:3] if self.sequence_only else TASKS

    @property
    def options(self) -> Mapping[str, Any]:
        """The module's keyword options (besides ``ignore_index`` / ``reduction``) and their defaults."""
        return _options_of(self.module)


@dataclass(frozen=True)
class ClassificationLossSpec:
    """One objective for a classification or regression head: ``function(logits, target, **kwargs)`` and
    ``module(**kwargs)``.

    problem_type: "single_label_classification" (logits (..., C), integer labels (...)),
        "multi_label_classification" (logits and 0/1 labels of one shape) or "regression" (predictions and
        targets of one shape).
    per_item: the loss is a sum over items divided by their count, so it takes `num_items_in_batch` and
        gradient accumulation is exact; otherwise it is a batch statistic (dice, correlation).
    kwargs: options the entry fixes (which makes it a distinct entry, e.g. dice's mode).
    """

    name: str
    function: Callable
    module: type[nn.Module]
    problem_type: str
    per_item: bool
    kwargs: Mapping = field(default_factory=lambda: MappingProxyType({}))

    @property
    def tasks(self) -> tuple[str, ...]:
        """Single-label objectives score any (..., C) logits with class ids: a sequence classifier's and a
        tagger's; multi-label and regression objectives only a sequence classifier's head."""
        if self.problem_type == SINGLE_LABEL:
            return ("token_classification", "sequence_classification")
        return ("sequence_classification",)

    @property
    def options(self) -> Mapping[str, Any]:
        """The module's keyword options that the entry leaves to the user, and their defaults."""
        return _options_of(self.module, self.kwargs)


TOKEN_LOSSES: dict[str, TokenLossSpec] = {
    spec.name: spec
    for spec in (
        TokenLossSpec(
            "cross_entropy",
            cross_entropy,
            linear_cross_entropy,
            CrossEntropyLoss,
            class_weights=True,
            soft_targets=True,
        ),
        # DeCE mixes its own smoothed one-hot target into the prediction: neither class weights nor soft
        # targets have a meaning the paper gives
        TokenLossSpec("dece", dece_loss, linear_dece_loss, DeCELoss, extra_args=(1,)),
        TokenLossSpec("gce", gce_loss, linear_gce_loss, GCELoss, class_weights=True),
        TokenLossSpec(
            "smile", smile_loss, linear_smile_loss, SMILELoss, sequence_only=True, uses_position_ids=True
        ),
    )
}
"""The token-level objectives by the name `TrainerLoss` and ``tunekit train --objective`` take: what
each supports, and its module."""

# The dice entries sum over the batch. dice_loss's default does so only where each sample has one position
# (a sequence classifier's (B, C)); a tagger's (B, N, C) would get per-sequence dice, which from random
# weights tends to settle on the majority class where its gradient vanishes (tests/
# test_hf_sequence_classification.py measured accuracy 0.44-0.66 per sample, 0.81-1.0 over the batch).
CLASSIFICATION_LOSSES: dict[str, ClassificationLossSpec] = {
    spec.name: spec
    for spec in (
        ClassificationLossSpec("cross_entropy", cross_entropy, CrossEntropyLoss, SINGLE_LABEL, per_item=True),
        ClassificationLossSpec("focal", focal_loss, FocalLoss, SINGLE_LABEL, per_item=True),
        ClassificationLossSpec(
            "dice",
            dice_loss,
            DiceLoss,
            SINGLE_LABEL,
            per_item=False,
            kwargs=MappingProxyType({"mode": "multiclass", "batch_dice": True}),
        ),
        ClassificationLossSpec(
            "binary_focal", binary_focal_loss, BinaryFocalLoss, "multi_label_classification", per_item=True
        ),
        ClassificationLossSpec(
            "multilabel_dice",
            dice_loss,
            DiceLoss,
            "multi_label_classification",
            per_item=False,
            kwargs=MappingProxyType({"mode": "multilabel", "batch_dice": True}),
        ),
        ClassificationLossSpec("mse_corr", mse_corr_loss, MSECorrLoss, "regression", per_item=False),
    )
}
"""The classification and regression objectives by name, each with the ``problem_type`` whose labels it
takes."""


def find_objective(
    name: str, task: str, problem_type: str | None = None
) -> TokenLossSpec | ClassificationLossSpec:
    """The registry entry of objective `name` for a model of `task` (and, for a sequence classifier, of
    `problem_type`; None: the one the objective scores): the token form where there is one, since it also
    has the fused-linear form. ValueError saying which objectives fit when `name` does not."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if problem_type is not None and problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    if problem_type not in (None, SINGLE_LABEL) and task != "sequence_classification":
        raise ValueError(f"problem_type {problem_type} is for task sequence_classification, not {task}")
    for registry in (TOKEN_LOSSES, CLASSIFICATION_LOSSES):
        spec = registry.get(name)
        if spec is not None and task in spec.tasks and problem_type in (None, spec.problem_type):
            return spec
    fitting = ", ".join(objectives_for(task, problem_type))
    what = f"task {task}" + (f" with problem_type {problem_type}" if problem_type else "")
    specs = [registry[name] for registry in (TOKEN_LOSSES, CLASSIFICATION_LOSSES) if name in registry]
    if not specs:
        raise ValueError(f"objective {name!r} is not registered; for {what} choose one of {fitting}")
    fits = " or ".join(
        f"task {' / '.join(spec.tasks)}"
        + (f" with problem_type {spec.problem_type}" if spec.problem_type != SINGLE_LABEL else "")
        for spec in specs
    )
    raise ValueError(f"objective {name!r} (for {fits}) does not fit {what}: choose one of {fitting}")


def objectives_for(task: str, problem_type: str | None = None) -> tuple[str, ...]:
    """The names of the objectives that fit `task` (and `problem_type`; None: any), token objectives
    first."""
    names = [
        spec.name
        for registry in (TOKEN_LOSSES, CLASSIFICATION_LOSSES)
        for spec in registry.values()
        if task in spec.tasks and problem_type in (None, spec.problem_type)
    ]
    return tuple(dict.fromkeys(names))
