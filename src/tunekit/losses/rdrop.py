"""R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): run the same batch through
the model twice with dropout on and penalise the symmetric KL divergence between the two predictions.

Recipe, with any tunekit objective (or ``F.cross_entropy``) as the task loss::

    logits_a = model(**batch).logits                 # two forward passes in train mode:
    logits_b = model(**batch).logits                 # different dropout masks
    shifted = labels[:, 1:]                          # causal LM: position t predicts token t + 1
    task = 0.5 * (dece_loss(logits_a[:, :-1], shifted, epoch) + dece_loss(logits_b[:, :-1], shifted, epoch))
    loss = task + rdrop_weight * rdrop_kl(logits_a[:, :-1], logits_b[:, :-1], pad_mask=shifted == -100)

For sequence classification drop the shifting and the pad mask. The paper's code sums the KL over every
position and class (``reduction="sum"`` here) and tunes its weight (its alpha) on that scale; "mean" divides
that sum by the number of unpadded positions, so ``rdrop_weight`` with "mean" corresponds to the paper's
alpha times the number of positions in a batch. Both passes receive the KL's gradient, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import _engine
from ._checks import REDUCTIONS, check_choice, check_float_tensor, check_num_items, check_same_shape, describe
from ._dtypes import compute_dtype_for, upcast
from ._engine import LinearSource, _ChunkedTokenLoss, eager_under_compile, meta_token_loss
from ._objective import check_projection
from ._reduction import reduce_losses, reduce_token_losses, token_weights
from ._workspace import Workspace


def rdrop_kl(
    logits_a: Tensor,
    logits_b: Tensor,
    *,
    pad_mask: Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Symmetric KL divergence between the softmax distributions of two forward passes, per position::

        log_p, log_q = log_softmax(logits_a), log_softmax(logits_b)   # over the last axis
        kl = (KL(p || q) + KL(q || p)) / 2 = ((p - q) * (log_p - log_q)).sum(-1) / 2

    Args:
        logits_a: (..., V) float tensor, e.g. (B, C) or (B, N, V); fp16/bf16 are computed in fp32, the
            gradients come back in their dtype. A class masked with -inf in both passes contributes 0.
        logits_b: the second pass, of ``logits_a``'s shape.
        pad_mask: (...) bool, True at positions that do not count (padding, ignored labels), e.g. (B, N)
            for (B, N, V) logits; it broadcasts over the vocabulary. None: every position counts.
        reduction: "mean" over the positions that count, "sum" (the paper's), or "none" ((...), 0 at
            padding).
        num_items_in_batch: if given, the summed KL is divided by it (Hugging Face's convention).

    Example::

        >>> import torch
        >>> round(rdrop_kl(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, 0.2, -0.3])).item(), 6)
        0.10181
    """
    valid = _check_pair(
        "logits", "class axis (..., V)", logits_a, logits_b, pad_mask, reduction, num_items_in_batch
    )
    log_p = upcast(logits_a).log_softmax(dim=-1)
    log_q = upcast(logits_b).log_softmax(dim=-1)
    log_ratio = log_p - log_q
    # a class masked with -inf logits in both passes has p = q = 0 and adds nothing (not -inf - -inf = NaN)
    log_ratio = torch.where(log_ratio.isnan(), 0, log_ratio)
    kl = 0.5 * ((log_p.exp() - log_q.exp()) * log_ratio).sum(dim=-1)
    return reduce_losses(kl, valid, reduction, num_items_in_batch)


