"""Input validation shared by every objective (the scalar checks come from `tunekit._checks`). User errors
are `ValueError`s that name the bad value."""

from __future__ import annotations

import math
import numbers
import os

import torch
from torch import Tensor

from .._checks import (  # noqa: F401  (re-exported: the objectives import every check from here)
    check_choice,
    check_count,
    check_flag,
    check_fraction,
    check_integer,
    check_non_negative,
    check_positive_int,
    describe,
)

REDUCTIONS = ("none", "mean", "sum")


def sync_checks_enabled(device: torch.device) -> bool:
    """Value checks that need a device sync run always on CPU, on accelerators only with
    TUNEKIT_SYNC_CHECKS=1, never on the meta device (no values)."""
    if device.type == "meta":
        return False
    return device.type == "cpu" or os.environ.get("TUNEKIT_SYNC_CHECKS", "") not in ("", "0")


def check_logits_and_target(logits: Tensor, target: Tensor, *, what: str = "logits") -> int:
    """Check logits (..., V) against integer targets (...); return V."""
    check_float_tensor(what, logits)
    if (
        not isinstance(target, Tensor)
        or target.is_floating_point()
        or target.is_complex()
        or (target.dtype == torch.bool)
    ):
        raise ValueError(f"target must be an integer tensor of class indices, got {describe(target)}")
    if logits.dim() == 0 or tuple(logits.shape[:-1]) != tuple(target.shape):
        raise ValueError(
            f"{what} of shape {tuple(logits.shape)} need target of shape {tuple(logits.shape[:-1])} "
            f"(all but the last dimension), got target of shape {tuple(target.shape)}"
        )
    if logits.device != target.device:
        raise ValueError(f"{what} are on {logits.device} but target is on {target.device}")
    return logits.shape[-1]


def check_probability_target(
    logits: Tensor, target: Tensor, *, num_classes: int | None = None, what: str = "logits"
) -> int:
    """Check probability targets (..., V) against logits (..., V), or against `what` (..., H) whose
    projection has `num_classes` outputs: same leading shape, dtype and device; return V. Their values are
    not checked, as PyTorch does not (any non-negative mass; rows need not sum to 1)."""
    check_float_tensor(what, logits)
    if logits.dim() == 0:
        raise ValueError(f"{what} must have a class dimension (..., V), got a 0-d tensor")
    num_classes = logits.shape[-1] if num_classes is None else num_classes
    expected = (*logits.shape[:-1], num_classes)
    if tuple(target.shape) != expected:
        raise ValueError(
            f"probability targets for {what} of shape {tuple(logits.shape)} must have shape {expected}, "
            f"got {tuple(target.shape)} (class indices would be an integer tensor of shape "
            f"{tuple(logits.shape[:-1])})"
        )
    if target.dtype != logits.dtype or target.device != logits.device:
        raise ValueError(
            f"probability targets ({target.dtype} on {target.device}) must match "
            f"{what} ({logits.dtype} on {logits.device})"
        )
    return num_classes


def check_class_weight(weight: object, num_classes: int, logits: Tensor, *, name: str = "weight") -> Tensor:
    """Check per-class weights: a floating-point (V,) tensor on the logits' device, finite (checked where
    values are, see `sync_checks_enabled`), not requiring a gradient (none is computed for it)."""
    if not isinstance(weight, Tensor) or not weight.is_floating_point():
        raise ValueError(
            f"{name} must be a floating-point tensor of per-class weights, got {describe(weight)}"
        )
    if tuple(weight.shape) != (num_classes,):
        raise ValueError(f"{name} must have shape ({num_classes},), one per class, got {tuple(weight.shape)}")
    if weight.device != logits.device:
        raise ValueError(f"{name} is on {weight.device} but the logits are on {logits.device}")
    if weight.requires_grad and torch.is_grad_enabled():
        raise ValueError(
            f"{name} requires grad, but the per-class weights are constants of the loss (no gradient is "
            f"computed for them): pass {name}.detach()"
        )
    if sync_checks_enabled(weight.device) and not bool(weight.isfinite().all()):
        raise ValueError(f"{name} must be finite, got {weight[~weight.isfinite()][0].item()}")
    return weight


def class_weight_buffer(weight: object, *, name: str = "weight") -> Tensor | None:
    """A module's per-class weights as its own tensor: None, a 1-D real sequence (float32) or a 1-D
    floating-point tensor (copied, in its dtype, so that the caller's tensor stays theirs)."""
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        if not weight.is_floating_point() or weight.dim() != 1:
            raise ValueError(f"{name} must be a 1-D floating-point tensor, got {describe(weight)}")
        return weight.detach().clone()
    try:
        values = torch.tensor(weight, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(
            f"{name} must be per-class weights (a 1-D sequence or tensor), got {weight!r}"
        ) from error
    if values.dim() != 1 or isinstance(weight, (str, bytes)):
        raise ValueError(f"{name} must be per-class weights (a 1-D sequence or tensor), got {weight!r}")
    return values


def check_target_range(target: Tensor, num_classes: int, ignore_index: int) -> None:
    if target.numel() == 0 or not sync_checks_enabled(target.device):
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bad.any():
        value = target[bad][0].item()
        raise ValueError(
            f"target contains {value}, outside [0, {num_classes}) and not ignore_index={ignore_index}"
        )


def check_num_items(num_items_in_batch: int | Tensor | None, reduction: str) -> None:
    if num_items_in_batch is None:
        return
    if reduction == "none":
        raise ValueError("num_items_in_batch divides a summed loss; it cannot be used with reduction='none'")
    if isinstance(num_items_in_batch, Tensor):
        if num_items_in_batch.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be a single number, got shape {num_items_in_batch.shape}"
            )
        if not sync_checks_enabled(num_items_in_batch.device):
            return
        value = num_items_in_batch.item()
    else:
        value = num_items_in_batch
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise ValueError(
            f"num_items_in_batch must be a finite non-negative number, got {num_items_in_batch!r}"
        )


def check_epoch(epoch: float) -> None:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Real) or not 1 <= epoch < math.inf:
        raise ValueError(f"epoch is counted from 1 and must be a finite number >= 1, got {epoch!r}")


def check_reduction_options(ignore_index: int, reduction: str) -> None:
    """The options every token-level objective shares, checked by the functions and the modules alike."""
    check_integer("ignore_index", ignore_index)
    check_choice("reduction", reduction, REDUCTIONS)


def check_float_tensor(name: str, value: object) -> None:
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {describe(value)}")


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: object) -> None:
    """Check that `b` is a real-valued tensor of `a`'s shape on `a`'s device (bool and integer allowed)."""
    if not isinstance(b, Tensor) or b.is_complex():
        raise ValueError(f"{name_b} must be a real-valued tensor, got {describe(b)}")
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} of shape {tuple(a.shape)} need {name_b} of the same shape, got {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise ValueError(f"{name_a} are on {a.device} but {name_b} is on {b.device}")


def check_probability_targets(
    target: Tensor, ignore_index: int | None = None, *, name: str = "target"
) -> None:
    """Binary / multi-label targets: values in [0, 1] (soft labels allowed), or `ignore_index`."""
    if target.numel() == 0 or not sync_checks_enabled(target.device):
        return
    bad = (target < 0) | (target > 1) | target.isnan()
    if ignore_index is not None:
        bad &= target != ignore_index
    if bad.any():
        value = target[bad][0].item()
        allowed = "" if ignore_index is None else f" or ignore_index={ignore_index}"
        raise ValueError(f"{name} contains {value}; binary targets must be in [0, 1]{allowed}")
