"""The registries of objectives: the shared tests, the benchmarks, the demo and the integrations iterate over
them, so a new objective is one entry here plus its math.

`TOKEN_LOSSES` replace cross-entropy on sequences (logits and fused-linear forms); `CLASSIFICATION_LOSSES`
score the output of a classification or regression head, keyed by the Hugging Face `problem_type` whose
labels they take.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from torch import nn

from .cross_entropy import CrossEntropyLoss, cross_entropy, linear_cross_entropy
from .dece import DeCELoss, dece_loss, linear_dece_loss
from .dice import DiceLoss, dice_loss
from .focal import BinaryFocalLoss, FocalLoss, binary_focal_loss, focal_loss
from .gce import GCELoss, gce_loss, linear_gce_loss
from .mse_corr import MSECorrLoss, mse_corr_loss
from .smile import SMILELoss, linear_smile_loss, smile_loss


@dataclass(frozen=True)
class TokenLossSpec:
    """One token-level objective: `function(logits, target, *extra_args, **kwargs)`, its fused-linear form
    `linear_function(hidden, weight, target, *extra_args, bias=None, **kwargs)` and its module."""

    name: str
    function: Callable
    linear_function: Callable
    module: type[nn.Module]
    extra_args: tuple = ()
    sequence_only: bool = False  # needs (B, N, V) logits and (B, N) labels
    # scores sequences, not tokens alone: takes the batch's `position_ids`, so packed sequences are apart
    uses_position_ids: bool = False
    # a sum over tokens divided by their count: takes `num_items_in_batch`, accumulation is exact
    per_item: bool = True


TOKEN_LOSSES: dict[str, TokenLossSpec] = {
    spec.name: spec
    for spec in (
        TokenLossSpec("cross_entropy", cross_entropy, linear_cross_entropy, CrossEntropyLoss),
        TokenLossSpec("dece", dece_loss, linear_dece_loss, DeCELoss, extra_args=(1,)),
        TokenLossSpec("gce", gce_loss, linear_gce_loss, GCELoss),
        TokenLossSpec(
            "smile", smile_loss, linear_smile_loss, SMILELoss, sequence_only=True, uses_position_ids=True
        ),
    )
}

# the labels each problem type takes, as in `transformers`' sequence classifiers
PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


@dataclass(frozen=True)
class ClassificationLossSpec:
    """One objective for a classification or regression head: ``function(logits, labels, **kwargs)`` and
    ``module(**kwargs)``.

    problem_type: "single_label_classification" (logits (..., C), integer labels (...)),
    "multi_label_classification" (logits and 0/1 labels of one shape) or "regression" (predictions and
    targets of one shape).
    per_item: the loss is a sum over items divided by their count, so it takes `num_items_in_batch` and
    gradient accumulation is exact; otherwise it is a batch statistic (dice, correlation).
    """

    name: str
    function: Callable
    module: type[nn.Module]
    problem_type: str
    per_item: bool
    kwargs: Mapping = field(default_factory=lambda: MappingProxyType({}))


# Dice over a classification head sums over the batch: per-sample dice has one position per sample, and from
# random weights it tends to settle on the majority class where its gradient vanishes (tests/
# test_hf_sequence_classification.py measured accuracy 0.44-0.66 per sample, 0.81-1.0 over the batch).
CLASSIFICATION_LOSSES: dict[str, ClassificationLossSpec] = {
    spec.name: spec
    for spec in (
        ClassificationLossSpec(
            "cross_entropy", cross_entropy, CrossEntropyLoss, "single_label_classification", per_item=True
        ),
        ClassificationLossSpec("focal", focal_loss, FocalLoss, "single_label_classification", per_item=True),
        ClassificationLossSpec(
            "dice",
            dice_loss,
            DiceLoss,
            "single_label_classification",
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
