"""SMILE, the semipermeable maximum-likelihood estimation of Yue et al. (NeurIPS 2023): each position's
softmax is restricted to a subset of the vocabulary, by default the tokens of its own sequence, so the model
is not pushed towards ending sequences early and learns to generate more descriptive text."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_flag, check_positive_int, check_reduction_options
from ._engine import Segment
from ._objective import linear_loss, logits_loss
from .token_math import softmax_cross_entropy

SUBSETS = ("sequence", "random", "reverse")


def smile_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Cross-entropy of logits (B, N, V) against labels (B, N) with each position's softmax restricted to a
    subset S of the vocabulary (the other logits set to -inf); the label is always in S:

    - ``subset="sequence"``: S = the distinct ids among the sequence's supervised labels (the paper's SMILE);
    - ``"random"``: S = the position's label plus ``num_random`` ids drawn uniformly (duplicates collapse),
      drawn as ``torch.randint(V, (B, N, num_random), generator=generator)`` once per call;
    - ``"reverse"``: S = the vocabulary minus the sequence's ids, plus the position's label.

    With ``first_token_mle`` each sequence's first *supervised* position (the first label that is not
    ``ignore_index``, so a masked prompt is skipped) keeps the whole vocabulary. Subsets "sequence" and
    "random" only gather the subset's logits, O(tokens x |S|). Reduction as in `cross_entropy`.

    Example::

        >>> import torch
        >>> logits = torch.zeros(1, 3, 5)
        >>> labels = torch.tensor([[-100, 2, 4]])  # the prompt position is ignored
        >>> # first supervised position: -log(1/5); the next one: softmax over {2, 4}, -log(1/2)
        >>> round(smile_loss(logits, labels, reduction="sum").item(), 4)
        2.3026
    """
    planner = _smile_planner(logits, labels, subset, num_random, first_token_mle, generator)
    return logits_loss(
        logits,
        labels,
        softmax_cross_entropy,
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        planner=planner,
    )


def linear_smile_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    bias: Tensor | None = None,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Computes ``smile_loss(hidden @ weight.T + bias, labels, ...)`` without allocating the logits, and for
    subsets "sequence" and "random" multiplies the hidden states only by the weight rows of the subset.

    hidden (B, N, H), weight (V, H), bias (V,) or None, labels (B, N); other arguments as `smile_loss`.
    """
    planner = _smile_planner(hidden, labels, subset, num_random, first_token_mle, generator, what="hidden")
    return linear_loss(
        hidden,
        weight,
        bias,
        labels,
        softmax_cross_entropy,
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        planner=planner,
    )


def _smile_planner(
    inputs: Tensor,
    labels: Tensor,
    subset: str,
    num_random: int,
    first_token_mle: bool,
    generator: torch.Generator | None,
    what: str = "logits",
):
    _check_options(subset, num_random, first_token_mle)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if (
        not isinstance(inputs, Tensor)
        or inputs.dim() != 3
        or not isinstance(labels, Tensor)
        or labels.dim() != 2
    ):
        got = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (inputs, labels)]
        raise ValueError(
            f"SMILE needs {what} (B, N, *) and labels (B, N) of whole sequences, got {got[0]}, {got[1]}"
        )
    return partial(
        plan_smile_segments,
        subset=subset,
        num_random=num_random,
        first_token_mle=first_token_mle,
        generator=generator,
    )


def _check_options(subset: str, num_random: int, first_token_mle: bool) -> None:
    check_choice("subset", subset, SUBSETS)
    check_positive_int("num_random", num_random)
    check_flag("first_token_mle", first_token_mle)


def plan_smile_segments(
    labels: Tensor,
    valid: Tensor,
    num_classes: int,
    *,
    subset: str,
    num_random: int,
    first_token_mle: bool,
    generator: torch.Generator | None,
) -> list[Segment]:
    """Segments of the supervised tokens of labels (B, N): the first-token-MLE rows against the whole
    vocabulary, the rest against their subsets (one segment per sequence for "sequence")."""
    B, N = labels.shape
    flat = labels.reshape(-1).long()
    rest = valid.reshape(-1).clone()
    segments = []
    if first_token_mle:
        first = valid.int().argmax(1) + torch.arange(B, device=labels.device) * N  # argmax: first True
        first = first[valid.any(1)]
        rest[first] = False
        segments.append(Segment(rows=first, target=flat[first]))
    rows = rest.nonzero().squeeze(1)
    targets = flat[rows]

    if subset == "random":
        # drawn where the generator lives (a CPU generator may serve CUDA labels), then moved
        device = labels.device if generator is None else generator.device
        drawn = torch.randint(num_classes, (B, N, num_random), generator=generator, device=device)
        drawn = drawn.to(labels.device)
        candidates, _ = torch.cat([targets.unsqueeze(1), drawn.view(B * N, num_random)[rows]], 1).sort(1)
        duplicate = torch.zeros_like(candidates, dtype=torch.bool)
        duplicate[:, 1:] = candidates[:, 1:] == candidates[:, :-1]  # duplicates count once
        target = ((candidates == targets.unsqueeze(1)) & ~duplicate).int().argmax(1)
        padding = torch.zeros(duplicate.shape, device=labels.device).masked_fill_(duplicate, -math.inf)
        return [*segments, Segment(rows=rows, target=target, candidates=candidates, padding=padding)]

    in_sequence = torch.zeros(B, num_classes, dtype=torch.bool, device=labels.device)
    sequence, position = valid.nonzero(as_tuple=True)
    in_sequence[sequence, labels[sequence, position].long()] = True
    if subset == "reverse":
        excluded = torch.zeros(in_sequence.shape, device=labels.device).masked_fill_(in_sequence, -math.inf)
        return [*segments, Segment(rows=rows, target=targets, excluded=excluded, excluded_row=rows // N)]

    rows_per_sequence = torch.bincount(rows // N, minlength=B).tolist()
    for ids, seq_rows, seq_targets in zip(
        in_sequence.nonzero()[:, 1].split(in_sequence.sum(1).tolist()),
        rows.split(rows_per_sequence),
        targets.split(rows_per_sequence),
        strict=True,
    ):
        if seq_rows.numel():
            target = torch.searchsorted(ids, seq_targets)  # ids are sorted: nonzero walks them in order
            segments.append(Segment(rows=seq_rows, target=target, candidates=ids))
    return segments


class SMILELoss(nn.Module):
    """Module form of `smile_loss`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(
        self,
        subset: str = "sequence",
        num_random: int = 10,
        first_token_mle: bool = True,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        _check_options(subset, num_random, first_token_mle)
        check_reduction_options(ignore_index, reduction)
        self.subset = subset
        self.num_random = num_random
        self.first_token_mle = first_token_mle
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        return smile_loss(
            logits,
            labels,
            subset=self.subset,
            num_random=self.num_random,
            first_token_mle=self.first_token_mle,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
            generator=generator,
        )

    def extra_repr(self) -> str:
        return (
            f"subset={self.subset!r}, num_random={self.num_random}, first_token_mle={self.first_token_mle}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
