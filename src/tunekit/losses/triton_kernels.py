"""Triton kernels of the token-level objectives: one program per token row, the vocabulary in blocks.

`token_rows` runs the per-token math of `token_math.py` (cross-entropy with label smoothing, GCE, DeCE) on
rows of logits: an online softmax over the row in blocks (Milakov & Gimelshein 2018, as Liger-Kernel does),
then a pass that writes the gradient of ``grad_scale_r * loss_r`` straight into its destination (which may
be the logits' own buffer: the fused forms write it in place of the chunk of ``hidden @ weight.T``). DeCE's
gradient needs a row sum of the mixed probabilities, so it reads its row three times; the others twice.
Inputs are read in their own dtype (fp16 / bf16 / fp32) and computed in fp32.

Rows are addressed through an optional row index, so the logits of the supervised tokens are read where
they are (no gather), and through a mask (-inf at the columns to drop, 0 elsewhere; never applied at
the target), so SMILE's subsets are rows of the same kernel. A negative target marks an ignored row:
loss 0, gradient 0.

Imported only on the Triton backend (see `_backend.py`). Without a GPU the kernels run in Triton's
interpreter (``TRITON_INTERPRET=1``, numpy installed), which is how the test suite checks them.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

from .token_math import DECE_PROB_FLOOR, TokenMath

OBJECTIVES = {"cross_entropy": 0, "gce": 1, "dece": 2}
# Largest block of the vocabulary one program holds in registers at a time.
MAX_BLOCK = 8192


@triton.jit
def _expm1(x):
    """exp(x) - 1, accurate near 0 by Kahan's trick (exp and log only); away from 0 plainly, where exp(x)
    may be denormal and its log inexact."""
    u = tl.exp(x)
    near_zero = tl.where(u == 1.0, x, (u - 1.0) * x / tl.log(u))
    return tl.where(tl.abs(x) < 0.5, near_zero, u - 1.0)


@triton.jit
def _load_block(z_row, mask_row, offsets, num_classes, y, HAS_MASK: tl.constexpr):
    """The row's logits at `offsets` in fp32 (-inf past the row), and which offsets lie inside it. Where
    the row's mask drops a column (never at the target y) the logit is replaced by -inf, not added to, so
    that a dropped +inf or NaN logit counts for nothing, as in a gathered subset."""
    inside = offsets < num_classes
    x = tl.load(z_row + offsets, mask=inside, other=float("-inf")).to(tl.float32)
    if HAS_MASK:
        dropped = tl.load(mask_row + offsets, mask=inside, other=0.0) == float("-inf")
        x = tl.where(dropped & (offsets != y), float("-inf"), x)
    return x, inside


@triton.jit
def _dece_terms(p, is_target, on_label, off_label, alpha, prob_floor):
    """DeCE's t_j, q_j = alpha max(p_j, floor) + (1 - alpha) t_j and r_j = p_j / q_j (0 below the floor).
    A NaN probability (NaN or +inf logits) must reach the loss, as it does in PyTorch."""
    t = tl.where(is_target, on_label, off_label)
    mixed = alpha * tl.maximum(p, prob_floor, propagate_nan=tl.PropagateNan.ALL) + (1.0 - alpha) * t
    ratio = tl.where(p > prob_floor, p / mixed, 0.0)
    return t, mixed, ratio


@triton.jit
def _token_rows_kernel(
    z_ptr,
    z_outer_stride,
    z_inner_size,
    z_inner_stride,
    rows_ptr,
    target_ptr,
    mask_ptr,
    mask_rows_ptr,
    mask_stride,
    scale_ptr,
    loss_ptr,
    grad_ptr,
    grad_stride,
    num_classes,
    label_smoothing,
    param,
    prob_floor,
    OBJECTIVE: tl.constexpr,
    HAS_ROWS: tl.constexpr,
    HAS_MASK: tl.constexpr,
    MASK_ROWS: tl.constexpr,
    HAS_GRAD: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row = pid
    if HAS_ROWS:
        row = tl.load(rows_ptr + pid).to(tl.int64)
    # z row r at (r // inner_size) * outer + (r % inner_size) * inner: a (B, N, V) slice such as
    # logits[:, :-1] is read where it is
    z_row = z_ptr + (row // z_inner_size) * z_outer_stride + (row % z_inner_size) * z_inner_stride
    grad_row = grad_ptr + row * grad_stride
    y = tl.load(target_ptr + pid).to(tl.int64)
    cols = tl.arange(0, BLOCK)

    if y < 0:  # ignored: loss 0, gradient 0
        tl.store(loss_ptr + pid, 0.0)
        if HAS_GRAD:
            for start in range(0, num_classes, BLOCK):
                offsets = start + cols
                tl.store(grad_row + offsets, tl.zeros([BLOCK], tl.float32), mask=offsets < num_classes)
        return

    mask_row = mask_ptr
    if HAS_MASK:
        if MASK_ROWS:
            mask_row = mask_ptr + tl.load(mask_rows_ptr + pid).to(tl.int64) * mask_stride
        else:
            mask_row = mask_ptr + pid * mask_stride

    # pass 1: running max m and sum d of exp(z - m); the target's logit (never masked) starts m finite
    z_y = tl.load(z_row + y).to(tl.float32)
    m = z_y
    d = 0.0
    z_sum = 0.0
    for start in range(0, num_classes, BLOCK):
        x, inside = _load_block(z_row, mask_row, start + cols, num_classes, y, HAS_MASK)
        block_max = tl.max(x, 0)
        m_new = tl.maximum(m, block_max)
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
        if OBJECTIVE == 0:
            z_sum += tl.sum(tl.where(inside, x, 0.0), 0)
    # the row's log-partition is m + log_d, kept apart: z - m and z_y - m are exact-ish differences, where
    # z_y - (m + log_d) would cancel two large numbers (saturated logits)
    log_d = tl.log(d)

    on_label = 1.0 - label_smoothing
    off_label = 0.0
    if OBJECTIVE == 2:  # DeCE spreads eps over the other K - 1 >= 1 classes
        off_label = label_smoothing / (num_classes - 1)
    gce_scale = 0.0
    ratio_sum = 0.0
    if OBJECTIVE == 0:  # loss = lse - (1 - eps) z_y - eps / K sum_j z_j
        loss = log_d + on_label * (m - z_y)
        if label_smoothing != 0.0:  # (SMILE's masked -inf would make 0 * -inf)
            loss += label_smoothing * (m - z_sum / num_classes)
    elif OBJECTIVE == 1:  # loss = (1 - p_y^q) / q, p_y^q from log p_y
        q_log_p = param * ((z_y - m) - log_d)
        loss = -_expm1(q_log_p) / param
        gce_scale = tl.exp(q_log_p)
    else:  # pass 2 (DeCE): loss = -sum_j t_j log q_j and S = sum_j t_j r_j
        log_sum = 0.0
        for start in range(0, num_classes, BLOCK):
            offsets = start + cols
            x, inside = _load_block(z_row, mask_row, offsets, num_classes, y, False)
            t, mixed, ratio = _dece_terms(
                tl.exp((x - m) - log_d), offsets == y, on_label, off_label, param, prob_floor
            )
            log_sum += tl.sum(tl.where(inside, t * tl.log(mixed), 0.0), 0)
            ratio_sum += tl.sum(tl.where(inside, t * ratio, 0.0), 0)
        loss = -log_sum
    tl.store(loss_ptr + pid, loss)

    if HAS_GRAD:  # the last pass: d (scale * loss) / d z, written over the destination row
        scale = tl.load(scale_ptr + pid).to(tl.float32)
        for start in range(0, num_classes, BLOCK):
            offsets = start + cols
            x, inside = _load_block(z_row, mask_row, offsets, num_classes, y, HAS_MASK)
            p = tl.exp((x - m) - log_d)
            is_target = offsets == y
            if OBJECTIVE == 0:
                grad = p - label_smoothing / num_classes - tl.where(is_target, on_label, 0.0)
                grad = grad * scale
            elif OBJECTIVE == 1:
                grad = (p - tl.where(is_target, 1.0, 0.0)) * (scale * gce_scale)
            else:
                t, _, ratio = _dece_terms(p, is_target, on_label, off_label, param, prob_floor)
                grad = (p * ratio_sum - t * ratio) * (scale * param)
            tl.store(grad_row + offsets, grad.to(grad_ptr.dtype.element_ty), mask=inside)


def token_rows(
    math: TokenMath,
    z: Tensor,
    target: Tensor,
    *,
    rows: Tensor | None = None,
    mask: Tensor | None = None,
    mask_rows: Tensor | None = None,
    grad_scale: Tensor | None = None,
    grad: Tensor | None = None,
) -> Tensor:
    """Per-token losses (R,) fp32 of the rows of z, and their gradients written into `grad`.

    z: (N, K) or (B, N, K) logits in any float dtype with a unit last stride (rows of a 3-D z count over
        its first two dims, as ``z.view(-1, K)`` would); target: (R,) int64 index among the K columns, or
        negative for an ignored row; rows: (R,) int64 row of z of each token, None for the first R rows.
    mask: (M, K) float, -inf at the columns to drop and 0 elsewhere (never applied at the target), read
        at row ``mask_rows[r]``, or at row r when mask_rows is None.
    grad_scale, grad: with a gradient, (R,) fp32 scale of each token's loss and a 2-D contiguous-rows
        destination written at the same rows as z (it may be z itself: in place).
    """
    num_classes = z.shape[-1]
    if z.stride(-1) != 1:
        raise ValueError("token_rows needs logits with a unit stride along the vocabulary")
    if z.dim() == 2:
        outer, inner_size, inner = 0, max(1, z.shape[0]), z.stride(0)
    else:
        outer, inner_size, inner = z.stride(0), max(1, z.shape[1]), z.stride(1)
    count = target.numel()
    loss = torch.empty(count, dtype=torch.float32, device=z.device)
    if count == 0:
        return loss
    block = min(triton.next_power_of_2(num_classes), MAX_BLOCK)
    has_grad = grad is not None
    dummy = loss  # pointers the kernel never reads under its flags
    with _on(z.device):  # Triton launches on the current CUDA device, whatever the tensors' device
        _token_rows_kernel[(count,)](
            z,
            outer,
            inner_size,
            inner,
            dummy if rows is None else rows,
            target,
            dummy if mask is None else mask,
            dummy if mask_rows is None else mask_rows,
            0 if mask is None else mask.stride(0),
            grad_scale if has_grad else dummy,
            loss,
            grad if has_grad else dummy,
            grad.stride(0) if has_grad else 0,
            num_classes,
            math.label_smoothing,
            math.param,
            DECE_PROB_FLOOR,
            OBJECTIVE=OBJECTIVES[math.kind],
            HAS_ROWS=rows is not None,
            HAS_MASK=mask is not None,
            MASK_ROWS=mask_rows is not None,
            HAS_GRAD=has_grad,
            BLOCK=block,
            num_warps=_num_warps(block),
        )
    return loss


def _on(device: torch.device):
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _num_warps(block: int) -> int:
    return 4 if block <= 1024 else 8 if block <= 4096 else 16
