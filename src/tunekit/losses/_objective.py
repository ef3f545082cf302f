"""Entry points shared by every token-level objective: validate, plan the segments, run the engine.

An objective is its per-token math (`token_math.py`) plus, for SMILE, a planner that says which vocabulary
columns each token is scored against; both its logits form and its fused-linear form go through here. Both
run eagerly inside a `torch.compile`d caller, and give a stand-in of the loss's shape on the meta device
(see `_engine.py`). `_backend.py` chooses, per call, the PyTorch engine or the Triton kernels; planners plan
for the chosen one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ._backend import token_backend
from ._checks import (
    check_logits_and_target,
    check_num_items,
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
) -> Tensor:
    """Loss of logits (..., V) against target (...), reduced as `_reduction` says; `name` is the objective's,
    for errors."""
    num_classes = check_logits_and_target(logits, target)
    backend = token_backend(logits.device, compute_dtype_for(logits))
    valid, segments = _plan(
        target, num_classes, ignore_index, reduction, num_items_in_batch, planner, min_classes, backend, False
    )
    if logits.device.type == "meta":
        per_token = logits.to(compute_dtype_for(logits)).sum(-1)
        return meta_token_loss(per_token, valid, reduction, num_items_in_batch)
    return chunked_token_loss(
        (logits,),
        lambda inputs, needs: LogitsSource(inputs[0], needs[0], segments),
        segments,
        token_math,
        name=name,
        valid=valid,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        shape=target.shape,
        backend=backend,
        target=target,
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
) -> Tensor:
    """Loss of the logits `hidden @ weight.T + bias`, never materialised: hidden (..., H), weight (V, H)."""
    check_logits_and_target(hidden, target, what="hidden")
    num_classes = check_projection(hidden, weight, bias)
    backend = token_backend(hidden.device, compute_dtype_for(hidden, weight, bias))
    valid, segments = _plan(
        target, num_classes, ignore_index, reduction, num_items_in_batch, planner, min_classes, backend, True
    )
    if hidden.device.type == "meta":
        per_token = F.linear(hidden, weight, bias).to(compute_dtype_for(hidden, weight, bias)).sum(-1)
        return meta_token_loss(per_token, valid, reduction, num_items_in_batch)
    return chunked_token_loss(
        (hidden, weight, bias),
        lambda inputs, needs: LinearSource(*inputs, needs),
        segments,
        token_math,
        name=name,
        valid=valid,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        shape=target.shape,
        backend=backend,
        target=target,
    )


def _plan(
    target: Tensor,
    num_classes: int,
    ignore_index: int,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    planner: Planner,
    min_classes: int,
    backend: str,
    fused: bool,
) -> tuple[Tensor, list[Segment]]:
    if num_classes < min_classes:
        raise ValueError(
            f"this objective needs at least {min_classes} classes (logits' last dim), got {num_classes}"
        )
    check_reduction_options(ignore_index, reduction)
    check_num_items(num_items_in_batch, reduction)
    check_target_range(target, num_classes, ignore_index)
    valid = target != ignore_index
    if target.device.type == "meta":  # no values to plan with (see `meta_token_loss`)
        return valid, []
    return valid, planner(target, valid, num_classes, backend, fused)


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
