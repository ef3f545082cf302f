"""Naive reference implementations of tunekit's objectives: the token-level losses, then the classification
and regression objectives (which compute in float64, item by item).

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

__all__ = [
    "CLASSIFICATION_REFERENCES",
    "REFERENCES",
    "ref_binary_focal_loss",
    "ref_cross_entropy",
    "ref_dece_loss",
    "ref_dice_loss",
    "ref_focal_loss",
    "ref_gce_loss",
    "ref_mse_corr_loss",
    "ref_rdrop_kl",
    "ref_smile_loss",
]

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
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
) -> torch.Tensor:
    """Per supervised token, with class weights w (1 when None):
    class ids y: (1 - eps) * w_y * (-log p_y) + eps / V * sum_j w_j * (-log p_j);
    probability targets t (the logits' shape, every position supervised):
    -sum_j w_j ((1 - eps) t_j + eps/V) log p_j.
    "mean" divides by the sum of w_y over the supervised tokens (0 counting as 1), or for probability
    targets by the number of positions."""
    _check_reduction(reduction, num_items_in_batch)
    z = _upcast(logits)
    vocab = z.shape[-1]
    w = torch.ones(vocab, dtype=z.dtype) if weight is None else weight.to(z.dtype)
    if target.is_floating_point():
        log_p = torch.log_softmax(z, dim=-1)
        smoothed = (1.0 - label_smoothing) * target.to(z.dtype) + label_smoothing / vocab
        per_token = -(w * smoothed * log_p).sum(dim=-1)
        supervised = torch.ones(per_token.shape, dtype=torch.bool)
        return _reduce(per_token, supervised, reduction, num_items_in_batch)

    supervised = target != ignore_index
    rows = z.reshape(-1, vocab)[supervised.reshape(-1)]
    labels = target.reshape(-1)[supervised.reshape(-1)]

    log_p = torch.log_softmax(rows, dim=-1)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * w[labels]
    uniform = -(log_p * w).sum(dim=-1) / vocab
    per_row = (1.0 - label_smoothing) * nll + label_smoothing * uniform

    per_token = _scatter_rows(per_row, supervised)
    if reduction == "mean" and num_items_in_batch is None and weight is not None:
        total_weight = w[labels].sum()
        return per_token.sum() / (total_weight if total_weight != 0 else 1)
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


def ref_gce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    q: float = 0.7,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
) -> torch.Tensor:
    """GCE (Zhang & Sabuncu 2018): w_y (1 - p_y ** q) / q per supervised token (w = 1 when None), computed
    in float64; "mean" with weights divides by the sum of w_y over the supervised tokens.

    p_y ** q is written exp(q * log_softmax(z)_y): autograd through softmax(z)_y ** q gives NaN where p_y
    underflows to 0 (saturated logits), since d p**q / dp is infinite there. The result is returned in the
    usual dtype (float32, or float64 for float64 logits).
    """
    _check_reduction(reduction, num_items_in_batch)
    out_dtype = _upcast(logits).dtype
    z = logits.double()
    vocab = z.shape[-1]
    supervised = target != ignore_index
    rows = z.reshape(-1, vocab)[supervised.reshape(-1)]
    labels = target.reshape(-1)[supervised.reshape(-1)]

    log_p_y = torch.log_softmax(rows, dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    w = torch.ones(vocab, dtype=z.dtype) if weight is None else weight.double()
    per_row = w[labels] * (1.0 - torch.exp(q * log_p_y)) / q

    per_token = _scatter_rows(per_row, supervised)
    if reduction == "mean" and num_items_in_batch is None and weight is not None:
        total_weight = w[labels].sum()
        return (per_token.sum() / (total_weight if total_weight != 0 else 1)).to(out_dtype)
    return _reduce(per_token, supervised, reduction, num_items_in_batch).to(out_dtype)


def smile_allowed_mask(
    labels: torch.Tensor,
    vocab: int,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    generator: torch.Generator | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """Boolean (B, N, V) mask: the vocabulary ids each position's softmax is restricted to.

    A sequence is a row, or with ``position_ids`` (B, N) each run of a row that starts at its first position
    or where the position id is 0 (packed sequences).
    """
    if subset not in _SUBSETS:
        raise ValueError(f"unknown subset {subset!r}")
    batch, length = labels.shape
    supervised = labels != ignore_index
    safe_labels = torch.where(supervised, labels, torch.zeros_like(labels))
    own_label = torch.zeros(batch, length, vocab, dtype=torch.bool, device=labels.device)
    own_label.scatter_(-1, safe_labels.unsqueeze(-1), True)

    # at each position, the ids occurring among its sequence's supervised labels; and the first supervised
    # position of each sequence
    in_sequence = torch.zeros(batch, length, vocab, dtype=torch.bool, device=labels.device)
    first_positions = []
    for b, start, stop in _smile_sequences(batch, length, position_ids):
        positions = [i for i in range(start, stop) if bool(supervised[b, i])]
        for i in positions:
            in_sequence[b, start:stop, int(labels[b, i])] = True
        if positions:
            first_positions.append((b, positions[0]))

    if subset == "sequence":
        allowed = in_sequence.clone()
    elif subset == "random":
        draws = torch.randint(vocab, (batch, length, num_random), generator=generator, device=labels.device)
        allowed = own_label.clone()
        allowed.scatter_(-1, draws, True)
    else:  # reverse
        allowed = ~in_sequence | own_label

    if first_token_mle:
        for b, i in first_positions:
            allowed[b, i] = True
    return allowed


def _smile_sequences(batch: int, length: int, position_ids: torch.Tensor | None) -> list[tuple[int, ...]]:
    """(row, start, stop) of each sequence: the whole row, or the packed runs of ``position_ids``."""
    sequences = []
    for b in range(batch):
        starts = [0]
        if position_ids is not None:
            starts += [i for i in range(1, length) if position_ids[b, i] == 0]
        sequences += [(b, start, stop) for start, stop in zip(starts, [*starts[1:], length], strict=True)]
    return sequences


def ref_smile_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch=None,
    generator: torch.Generator | None = None,
    position_ids: torch.Tensor | None = None,
) -> torch.Tensor:
    """SMILE: cross-entropy with each position's softmax restricted to a vocabulary subset.

    logits (B, N, V), target (B, N), position_ids (B, N) or None (packed sequences). See
    ``smile_allowed_mask`` for the subsets; with ``"random"`` the ids are drawn by one
    ``torch.randint(V, (B, N, num_random), generator=generator)`` call.
    """
    _check_reduction(reduction, num_items_in_batch)
    if logits.dim() != 3 or target.dim() != 2:
        raise ValueError("smile expects logits (B, N, V) and target (B, N)")
    z = _upcast(logits)
    vocab = z.shape[-1]
    allowed = smile_allowed_mask(
        target,
        vocab,
        subset=subset,
        num_random=num_random,
        first_token_mle=first_token_mle,
        ignore_index=ignore_index,
        generator=generator,
        position_ids=position_ids,
    )
    supervised = target != ignore_index
    rows = z[supervised]  # only supervised rows: an ignored row's subset may be empty
    row_allowed = allowed[supervised]
    row_targets = target[supervised]

    restricted = rows.masked_fill(~row_allowed, float("-inf"))
    log_p = torch.log_softmax(restricted, dim=-1)
    per_row = -log_p.gather(-1, row_targets.unsqueeze(-1)).squeeze(-1)

    per_token = _scatter_rows(per_row, supervised)
    return _reduce(per_token, supervised, reduction, num_items_in_batch)


# registry name (tunekit.losses.registry.TOKEN_LOSSES) -> reference of the logits form
REFERENCES = {
    "cross_entropy": ref_cross_entropy,
    "dece": ref_dece_loss,
    "gce": ref_gce_loss,
    "smile": ref_smile_loss,
}


# --------------------------------------------------------------------------------------------------
# classification and regression objectives, written from the formulas in float64, item by item


def ref_binary_focal_loss(
    logits, target, *, alpha=0.25, gamma=2.0, reduction="mean", num_items_in_batch=None
):
    """Lin et al.'s sigmoid focal loss as torchvision writes it, with plain sigmoid and log (finite only for
    moderate logits)."""
    _check_reduction(reduction, num_items_in_batch)
    x, t = logits.double(), target.double()
    p = torch.sigmoid(x)
    ce = -(t * torch.log(p) + (1 - t) * torch.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = loss * (alpha * t + (1 - alpha) * (1 - t))
    return _reduce(loss, torch.ones_like(loss, dtype=torch.bool), reduction, num_items_in_batch)


def ref_focal_loss(
    logits, target, *, gamma=2.0, alpha=None, ignore_index=-100, reduction="mean", num_items_in_batch=None
):
    """-alpha[y] (1 - p_y)^gamma log p_y, one item at a time; alpha None, a number, or per-class weights."""
    _check_reduction(reduction, num_items_in_batch)
    num_classes = logits.shape[-1]
    rows, labels = logits.double().reshape(-1, num_classes), target.reshape(-1)
    per_item = []
    for row, label in zip(rows, labels.tolist(), strict=True):
        if label == ignore_index:
            per_item.append(row.sum() * 0)
            continue
        p = torch.softmax(row, dim=0)[label]
        if alpha is None:
            weight = 1.0
        elif isinstance(alpha, (int, float)):
            weight = float(alpha)
        else:
            weight = float(torch.as_tensor(alpha, dtype=torch.float64)[label])
        per_item.append(-weight * (1 - p) ** gamma * torch.log(p))
    per_item = (
        torch.stack(per_item).reshape(target.shape) if per_item else rows.sum() * torch.zeros(target.shape)
    )
    return _reduce(per_item, target != ignore_index, reduction, num_items_in_batch)


def ref_dice_loss(
    logits,
    target,
    *,
    mode="multiclass",
    smooth=1.0,
    square_denominator=False,
    self_adjusting=0.0,
    batch_dice=None,
    ignore_index=-100,
    reduction="mean",
):
    """1 - (2 sum q y + smooth) / (sum q^k + sum y^k + smooth) per sample (or batch) and class, over the
    non-ignored positions, q = (1 - p)^alpha p; terms without a supervised position count nowhere.
    batch_dice=None: over the batch when each sample has one position, per sample otherwise."""
    _check_reduction(reduction, None)
    x = logits.double()
    if mode == "multiclass":
        num_classes = x.shape[-1]
        p = torch.softmax(x, dim=-1).reshape(x.shape[0], -1, num_classes)
        labels = target.reshape(target.shape[0], -1)
        valid = (labels != ignore_index).unsqueeze(-1).expand_as(p)
        y = torch.stack([(labels == c).double() for c in range(num_classes)], dim=-1)
    else:
        num_classes = 1 if mode == "binary" else x.shape[-1]
        p = torch.sigmoid(x).reshape(x.shape[0], -1, num_classes)
        labels = target.double().reshape(p.shape)
        valid = labels != ignore_index
        y = labels
    q = (1 - p) ** self_adjusting * p
    power = 2 if square_denominator else 1
    if batch_dice is None:
        batch_dice = p.shape[1] == 1
    groups = [slice(None)] if batch_dice else [slice(b, b + 1) for b in range(x.shape[0])]
    terms, counted = [], []
    for group in groups:
        for c in range(num_classes):
            keep = valid[group, :, c]
            q_c, y_c = q[group, :, c][keep], y[group, :, c][keep]
            dice = (2 * (q_c * y_c).sum() + smooth) / ((q_c**power).sum() + (y_c**power).sum() + smooth)
            terms.append(1 - dice)
            counted.append(bool(keep.any()))
    shape = (num_classes,) if batch_dice else (x.shape[0], num_classes)
    per_term = torch.stack(terms).reshape(shape)
    mask = torch.tensor(counted).reshape(shape)
    per_term = torch.where(mask, per_term, 0)
    if mode == "binary" and reduction == "none":
        return per_term.squeeze(-1)
    return _reduce(per_term, mask, reduction, None)


def ref_mse_corr_loss(pred, target, *, corr_weight=1.5, eps=1e-8):
    """MSE + corr_weight * mean over columns of (1 - Pearson r) with torch.corrcoef; r = 0 where corrcoef
    is undefined (a column without variation)."""
    x = pred.double().reshape(pred.shape[0], -1)
    y = target.double().reshape(x.shape)
    mse = ((x - y) ** 2).mean()
    terms = []
    for d in range(x.shape[1]):
        if x.shape[0] < 2 or bool(x[:, d].eq(x[0, d]).all()) or bool(y[:, d].eq(y[0, d]).all()):
            r = x[:, d].sum() * 0
        else:
            r = torch.corrcoef(torch.stack([x[:, d], y[:, d]]))[0, 1]
        terms.append(1 - r)
    return mse + corr_weight * torch.stack(terms).mean()


def ref_rdrop_kl(logits_a, logits_b, *, pad_mask=None, reduction="mean", num_items_in_batch=None):
    """(KL(p || q) + KL(q || p)) / 2 per position with F.kl_div, as the R-Drop paper's code, pad positions
    zeroed."""
    import torch.nn.functional as F

    _check_reduction(reduction, num_items_in_batch)
    a, b = logits_a.double(), logits_b.double()
    kl_qp = F.kl_div(F.log_softmax(a, dim=-1), F.softmax(b, dim=-1), reduction="none").sum(-1)
    kl_pq = F.kl_div(F.log_softmax(b, dim=-1), F.softmax(a, dim=-1), reduction="none").sum(-1)
    per_position = (kl_pq + kl_qp) / 2
    keep = torch.ones_like(per_position, dtype=torch.bool) if pad_mask is None else ~pad_mask
    per_position = torch.where(keep, per_position, 0)
    return _reduce(per_position, keep, reduction, num_items_in_batch)


# registry name (tunekit.losses.registry.CLASSIFICATION_LOSSES) -> reference, called with the spec's kwargs
CLASSIFICATION_REFERENCES = {
    "cross_entropy": ref_cross_entropy,
    "focal": ref_focal_loss,
    "dice": ref_dice_loss,
    "binary_focal": ref_binary_focal_loss,
    "multilabel_dice": ref_dice_loss,
    "mse_corr": ref_mse_corr_loss,
}


# --------------------------------------------------------------------------------------------------
# fused-linear R-Drop and the logged token statistics

__all__ += ["ref_linear_rdrop_kl", "ref_token_statistics"]


def ref_linear_rdrop_kl(
    hidden_a, hidden_b, weight, *, bias=None, pad_mask=None, reduction="mean", num_items_in_batch=None
):
    """``ref_rdrop_kl`` of the materialised logits ``F.linear(hidden, weight, bias)`` of each pass."""
    import torch.nn.functional as F

    logits_a, logits_b = F.linear(hidden_a, weight, bias), F.linear(hidden_b, weight, bias)
    return ref_rdrop_kl(
        logits_a, logits_b, pad_mask=pad_mask, reduction=reduction, num_items_in_batch=num_items_in_batch
    )


def ref_token_statistics(logits, target, *, ignore_index=-100):
    """(entropy, is_top1) per token: -(p * log p).sum(-1) with log p = log_softmax(logits), and
    argmax(logits) == target; 0 and False where target == ignore_index. No gradient."""
    with torch.no_grad():
        z = _upcast(logits)
        log_p = torch.log_softmax(z, dim=-1)
        supervised = target != ignore_index
        entropy = torch.where(supervised, -(log_p.exp() * log_p).sum(dim=-1), 0)
        is_top1 = (z.argmax(dim=-1) == target) & supervised
    return entropy, is_top1
