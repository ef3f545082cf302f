"""The one place where ignored tokens, `reduction` and `num_items_in_batch` turn per-token losses into a loss.

Every token-level objective reduces through `token_weights`: the reduced loss is `sum_i w_i * loss_i`
with `w_i = 0` at ignored tokens and

- ``reduction="sum"``: ``w_i = 1``;
- ``reduction="mean"``: ``w_i = 1 / max(1, number of supervised tokens)``;
- ``num_items_in_batch=n`` (with "mean" or "sum"): ``w_i = 1 / max(1, n)``, the Hugging Face convention that
  keeps gradient accumulation exact (the caller counts the supervised tokens of the whole global batch);
- ``reduction="none"``: ``w_i = 1`` and the per-token losses are returned, 0 at ignored tokens.

An all-ignored batch therefore gives exactly 0 and a zero gradient, never 0/0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_weights(
    valid: Tensor, reduction: str, num_items_in_batch: int | Tensor | None, dtype: torch.dtype
) -> Tensor:
    """(T,) weights of the tokens in the reduced loss, from `valid` (T,) bool; see the module docstring."""
    weights = valid.to(dtype)
    if reduction == "none":
        return weights
    if num_items_in_batch is not None:
        denominator = torch.as_tensor(num_items_in_batch, device=valid.device).to(dtype)
        return weights / denominator.clamp_min(1)
    if reduction == "mean":
        return weights / weights.sum().clamp_min(1)
    return weights


def reduce_token_losses(per_token: Tensor, weights: Tensor, reduction: str, shape: torch.Size) -> Tensor:
    """Per-token losses (T,) (0 where ignored) reduced with `token_weights`; 'none' keeps their shape."""
    if reduction == "none":
        return per_token.reshape(shape)
    return per_token @ weights
