"""Focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"): cross-entropy scaled by
``(1 - p_t) ** gamma`` so that well-classified items count less and the rare, hard ones dominate.

Both forms take the modulating factor as ``exp(gamma * log(1 - p_t))`` with ``log(1 - p_t)`` computed from
logits (log-sigmoid, or a log-sum-exp over the other classes), so that neither the loss nor its gradient
overflows when a prediction saturates: fp16 logits of +-100 give finite values and gradients.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (
    REDUCTIONS,
    check_choice,
    check_float_tensor,
    check_fraction,
    check_logits_and_target,
    check_non_negative,
    check_num_items,
    check_probability_targets,
    check_reduction_options,
    check_same_shape,
    check_target_range,
    sync_checks_enabled,
)
from ._dtypes import upcast
from ._reduction import reduce_losses

Alpha = float | Sequence[float] | Tensor | None
_INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def binary_focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Sigmoid focal loss for binary and multi-label problems, ``torchvision.ops.sigmoid_focal_loss``'s
    semantics. Per element, with ``p = sigmoid(logits)`` and target ``t``::

        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = alpha * t + (1 - alpha) * (1 - t)          # 1 when alpha is None
        loss = -alpha_t * (1 - p_t) ** gamma * (t * log(p) + (1 - t) * log(1 - p))

    Args:
        logits: (...) float tensor, one logit per binary decision (multi-label: (N, C)); fp16/bf16 are
            computed in fp32, the gradient comes back in their dtype.
        target: (...) the logits' shape; 0/1 labels (bool, integer or float) or soft labels in [0, 1].
        alpha: weight of the positives in [0, 1] (negatives get 1 - alpha); None weights both by 1.
        gamma: focusing parameter >= 0; 0 with alpha=None is binary cross-entropy with logits.
        reduction: "mean" over all elements, "sum", or "none" (the logits' shape).
        num_items_in_batch: if given, the summed loss is divided by it (Hugging Face's convention).

    Returns:
        fp32 loss (fp64 for fp64 logits): a scalar, or the logits' shape for ``reduction="none"``.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[0.3992, 0.2232, 0.6435], [0.3800, 0.3044, 0.3241]])
        >>> round(binary_focal_loss(logits, torch.tensor([[0, 1, 1], [1, 0, 1]])).item(), 7)
        0.0908353
    """
    _check_binary_options(alpha, gamma, reduction)
    check_num_items(num_items_in_batch, reduction)
    check_float_tensor("logits", logits)
    check_same_shape("logits", logits, "target", target)
    check_probability_targets(target)
    x = upcast(logits)
    t = target.to(x.dtype)
    log_p, log_not_p = F.logsigmoid(x), F.logsigmoid(-x)
    cross_entropy = -(t * log_p + (1 - t) * log_not_p)
    # 1 - p_t = p (1 - t) + (1 - p) t with p and 1 - p each from its own log-sigmoid: exact for hard
    # labels however saturated; the floor only matters where it underflows, and keeps the gradient finite
    miss = log_p.exp() * (1 - t) + log_not_p.exp() * t
    log_miss = miss.clamp_min(torch.finfo(x.dtype).tiny).log()
    loss = torch.exp(gamma * log_miss) * cross_entropy
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return reduce_losses(loss, None, reduction, num_items_in_batch)


def focal_loss(
    logits: Tensor,
    target: Tensor,
    *,
    gamma: float = 2.0,
    alpha: Alpha = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Softmax focal loss for multi-class problems with class indices as targets. Per item, with
    ``p = softmax(logits)`` and label ``y``::

        loss = -alpha[y] * (1 - p[y]) ** gamma * log(p[y])

    With ``gamma=0`` and ``alpha=None`` it is ``F.cross_entropy``. "mean" divides by the number of
    supervised items (as kornia and torchvision do), not by the sum of their alphas as
    ``F.cross_entropy(weight=alpha)`` does: with per-class alpha and gamma=0, "sum" equals that call's sum.

    Args:
        logits: (..., C) float tensor, C >= 2, any leading shape (token classification: (B, N, C)); fp16/bf16
            are computed in fp32, the gradient comes back in their dtype.
        target: (...) integer class ids in [0, C), or ``ignore_index``.
        gamma: focusing parameter >= 0.
        alpha: None (1 for every class), a float that scales every class alike, or C per-class weights >= 0
            (a sequence or a tensor on any device; it is moved to the logits' device).
        ignore_index: as in `cross_entropy`.
        reduction: as in `cross_entropy`.
        num_items_in_batch: as in `cross_entropy`.

    Returns:
        fp32 loss (fp64 for fp64 logits): a scalar, or the target's shape for ``reduction="none"`` (0 where
        ignored).

    Example::

        >>> import torch
        >>> logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.5]])
        >>> round(focal_loss(logits, torch.tensor([0, -100]), alpha=[0.5, 1.0, 2.0]).item(), 6)
        0.002072
    """
    num_classes = check_logits_and_target(logits, target)
    if num_classes < 2:
        raise ValueError(f"focal_loss needs at least 2 classes, got logits of shape {tuple(logits.shape)}")
    check_non_negative("gamma", gamma)
    check_reduction_options(ignore_index, reduction)
    check_num_items(num_items_in_batch, reduction)
    check_target_range(target, num_classes, ignore_index)
    x = upcast(logits)
    valid = target != ignore_index
    label = torch.where(valid, target, 0).long().unsqueeze(-1)  # ignored items: a harmless class 0
    log_norm = torch.logsumexp(x, dim=-1)
    log_p = x.gather(-1, label).squeeze(-1) - log_norm
    # log(1 - p[y]) = logsumexp over the other classes - logsumexp over all: exact when p[y] -> 1
    others = x.scatter(-1, label, float("-inf"))
    log_miss = torch.logsumexp(others, dim=-1) - log_norm
    loss = -torch.exp(gamma * log_miss) * log_p
    weights = class_weights(alpha, num_classes, x)
    if weights is not None:
        loss = loss * (weights if weights.dim() == 0 else weights[label.squeeze(-1)])
    return reduce_losses(loss, valid, reduction, num_items_in_batch)


def class_weights(alpha: Alpha, num_classes: int, like: Tensor) -> Tensor | None:
    """`alpha` as a tensor of `like`'s dtype and device: a scalar, or (C,); None stays None."""
    weights = _alpha_tensor(alpha)
    if weights is None or weights.dim() == 0:
        return None if weights is None else weights.to(device=like.device, dtype=like.dtype)
    if weights.shape != (num_classes,):
        raise ValueError(
            f"alpha needs one real weight per class ({num_classes}), got shape {tuple(weights.shape)}"
        )
    return weights.to(device=like.device, dtype=like.dtype)


