"""Soft dice loss from logits, with the self-adjusting variant of Li et al. 2020 ("Dice Loss for
Data-imbalanced NLP Tasks"): 1 - dice per class, over the batch (a classifier's one position per sample) or
per sample (several positions: tokens, pixels), where dice is a soft F1 score; averaged over classes, a rare
class weighs as much as a frequent one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_float_tensor,
    check_logits_and_target,
    check_non_negative,
    check_probability_targets,
    check_reduction_options,
    check_same_shape,
    check_target_range,
)
from ._dtypes import upcast
from ._reduction import reduce_losses

MODES = ("binary", "multiclass", "multilabel")
_DENOMINATOR_FLOOR = 1e-7  # keeps smooth=0 finite when a term has neither prediction nor target


def dice_loss(
    logits: Tensor,
    target: Tensor,
    *,
    mode: str = "multiclass",
    smooth: float = 1.0,
    square_denominator: bool = False,
    self_adjusting: float = 0.0,
    batch_dice: bool | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> Tensor:
    """Soft dice loss. For class c, summing over the non-ignored positions i of sample b (per sample) or of
    the whole batch (``batch_dice``, one term per class)::

        q = (1 - p) ** self_adjusting * p          # p = softmax (multiclass) or sigmoid of the logits
        dice[b, c] = (2 * sum_i q * y + smooth) / (sum_i q ** k + sum_i y ** k + smooth)
        loss[b, c] = 1 - dice[b, c]                # k = 2 with square_denominator, else 1

    ``y`` is the one-hot of the class indices (multiclass, built here) or the target itself. A class absent
    from the terms' positions keeps its term: with smooth > 0 it is ``sum q**k / (sum q**k + smooth)``, which
    pushes that class's false positives down (with smooth = 0 it is 1 whatever the prediction).

    By default (``batch_dice=None``) the sums run over the batch when each sample has a single position (a
    sequence classifier's (B, C) multiclass or multilabel logits, (B,) binary logits), and per sample
    otherwise (tokens or pixels: (B, N, C)). Per-sample dice of a single position is no soft F1: with
    smooth = 1 a completely wrong prediction has loss 1/2 on its label's class and on the predicted one and
    0 on the others, 1/C on average (a right one about 0); summed over the batch, a completely wrong
    prediction has loss about 1 (``dice[c] = 1 / (n_c + m_c + 1)``, n_c and m_c the class's labels and
    predictions in the batch), as users of a dice loss expect.

    Args:
        logits: multiclass and multilabel (B, ..., C), binary (B, ...); float, fp16/bf16 computed in fp32.
        target: multiclass (B, ...) integer class ids; multilabel and binary the logits' shape, 0/1 or soft
            labels in [0, 1]. Positions (elements, for multilabel) equal to ``ignore_index`` count nowhere.
        mode: "multiclass", "multilabel" or "binary".
        smooth: >= 0, added to numerator and denominator.
        square_denominator: sum squares in the denominator (V-Net's form).
        self_adjusting: Li et al.'s alpha >= 0; 0 is the ordinary dice, larger values down-weight the easy
            positions (p near 0 or 1).
        batch_dice: True sums over the whole batch (one term per class, as segmentation_models_pytorch
            does): a differentiable macro-F1 over the batch, the form that learns for a sequence
            classifier (per-instance dice tends to settle on the majority class, where its gradient
            vanishes). False: per sample. None (default): over the batch when each sample has one position,
            per sample otherwise (see above).
        reduction: "mean" or "sum" over the terms with at least one supervised position, or "none": (B, C)
            per sample, (C,) over the batch, without the class axis in binary mode.

    Not decomposable over items, so there is no ``num_items_in_batch``: gradient accumulation sees each
    micro-batch's dice, not the big batch's.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[3.0, -1.0, 0.0], [0.0, 2.0, 0.5], [1.0, 0.0, 4.0]])
        >>> round(dice_loss(logits, torch.tensor([0, 1, 2])).item(), 4)  # over the batch: one position each
        0.0877
        >>> round(dice_loss(logits, torch.tensor([0, 1, 2]), batch_dice=False).item(), 4)
        0.0549
    """
    _check_options(mode, smooth, square_denominator, self_adjusting, batch_dice)
    check_reduction_options(ignore_index, reduction)
    probs, one_minus, labels, valid = _probabilities_and_labels(logits, target, mode, ignore_index)
    if self_adjusting:
        # p * 0 ** alpha = 0 where 1 - p underflows: the floor only keeps the gradient of that factor finite
        probs = probs * one_minus.clamp_min(torch.finfo(probs.dtype).tiny) ** self_adjusting
    probs, labels = probs * valid, labels * valid  # (B, P, C)
    power = 2 if square_denominator else 1
    if batch_dice is None:  # one position per sample: per-sample dice is no F1 (see the docstring)
        batch_dice = probs.shape[1] == 1
    dims = (0, 1) if batch_dice else (1,)
    overlap = (probs * labels).sum(dims)
    denominator = (probs**power).sum(dims) + (labels**power).sum(dims)
    dice = (2 * overlap + smooth) / (denominator + smooth).clamp_min(_DENOMINATOR_FLOOR)
    supervised = valid.any(dim=dims).expand_as(dice)
    loss = reduce_losses(1 - dice, supervised, reduction)
    return loss.squeeze(-1) if mode == "binary" and reduction == "none" else loss


def _probabilities_and_labels(
    logits: Tensor, target: Tensor, mode: str, ignore_index: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """p, 1 - p, y and the valid mask, each (B, P, C) (valid broadcastable), in the compute dtype."""
    if mode == "multiclass":
        num_classes = check_logits_and_target(logits, target)
        if logits.dim() < 2:
            raise ValueError(f"multiclass dice needs logits (B, ..., C), got shape {tuple(logits.shape)}")
        check_target_range(target, num_classes, ignore_index)
        _check_classes(num_classes, logits)
        x = upcast(logits).reshape(logits.shape[0], math.prod(logits.shape[1:-1]), num_classes)
        target = target.reshape(x.shape[:2])
        valid = (target != ignore_index).unsqueeze(-1)
        probs = x.softmax(dim=-1)
        labels = F.one_hot(torch.where(valid.squeeze(-1), target, 0).long(), num_classes).to(x.dtype)
        return probs, 1 - probs, labels, valid
    check_float_tensor("logits", logits)
    check_same_shape("logits", logits, "target", target)
    if logits.dim() < (1 if mode == "binary" else 2):
        raise ValueError(
            f"{mode} dice needs logits of shape (B, ...{', C' * (mode == 'multilabel')}), got a scalar"
        )
    check_probability_targets(target, ignore_index)
    x = upcast(logits)
    classes = 1 if mode == "binary" else x.shape[-1]
    _check_classes(classes, logits)
    positions = math.prod(x.shape[1:]) // classes
    x, target = x.reshape(x.shape[0], positions, classes), target.reshape(x.shape[0], positions, classes)
    valid = target != ignore_index
    labels = torch.where(valid, target.to(x.dtype), 0)
    return x.sigmoid(), torch.sigmoid(-x), labels, valid


def _check_classes(num_classes: int, logits: Tensor) -> None:
    if num_classes == 0:
        raise ValueError(f"dice needs at least one class, got logits of shape {tuple(logits.shape)}")


class DiceLoss(nn.Module):
    """Module form of `dice_loss`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(
        self,
        *,
        mode: str = "multiclass",
        smooth: float = 1.0,
        square_denominator: bool = False,
        self_adjusting: float = 0.0,
        batch_dice: bool | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(mode, smooth, square_denominator, self_adjusting, batch_dice)
        check_reduction_options(ignore_index, reduction)
        self.mode = mode
        self.smooth = smooth
        self.square_denominator = square_denominator
        self.self_adjusting = self_adjusting
        self.batch_dice = batch_dice
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return dice_loss(
            logits,
            target,
            mode=self.mode,
            smooth=self.smooth,
            square_denominator=self.square_denominator,
            self_adjusting=self.self_adjusting,
            batch_dice=self.batch_dice,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"mode={self.mode!r}, smooth={self.smooth}, square_denominator={self.square_denominator}, "
            f"self_adjusting={self.self_adjusting}, batch_dice={self.batch_dice}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )


def _check_options(
    mode: str, smooth: float, square_denominator: bool, self_adjusting: float, batch_dice: bool | None
) -> None:
    check_choice("mode", mode, MODES)
    check_non_negative("smooth", smooth)
    check_flag("square_denominator", square_denominator)
    check_non_negative("self_adjusting", self_adjusting)
    if batch_dice is not None and not isinstance(batch_dice, bool):
        raise ValueError(f"batch_dice must be True, False or None (automatic), got {batch_dice!r}")