def linear_rdrop_kl(
    hidden_a: Tensor,
    hidden_b: Tensor,
    weight: Tensor,
    *,
    bias: Tensor | None = None,
    pad_mask: Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """`rdrop_kl` of the two passes' logits ``hidden @ weight.T + bias``, never materialised::

        rdrop_kl(F.linear(hidden_a, weight, bias), F.linear(hidden_b, weight, bias), pad_mask=pad_mask, ...)

    The positions that count are walked a chunk of rows at a time (the fused objectives' chunk budget), so
    memory is O(chunk x V) beyond the gradients; autograd keeps nothing logits-sized.

    Args:
        hidden_a: (..., H) float tensor, the last hidden states of the first pass, e.g. (B, N, H) (shifted
            for a causal LM: ``hidden[:, :-1]``); fp16/bf16 are computed in fp32, the gradients come back
            in their dtype.
        hidden_b: the second pass's, of ``hidden_a``'s shape and dtype.
        weight: (V, H) the output projection (``lm_head.weight``), of hidden's dtype and device; its
            gradient is accumulated in fp32.
        bias: (V,) or None.
        pad_mask: as in `rdrop_kl`, of shape (...), e.g. (B, N).
        reduction: as in `rdrop_kl`.
        num_items_in_batch: as in `rdrop_kl`.

    Example::

        >>> import torch
        >>> hidden_a, hidden_b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.2]])
        >>> weight = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 1.0]])  # (V, H) = (3, 2)
        >>> round(linear_rdrop_kl(hidden_a, hidden_b, weight).item(), 6)
        0.10181
    """
    valid = _check_pair(
        "hidden", "hidden axis (..., H)", hidden_a, hidden_b, pad_mask, reduction, num_items_in_batch
    )
    num_classes = check_projection(hidden_a, weight, bias, what="hidden_a")
    check_projection(hidden_b, weight, bias, what="hidden_b")
    if num_classes == 0:
        raise ValueError(f"weight must have at least one row (a class), got shape {tuple(weight.shape)}")
    if valid is None:
        valid = torch.ones(hidden_a.shape[:-1], dtype=torch.bool, device=hidden_a.device)
    return _chunked_rdrop_kl((hidden_a, hidden_b, weight, bias), valid, reduction, num_items_in_batch)


@eager_under_compile
def _chunked_rdrop_kl(
    inputs: tuple[Tensor, Tensor, Tensor, Tensor | None],
    valid: Tensor,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
) -> Tensor:
    """`linear_rdrop_kl` of checked inputs (hidden_a, hidden_b, weight, bias); valid (...) bool."""
    dtype = compute_dtype_for(inputs[0], *inputs[2:])  # hidden_a, weight, bias
    if valid.device.type == "meta":  # no values to chunk: a stand-in of the result's shape and graph
        hidden_a, hidden_b, weight, bias = inputs
        per_position = (F.linear(hidden_a, weight, bias) + F.linear(hidden_b, weight, bias)).to(dtype).sum(-1)
        return meta_token_loss(per_position, valid, reduction, num_items_in_batch)
    job = _RDropJob(rows=valid.reshape(-1).nonzero().squeeze(1), dtype=dtype)
    weights = token_weights(valid.reshape(-1), reduction, num_items_in_batch, dtype)
    needs = tuple(t is not None and t.requires_grad and torch.is_grad_enabled() for t in inputs)
    if not any(needs):  # evaluation: no gradient buffers, no gradient work
        losses, _ = job.run(inputs, None, needs)
        return reduce_token_losses(losses, weights, reduction, valid.shape)
    # The engine's Function: the gradient is computed during forward and kept (O(hidden + weight)), as the
    # fused objectives do. Recomputing each chunk in backward (torch.utils.checkpoint) would repeat its two
    # (rows x H) @ (H x V) products (8 in all instead of 6) and the softmax passes, and run autograd's
    # elementwise backward: 1.7x the time on CPU (T=2048, H=512, V=32000 fp32). The gradient is deferred to
    # backward where the incoming gradient must be known (reduction="none", fp16), as the engine does.
    return _ChunkedTokenLoss.apply(job, weights, reduction, valid.shape, needs, *inputs)


@dataclass
class _RDropJob:
    """One chunked pass over the positions that count, with the interface `_ChunkedTokenLoss` runs; like
    the engine's jobs it holds no reference to the inputs (hidden_a, hidden_b, weight, bias)."""

    rows: Tensor  # (R,) int64 flat indices of the positions that count, increasing
    dtype: torch.dtype
    name: str = "linear_rdrop_kl"
    statistics: None = None  # nothing to record: the engine's jobs have statistics

    def run(
        self, inputs: tuple[Tensor | None, ...], weights: Tensor | None, needs: tuple[bool, ...]
    ) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        """Per-position KL (T,) (0 at padding) and, where `needs` (hidden_a, hidden_b, weight, bias), the
        gradients of sum_i w_i kl_i."""
        hidden_a, hidden_b, weight, bias = inputs
        need_grad = any(needs)
        num_positions = hidden_a.shape[:-1].numel()
        # one source for both passes: pass a's rows, then pass b's, read as one (2c, H) @ (H, V) product
        hidden = torch.stack((hidden_a, hidden_b))  # [2, ..., H]
        source = LinearSource(hidden, weight, bias, (needs[0] or needs[1], *needs[2:]))
        workspace = Workspace(hidden.device)
        losses = torch.zeros(num_positions, dtype=self.dtype, device=hidden.device)
        step = max(1, source.chunk_rows(source.num_classes, per_row=False) // 2)  # positions per chunk
        for start in range(0, self.rows.numel(), step):
            rows = self.rows[start : start + step]
            both = torch.cat((rows, rows + num_positions))  # [2c]: the rows of pass a, then of pass b
            z, chunk = source.read(both, None, None, workspace)  # [2c, V] scratch in the compute dtype
            scale = weights.index_select(0, rows) if need_grad else None
            losses.index_copy_(0, rows, _symmetric_kl_in_pieces(z, scale, workspace))
            if need_grad:  # z now holds d sum(scale * kl) / dz
                source.backprop(both, None, z, chunk, None, workspace)
        if not need_grad:
            return losses, ()
        grad_hidden, grad_weight, grad_bias = source.grads()
        grad_a = grad_hidden[0] if needs[0] else None
        grad_b = grad_hidden[1] if needs[1] else None
        return losses, (grad_a, grad_b, grad_weight, grad_bias)


def _symmetric_kl_in_pieces(z: Tensor, grad_scale: Tensor | None, workspace: Workspace) -> Tensor:
    """kl (c,) of the logits z (2c, V), pass a's c rows then pass b's, in pieces that stay in cache (as the
    engine's math does); with `grad_scale` (c,), z is overwritten with d sum(grad_scale * kl) / dz."""
    num_rows = z.shape[0] // 2
    z_a, z_b = z[:num_rows], z[num_rows:]
    piece_rows = max(1, _engine.CHUNK_ELEMENTS // (2 * z.shape[1]))
    kl = z.new_empty(num_rows)
    for start in range(0, num_rows, piece_rows):
        piece = slice(start, start + piece_rows)
        scale = None if grad_scale is None else grad_scale[piece]
        kl[piece] = _symmetric_kl(z_a[piece], z_b[piece], scale, workspace)
    return kl


def _symmetric_kl(z_a: Tensor, z_b: Tensor, grad_scale: Tensor | None, workspace: Workspace) -> Tensor:
    """R-Drop's math for R positions: logits z_a, z_b (R, V) of the two passes, scratch in the compute dtype.

        p, q = softmax(z_a), softmax(z_b);  r = log p - log q
        kl = ((p - q) * r).sum(-1) / 2                                  (R,), each term >= 0
        d kl / d z_a = (p * (r - <p, r>) + p - q) / 2
        d kl / d z_b = -(q * (r - <q, r>) + p - q) / 2

    from d KL(p||q) / d z_a = p * (r - KL(p||q)) and d KL(q||p) / d z_a = p - q (and the same with a and b,
    p and q swapped, r negated). With `grad_scale` (R,), z_a and z_b are overwritten with the gradient of
    sum(grad_scale * kl).
    """
    log_p, p = _log_softmax_and_softmax(z_a, "a", workspace)
    log_q, q = _log_softmax_and_softmax(z_b, "b", workspace)
    log_ratio = log_p.sub_(log_q)  # r
    diff = torch.sub(p, q, out=log_q)  # p - q (log q is no longer needed)
    kl = _row_dot(diff, log_ratio, workspace).mul_(0.5)
    if grad_scale is None:
        return kl
    half = grad_scale.unsqueeze(1) * 0.5  # [R, 1]
    p_dot = _row_dot(p, log_ratio, workspace).unsqueeze(1)
    torch.sub(log_ratio, p_dot, out=z_a).mul_(p).add_(diff).mul_(half)
    q_dot = _row_dot(q, log_ratio, workspace).unsqueeze(1)
    torch.sub(log_ratio, q_dot, out=z_b).mul_(q).add_(diff).mul_(-half)
    return kl


def _log_softmax_and_softmax(z: Tensor, name: str, workspace: Workspace) -> tuple[Tensor, Tensor]:
    """log_softmax(z) and softmax(z) (R, V) in workspace buffers, from one exp pass; z is left as it is."""
    row_max = z.amax(dim=-1, keepdim=True)
    log_p = torch.sub(z, row_max, out=workspace.like(f"log_{name}", z))
    p = torch.exp(log_p, out=workspace.like(name, z))
    total = p.sum(dim=-1, keepdim=True)
    return log_p.sub_(total.log()), p.div_(total)


def _row_dot(x: Tensor, y: Tensor, workspace: Workspace) -> Tensor:
    """(x * y).sum(-1) of x, y (R, V), the product in a workspace buffer."""
    return torch.mul(x, y, out=workspace.like("product", x)).sum(dim=-1)


def _check_pair(
    what: str,
    axis: str,
    a: Tensor,
    b: Tensor,
    pad_mask: Tensor | None,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
) -> Tensor | None:
    """The checks of `rdrop_kl` (what="logits") and `linear_rdrop_kl` (what="hidden"): {what}_a and
    {what}_b (..., last axis) of one shape, pad_mask (...); returns the positions that count, or None."""
    name_a, name_b = f"{what}_a", f"{what}_b"
    check_choice("reduction", reduction, REDUCTIONS)
    check_num_items(num_items_in_batch, reduction)
    check_float_tensor(name_a, a)
    check_same_shape(name_a, a, name_b, b)
    check_float_tensor(name_b, b)
    if a.dim() == 0 or a.shape[-1] == 0:
        raise ValueError(f"{name_a} must have a non-empty {axis}, got shape {tuple(a.shape)}")
    if pad_mask is None:
        return None
    if not isinstance(pad_mask, Tensor) or pad_mask.dtype != torch.bool:
        raise ValueError(
            "pad_mask must be a bool tensor, True where a position does not count (an attention mask "
            f"is the opposite: pass attention_mask == 0), got {describe(pad_mask)}"
        )
    check_same_shape(f"{name_a}[..., 0]", a[..., 0], "pad_mask", pad_mask)
    return ~pad_mask


class RDropLoss(nn.Module):
    """Module form of `rdrop_kl`: holds the reduction, `forward` calls the function."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction

    def forward(
        self,
        logits_a: Tensor,
        logits_b: Tensor,
        pad_mask: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        return rdrop_kl(
            logits_a,
            logits_b,
            pad_mask=pad_mask,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
