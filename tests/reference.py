"""Naive reference implementations of tunekit's token-level losses.

Written directly from the formulas with plain autograd, for clarity rather than speed: every function
materialises full (tokens x vocab) tensors. The tests compare tunekit against these, and the benchmarks
import them by name, so keep the names and signatures stable.

Conventions shared by every reference:

* ``logits`` has shape (..., V) and ``target`` the leading shape (...); positions whose target equals
  ``ignore_index`` are ignored (loss 0, no gradient).
* half precision is upcast to float32; float64 stays float64.
* reduction ``"none"`` gives the per-token loss in the target's shape, ``"sum"`` the sum, ``"mean"`` the
  sum divided by the number of supervised tokens (0 when there is none). When ``num_items_in_batch`` is
  given (reduction ``"mean"`` or ``"sum"``), the result is the sum divided by it, 0 counting as 1.
"""

from __future__ import annotations

import torch

__all__ = ["REFERENCES", "ref_cross_entropy", "ref_dece_loss", "ref_smile_loss"]

_REDUCTIONS = ("none", "mean", "sum")
_SUBSETS = ("sequence", "random", "reverse")


def _upcast(logits: torch.Tensor) -> torch.Tensor:
    return logits if logits.dtype == torch.float64 else logits.float()


def _check_reduction(reduction: str, num_items_in_batch) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}")
    if num_items_in_batch is not None and reduction == "none":
        raise ValueError("num_items_in_batch needs reduction 'mean' or 'sum'")


def _scatter_rows(values: torch.Tensor, supervised: torch.Tensor) -> torch.Tensor:
    """Per-token losses of the supervised rows -> a tensor of ``supervised``'s shape, 0 elsewhere."""
    flat = values.new_zeros(supervised.numel())
    index = supervised.reshape(-1).nonzero().squeeze(-1)
    flat = flat.index_put((index,), values)
    return flat.reshape(supervised.shape)


def _reduce(per_token: torch.Tensor, supervised: torch.Tensor, reduction: str, num_items_in_batch):
    if reduction == "none":
        return per_token
    total = per_token.sum()
    if num_items_in_batch is not None:
        count = int(num_items_in_batch)
        if count < 0:
            raise ValueError("num_items_in_batch must not be negative")
        return total / max(count, 1)
    if reduction == "sum":
        return total
    return total / max(int(supervised.sum()), 1)


def ref_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
) -> torch.Tensor:
    """(1 - eps) * (-log p_y) + eps / V * sum_j (-log p_j), per supervised token."""
    _check_reduction(reduction, num_items_in_batch)
    z = _upcast(logits)
    vocab = z.shape[-1]
    supervised = target != ignore_index
    rows = z.reshape(-1, vocab)[supervised.reshape(-1)]
    labels = target.reshape(-1)[supervised.reshape(-1)]

    log_p = torch.log_softmax(rows, dim=-1)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    uniform = -log_p.sum(dim=-1) / vocab
    per_row = (1.0 - label_smoothing) * nll + label_smoothing * uniform

    per_token = _scatter_rows(per_row, supervised)
    return _reduce(per_token, supervised, reduction, num_items_in_batch)


def ref_dece_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    epoch: int,
    *,
    alpha_base: float = 0.985,
    label_smoothing: float = 0.05,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
) -> torch.Tensor:
    """DeCE: -sum_j t_j log(alpha * clamp(p_j, 1e-7, 1) + (1 - alpha) * t_j), alpha = alpha_base ** epoch.

    t is the smoothed one-hot target: 1 - eps on the label, eps / (V - 1) elsewhere.
    """
    _check_reduction(reduction, num_items_in_batch)
    z = _upcast(logits)
    vocab = z.shape[-1]
    supervised = target != ignore_index
    rows = z.reshape(-1, vocab)[supervised.reshape(-1)]
    labels = target.reshape(-1)[supervised.reshape(-1)]

    alpha = alpha_base**epoch
    t = torch.full_like(rows, label_smoothing / (vocab - 1))
    t = t.scatter(-1, labels.unsqueeze(-1), 1.0 - label_smoothing)
    p = torch.clamp(torch.softmax(rows, dim=-1), 1e-7, 1.0)
    q = alpha * p + (1.0 - alpha) * t
    per_row = -(t * torch.log(q)).sum(dim=-1)

    per_token = _scatter_rows(per_row, supervised)
    return _reduce(per_token, supervised, reduction, num_items_in_batch)


def smile_allowed_mask(
    labels: torch.Tensor,
    vocab: int,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Boolean (B, N, V) mask: the vocabulary ids each position's softmax is restricted to."""
    if subset not in _SUBSETS:
        raise ValueError(f"unknown subset {subset!r}")
    batch, length = labels.shape
    supervised = labels != ignore_index
    safe_labels = torch.where(supervised, labels, torch.zeros_like(labels))
    own_label = torch.zeros(batch, length, vocab, dtype=torch.bool, device=labels.device)
    own_label.scatter_(-1, safe_labels.unsqueeze(-1), True)

    # ids occurring among each sequence's supervised labels
    in_sequence = (own_label & supervised.unsqueeze(-1)).any(dim=1)  # (B, V)

    if subset == "sequence":
        allowed = in_sequence.unsqueeze(1).expand(batch, length, vocab).clone()
    elif subset == "random":
        draws = torch.randint(vocab, (batch, length, num_random), generator=generator, device=labels.device)
        allowed = own_label.clone()
        allowed.scatter_(-1, draws, True)
    else:  # reverse
        allowed = (~in_sequence).unsqueeze(1).expand(batch, length, vocab) | own_label

    if first_token_mle:
        for b in range(batch):
            positions = supervised[b].nonzero()
            if len(positions):
                allowed[b, int(positions[0])] = True
    return allowed


def ref_smile_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """SMILE: cross-entropy with each position's softmax restricted to a vocabulary subset.

    logits (B, N, V), labels (B, N). See ``smile_allowed_mask`` for the subsets; with ``"random"`` the
    ids are drawn by one ``torch.randint(V, (B, N, num_random), generator=generator)`` call.
    """
    _check_reduction(reduction, num_items_in_batch)
    if logits.dim() != 3 or labels.dim() != 2:
        raise ValueError("smile expects logits (B, N, V) and labels (B, N)")
    z = _upcast(logits)
    vocab = z.shape[-1]
    allowed = smile_allowed_mask(
        labels,
        vocab,
        subset=subset,
        num_random=num_random,
        first_token_mle=first_token_mle,
        ignore_index=ignore_index,
        generator=generator,
    )
    supervised = labels != ignore_index
    rows = z[supervised]  # only supervised rows: an ignored row's subset may be empty
    row_allowed = allowed[supervised]
    row_labels = labels[supervised]

    restricted = rows.masked_fill(~row_allowed, float("-inf"))
    log_p = torch.log_softmax(restricted, dim=-1)
    per_row = -log_p.gather(-1, row_labels.unsqueeze(-1)).squeeze(-1)

    per_token = _scatter_rows(per_row, supervised)
    return _reduce(per_token, supervised, reduction, num_items_in_batch)


# registry name (tunekit.losses.TOKEN_LOSSES) -> reference of the logits form
REFERENCES = {
    "cross_entropy": ref_cross_entropy,
    "dece": ref_dece_loss,
    "smile": ref_smile_loss,
}