def _alpha_tensor(alpha: Alpha) -> Tensor | None:
    """None, a number (a 0-d tensor) or a 1-D tensor of at least one weight, all finite and >= 0. The values
    are checked where they are given (a CUDA tensor only with TUNEKIT_SYNC_CHECKS=1)."""
    if alpha is None:
        return None
    if isinstance(alpha, bool) or (
        isinstance(alpha, Tensor) and (alpha.is_complex() or alpha.dtype == torch.bool)
    ):
        raise ValueError(f"alpha must be None, a number or per-class weights, got {alpha!r}")
    if isinstance(alpha, numbers.Real):
        check_non_negative("alpha", alpha)
        return torch.tensor(float(alpha), dtype=torch.float64)
    try:  # a list keeps float64 precision until the logits' dtype is known
        weights = alpha.detach() if isinstance(alpha, Tensor) else torch.as_tensor(alpha, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"alpha must be None, a number or per-class weights, got {alpha!r}") from error
    if not (weights.is_floating_point() or weights.dtype in _INTEGER_DTYPES):
        raise ValueError(f"alpha must hold real numbers, got a {weights.dtype} tensor")
    if weights.dim() > 1 or (weights.dim() == 1 and weights.numel() == 0):
        raise ValueError(f"alpha must be a number or one weight per class, got shape {tuple(weights.shape)}")
    if sync_checks_enabled(weights.device) and not bool(((weights >= 0) & weights.isfinite()).all()):
        raise ValueError(f"alpha must be finite and >= 0, got {alpha!r}")
    return weights


class BinaryFocalLoss(nn.Module):
    """Module form of `binary_focal_loss`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(self, *, alpha: float | None = 0.25, gamma: float = 2.0, reduction: str = "mean") -> None:
        super().__init__()
        _check_binary_options(alpha, gamma, reduction)
        self.alpha = alpha
        self.gamma = gamma
        self.reduction = reduction

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return binary_focal_loss(
            logits,
            target,
            alpha=self.alpha,
            gamma=self.gamma,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, gamma={self.gamma}, reduction={self.reduction!r}"


class FocalLoss(nn.Module):
    """Module form of `focal_loss`. Per-class alpha is a buffer: it follows the module's device and is saved
    in its state dict."""

    alpha: Tensor | float | None

    def __init__(
        self,
        *,
        gamma: float = 2.0,
        alpha: Alpha = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_non_negative("gamma", gamma)
        check_reduction_options(ignore_index, reduction)
        weights = _alpha_tensor(alpha)
        if weights is None or weights.dim() == 0:
            self.alpha = None if weights is None else float(weights)
        else:  # float32 on the CPU until the module moves; a copy, so the caller's tensor stays theirs
            self.register_buffer("alpha", weights.to(torch.float32, copy=True))
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return focal_loss(
            logits,
            target,
            gamma=self.gamma,
            alpha=self.alpha,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        alpha = f"({self.alpha.numel()} per-class weights)" if isinstance(self.alpha, Tensor) else self.alpha
        return (
            f"gamma={self.gamma}, alpha={alpha}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}"
        )


def _check_binary_options(alpha: float | None, gamma: float, reduction: str) -> None:
    if alpha is not None:
        check_fraction("alpha", alpha, zero_ok=True, one_ok=True)
    check_non_negative("gamma", gamma)
    check_choice("reduction", reduction, REDUCTIONS)  # no ignore_index: target holds probabilities
