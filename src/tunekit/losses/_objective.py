"""Entry points shared by every token-level objective: validate, plan the segments, run the engine.

An objective is its per-token math (`token_math.py`) plus, for SMILE, a planner that says which vocabulary
columns each token is scored against; both its logits form and its fused-linear form go through here. Both
run eagerly inside a `torch.compile`d caller, and give a stand-in of the loss's shape on the meta device
(see `_engine.py`). `_backend.py` chooses, per call, the PyTorch engine or the Triton kernels; planners plan
for the chosen one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor

from ._backend import token_backend
from ._checks import (
    check_class_weight,
    check_float_tensor,
    check_logits_and_target,
    check_num_items,
    check_probability_target,
    check_reduction_options,
    check_target_range,
)
from ._dtypes import compute_dtype_for
from ._engine import (
    LinearSource,
    LogitsSource,
    Segment,
    chunked_token_loss,
    eager_under_compile,
    meta_token_loss,
)
from .token_math import TokenMath

# (target (...), valid (...) bool, vocabulary size, backend, fused form?) -> segments covering exactly the
# valid tokens, laid out for the engine that runs them
Planner = Callable[[Tensor, Tensor, int, str, bool], list[Segment]]


def whole_vocabulary(
    target: Tensor, valid: Tensor, num_classes: int, backend: str, fused: bool = False
) -> list[Segment]:
    """Every supervised token scored against the whole vocabulary: the supervised rows for the PyTorch
    engine; on Triton every row, the ignored ones with target -1 (no host sync to find them)."""
    if backend == "triton":
        return [Segment(rows=None, target=every_row_target(target, valid))]
    rows = valid.reshape(-1).nonzero().squeeze(1)
    return [Segment(rows=rows, target=target.reshape(-1).index_select(0, rows).long())]


def every_row_target(target: Tensor, valid: Tensor) -> Tensor:
    """(T,) int64 target of every token, -1 where not `valid` (ignored by the kernels)."""
    return torch.where(valid, target.long(), -1).reshape(-1)  # long first: -1 must not wrap (uint8)


@eager_under_compile
def logits_loss(
    logits: Tensor,
    target: Tensor,
    token_math: TokenMath,
    *,
    name: str,
    ignore_index: int,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    planner: Planner = whole_vocabulary,
    min_classes: int = 1,
    class_weight: Tensor | None = None,
    soft_targets: bool = False,
) -> Tensor:
    """Loss of logits (..., V) against target (...), reduced as `_reduction` says; `name` is the objective's,
    for errors. class_weight: per-class weights (V,) for `token_math` (checked here; None: none).
    soft_targets: whether the objective takes probability targets (the logits' shape) too."""
    soft = _is_probability_target(target, name, soft_targets)
    if soft:
        num_classes = check_probability_target(logits, target)
    else:
        num_classes = check_logits_and_target(logits, target)
    dtype = compute_dtype_for(logits)
    backend = _backend_for(logits.device, dtype, class_weight, soft)
    valid, segments = _plan(
        target,
        soft,
        num_classes,
        ignore_index,
        reduction,
        num_items_in_batch,
        planner,
        min_classes,
        backend,
        False,
    )
    token_math, target_weight = _with_class_weight(
        token_math, class_weight, num_classes, logits, dtype, target, soft, valid, what="weight"
    )
    # probability targets are an input that the engine reads and differentiates; class ids only plan
    inputs = (logits, target) if soft else (logits,)
    if logits.device.type == "meta":
        per_token = sum(t.to(dtype).sum(-1) for t in inputs)
        return meta_token_loss(per_token, valid, reduction, num_items_in_batch, target_weight)
    return chunked_token_loss(
        inputs,
        lambda inputs, needs: LogitsSource(inputs[0], needs[0], segments),
        segments,
        token_math,
        name=name,
        valid=valid,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        shape=valid.shape,
        backend=backend,
        target=target,
        target_weight=target_weight,
        soft_target=soft,
    )


@eager_under_compile
def linear_loss(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    target: Tensor,
    token_math: TokenMath,
    *,
    name: str,
    ignore_index: int,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    planner: Planner = whole_vocabulary,
    min_classes: int = 1,
    class_weight: Tensor | None = None,
    soft_targets: bool = False,
) -> Tensor:
    """Loss of the logits `hidden @ weight.T + bias`, never materialised: hidden (..., H), weight (V, H);
    the other arguments as `logits_loss` (probability targets are (..., V))."""
    soft = _is_probability_target(target, name, soft_targets)
    if not soft:
        check_logits_and_target(hidden, target, what="hidden")
    else:
        check_float_tensor("hidden", hidden)
    num_classes = check_projection(hidden, weight, bias)
    if soft:
        check_probability_target(hidden, target, num_classes=num_classes, what="hidden")
    dtype = compute_dtype_for(hidden, weight, bias)
    backend = _backend_for(hidden.device, dtype, class_weight, soft)
    valid, segments = _plan(
        target,
        soft,
        num_classes,
        ignore_index,
        reduction,
        num_items_in_batch,
        planner,
        min_classes,
        backend,
        True,
    )
    token_math, target_weight = _with_class_weight(
        token_math, class_weight, num_classes, hidden, dtype, target, soft, valid, what="class_weight"
    )
    inputs = (hidden, weight, bias, target) if soft else (hidden, weight, bias)
    if hidden.device.type == "meta":
        per_token = F.linear(hidden, weight, bias).to(dtype).sum(-1)
        if soft:
            per_token = per_token + target.to(dtype).sum(-1)
        return meta_token_loss(per_token, valid, reduction, num_items_in_batch, target_weight)
    return chunked_token_loss(
        inputs,
        lambda inputs, needs: LinearSource(*inputs, needs),
        segments,
        token_math,
        name=name,
        valid=valid,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        shape=valid.shape,
        backend=backend,
        target=target,
        target_weight=target_weight,
        soft_target=soft,
    )


def _is_probability_target(target: Tensor, name: str, soft_targets: bool) -> bool:
    """Whether `target` holds probabilities (a floating-point tensor); ValueError if the objective takes
    only class indices."""
    if not soft_targets:
        refuse_probability_targets(target, name)
    return isinstance(target, Tensor) and target.is_floating_point()


def refuse_probability_targets(target: object, name: str) -> None:
    """ValueError for a floating-point `target` given to objective `name`, which takes class indices only."""
    if isinstance(target, Tensor) and target.is_floating_point():
        raise ValueError(
            f"{name} takes class indices as target (an integer tensor), got a {target.dtype} tensor: "
            "of the objectives only cross_entropy takes probability targets (the registry's soft_targets)"
        )


def _plan(
    target: Tensor,
    soft: bool,
    num_classes: int,
    ignore_index: int,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    planner: Planner,
    min_classes: int,
    backend: str,
    fused: bool,
) -> tuple[Tensor, list[Segment]]:
    """Check the options; return (valid (...) bool, segments). Probability targets supervise every position
    (PyTorch has no ignore_index for them) against the whole vocabulary."""
    if num_classes < min_classes:
        raise ValueError(
            f"this objective needs at least {min_classes} classes (logits' last dim), got {num_classes}"
        )
    check_reduction_options(ignore_index, reduction)
    check_num_items(num_items_in_batch, reduction)
    if soft:
        valid = torch.ones(target.shape[:-1], dtype=torch.bool, device=target.device)
    else:
        check_target_range(target, num_classes, ignore_index)
        valid = target != ignore_index
    if target.device.type == "meta":  # no values to plan with (see `meta_token_loss`)
        return valid, []
    if soft:
        return valid, [Segment(rows=torch.arange(valid.numel(), device=valid.device), target=None)]
    return valid, planner(target, valid, num_classes, backend, fused)


def _backend_for(device: torch.device, dtype: torch.dtype, class_weight: Tensor | None, soft: bool) -> str:
    """The backend of this call: the Triton kernels take neither class weights nor probability targets,
    so such calls run the PyTorch engine on every device."""
    if class_weight is not None or soft:
        return "torch"
    return token_backend(device, dtype)


def _with_class_weight(
    token_math: TokenMath,
    class_weight: Tensor | None,
    num_classes: int,
    like: Tensor,
    dtype: torch.dtype,
    target: Tensor,
    soft: bool,
    valid: Tensor,
    *,
    what: str,
) -> tuple[TokenMath, Tensor | None]:
    """`token_math` with the checked class weights in the compute dtype, and the (T,) weight of each
    token's target class (0 where ignored), which a class-weighted "mean" divides by as PyTorch does; None
    for probability targets, whose "mean" divides by the number of positions (PyTorch's too). `what` names
    the weights in errors."""
    if class_weight is None:
        return token_math, None
    weights = check_class_weight(class_weight, num_classes, like, name=what).to(dtype)
    token_math = replace(token_math, class_weight=weights)
    if soft:
        return token_math, None
    classes = torch.where(valid, target, 0).reshape(-1).long()  # ignored tokens: a harmless class 0
    return token_math, weights.index_select(0, classes) * valid.reshape(-1)


def check_projection(hidden: Tensor, weight: Tensor, bias: Tensor | None, *, what: str = "hidden") -> int:
    """Check the output projection weight (V, H) and bias (V,) or None against `hidden` (..., H), named
    `what` in the errors; return V. Every fused-linear form (objectives, R-Drop, statistics) checks here."""
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        shape = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must have shape (V, {hidden.shape[-1]}) to match {what}, got {shape}")
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise ValueError(
            f"weight ({weight.dtype} on {weight.device}) must match "
            f"{what} ({hidden.dtype} on {hidden.device})"
        )
    if bias is not None and (
        not isinstance(bias, Tensor)
        or tuple(bias.shape) != (weight.shape[0],)
        or (bias.dtype, bias.device) != (weight.dtype, weight.device)
    ):
        got = f"{tuple(bias.shape)} {bias.dtype} on {bias.device}" if isinstance(bias, Tensor) else bias
        raise ValueError(f"bias must be ({weight.shape[0]},) {weight.dtype} on {weight.device}, got {got!r}")
    return weight.shape[0]
