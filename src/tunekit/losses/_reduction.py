"""The one place where ignored items, `reduction` and `num_items_in_batch` turn per-item losses into a loss.

Every objective reduces through `token_weights` (the chunked token objectives directly, the others through
`reduce_losses`); an item is a token, a classified element, a dice term or a position of R-Drop. The reduced
loss is `sum_i w_i * loss_i` with `w_i = 0` at ignored tokens and

- ``reduction="sum"``: ``w_i = 1``;
- ``reduction="mean"``: ``w_i = 1 / max(1, number of supervised tokens)``; with class weights
  (`target_weight`, the weight of each token's target class), ``w_i = 1 / sum_j target_weight_j`` over the
  supervised tokens, as ``F.cross_entropy(weight=...)`` divides (a sum of 0 counts as 1);
- ``num_items_in_batch=n`` (with "mean" or "sum"): ``w_i = 1 / max(1, n)``, the Hugging Face convention that
  keeps gradient accumulation exact (the caller counts the supervised tokens of the whole global batch);
- ``reduction="none"``: ``w_i = 1`` and the per-token losses are returned, 0 at ignored tokens.

An all-ignored batch therefore gives exactly 0 and a zero gradient, never 0/0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_weights(
    valid: Tensor,
    reduction: str,
    num_items_in_batch: int | Tensor | None,
    dtype: torch.dtype,
    target_weight: Tensor | None = None,
) -> Tensor:
    """(T,) weights of the tokens in the reduced loss, from `valid` (T,) bool and, for class-weighted
    objectives, `target_weight` (T,) (0 where not valid); see the module docstring."""
    weights = valid.to(dtype)
    if reduction == "none":
        return weights
    if num_items_in_batch is not None:
        denominator = torch.as_tensor(num_items_in_batch, device=valid.device).to(dtype)
        return weights / denominator.clamp_min(1)
    if reduction == "mean":
        if target_weight is None:
            return weights / weights.sum().clamp_min(1)
        denominator = target_weight.sum()  # may be negative, as PyTorch's weights may
        return weights / torch.where(denominator == 0, 1, denominator)
    return weights


def reduce_token_losses(per_token: Tensor, weights: Tensor, reduction: str, shape: torch.Size) -> Tensor:
    """Per-token losses (T,) (0 where ignored) reduced with `token_weights`; 'none' keeps their shape."""
    if reduction == "none":
        return per_token.reshape(shape)
    return per_token @ weights


def reduce_losses(
    losses: Tensor,
    valid: Tensor | None,
    reduction: str,
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Per-item losses (...) reduced with `token_weights`; `valid` (...) bool marks the supervised items
    (None: all). 'none' returns the losses with 0 where not valid. The losses must be finite where not
    valid: their gradient there is zeroed, not NaN-proofed."""
    if valid is None:
        valid = torch.ones(losses.shape, dtype=torch.bool, device=losses.device)
    else:
        losses = torch.where(valid, losses, 0)
    weights = token_weights(valid.reshape(-1), reduction, num_items_in_batch, losses.dtype)
    return reduce_token_losses(losses.reshape(-1), weights, reduction, losses.shape)
