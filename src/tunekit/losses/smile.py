"""SMILE, the semipermeable maximum-likelihood estimation of Yue et al. (NeurIPS 2023): each position's
softmax is restricted to a subset of the vocabulary, by default the tokens of its own sequence, so the model
is not pushed towards ending sequences early and learns to generate more descriptive text."""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_flag,
    check_positive_int,
    check_reduction_options,
    describe,
    sync_checks_enabled,
)
from ._objective import linear_loss, logits_loss, refuse_probability_targets
from ._smile_plan import plan_smile_segments
from .token_math import TokenMath

SUBSETS = ("sequence", "random", "reverse")


def smile_loss(
    logits: Tensor,
    target: Tensor,
    *,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    generator: torch.Generator | None = None,
    position_ids: Tensor | None = None,
) -> Tensor:
    """Cross-entropy of logits (B, N, V) against target (B, N) with each position's softmax restricted to a
    subset S of the vocabulary (the other logits set to -inf); the label is always in S:

    - ``subset="sequence"``: S = the distinct ids among the sequence's supervised targets (the paper's SMILE);
    - ``"random"``: S = the position's label plus ``num_random`` ids drawn uniformly (duplicates collapse),
      drawn as ``torch.randint(V, (B, N, num_random), generator=generator)`` once per call;
    - ``"reverse"``: S = the vocabulary minus the sequence's ids, plus the position's label.

    With ``first_token_mle`` each sequence's first *supervised* position (the first label that is not
    ``ignore_index``, so a masked prompt is skipped) keeps the whole vocabulary. Subsets "sequence" and
    "random" only gather the subset's logits, O(tokens x |S|). Reduction as in `cross_entropy`.

    A sequence is a row of the target, or with ``position_ids`` (B, N), an integer tensor of its shape and
    device, a packed sequence (Hugging Face's padding-free batches): one starts at the first position of
    every row and at every position where ``position_ids == 0``. Its ids ("sequence", "reverse") and its
    first supervised position (``first_token_mle``) are then those of the packed sequence, so a packed row
    gives the loss and gradients of its sequences scored apart, each in its own row; the "random" draw stays
    per position. Pass the position ids that line up with the target (shift them as it is shifted).

    Example::

        >>> import torch
        >>> logits = torch.zeros(1, 3, 5)
        >>> target = torch.tensor([[-100, 2, 4]])  # the prompt position is ignored
        >>> # first supervised position: -log(1/5); the next one: softmax over {2, 4}, -log(1/2)
        >>> round(smile_loss(logits, target, reduction="sum").item(), 4)
        2.3026
        >>> # two sequences packed in one row: the second restarts at position 0 and has its own subset
        >>> logits, target = torch.zeros(1, 4, 5), torch.tensor([[2, 4, 1, 3]])
        >>> position_ids = torch.tensor([[0, 1, 0, 1]])
        >>> round(smile_loss(logits, target, reduction="sum", position_ids=position_ids).item(), 4)
        4.6052
    """
    planner = _smile_planner(logits, target, subset, num_random, first_token_mle, generator, position_ids)
    return logits_loss(
        logits,
        target,
        TokenMath("cross_entropy"),
        name="smile_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        planner=planner,
    )


def linear_smile_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    subset: str = "sequence",
    num_random: int = 10,
    first_token_mle: bool = True,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
    generator: torch.Generator | None = None,
    position_ids: Tensor | None = None,
) -> Tensor:
    """Computes ``smile_loss(hidden @ weight.T + bias, target, ...)`` without allocating the logits, and for
    subsets "sequence" and "random" multiplies the hidden states only by the weight rows of the subset.

    hidden (B, N, H), weight (V, H), bias (V,) or None, target (B, N), position_ids (B, N) or None (packed
    sequences); other arguments as `smile_loss`.
    """
    planner = _smile_planner(
        hidden, target, subset, num_random, first_token_mle, generator, position_ids, what="hidden"
    )
    return linear_loss(
        hidden,
        weight,
        bias,
        target,
        TokenMath("cross_entropy"),
        name="linear_smile_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        planner=planner,
    )


def _smile_planner(
    inputs: Tensor,
    target: Tensor,
    subset: str,
    num_random: int,
    first_token_mle: bool,
    generator: torch.Generator | None,
    position_ids: Tensor | None,
    what: str = "logits",
):
    _check_options(subset, num_random, first_token_mle)
    refuse_probability_targets(target, "smile_loss" if what == "logits" else "linear_smile_loss")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if (
        not isinstance(inputs, Tensor)
        or inputs.dim() != 3
        or not isinstance(target, Tensor)
        or target.dim() != 2
    ):
        got = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (inputs, target)]
        raise ValueError(
            f"SMILE needs {what} (B, N, *) and target (B, N) of whole sequences, got {got[0]}, {got[1]}"
        )
    if position_ids is not None:
        _check_position_ids(position_ids, target)
    return partial(
        plan_smile_segments,
        subset=subset,
        num_random=num_random,
        first_token_mle=first_token_mle,
        generator=generator,
        position_ids=position_ids,
    )


def _check_position_ids(position_ids: Tensor, target: Tensor) -> None:
    if (
        not isinstance(position_ids, Tensor)
        or position_ids.is_floating_point()
        or position_ids.is_complex()
        or position_ids.dtype == torch.bool
    ):
        raise ValueError(f"position_ids must be an integer tensor or None, got {describe(position_ids)}")
    if position_ids.shape != target.shape:
        raise ValueError(
            f"target of shape {tuple(target.shape)} needs position_ids of the same shape, "
            f"got {tuple(position_ids.shape)}"
        )
    if position_ids.device != target.device:
        raise ValueError(f"target is on {target.device} but position_ids is on {position_ids.device}")
    if position_ids.numel() and sync_checks_enabled(position_ids.device):
        lowest = position_ids.min().item()
        if lowest < 0:  # a target passed by mistake holds -100
            raise ValueError(f"position_ids contains {lowest}; positions count from 0")


def _check_options(subset: str, num_random: int, first_token_mle: bool) -> None:
    check_choice("subset", subset, SUBSETS)
    check_positive_int("num_random", num_random)
    check_flag("first_token_mle", first_token_mle)


class SMILELoss(nn.Module):
    """Module form of `smile_loss`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(
        self,
        *,
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
        target: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        generator: torch.Generator | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """`smile_loss` with this module's options; position_ids (B, N) or None marks packed sequences."""
        return smile_loss(
            logits,
            target,
            subset=self.subset,
            num_random=self.num_random,
            first_token_mle=self.first_token_mle,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
            generator=generator,
            position_ids=position_ids,
        )

    def linear(
        self,
        hidden: Tensor,
        weight: Tensor,
        target: Tensor,
        *,
        bias: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
        generator: torch.Generator | None = None,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """`linear_smile_loss` with this module's options: the loss of ``hidden @ weight.T + bias``."""
        return linear_smile_loss(
            hidden,
            weight,
            target,
            bias=bias,
            subset=self.subset,
            num_random=self.num_random,
            first_token_mle=self.first_token_mle,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
            generator=generator,
            position_ids=position_ids,
        )

    def extra_repr(self) -> str:
        return (
            f"subset={self.subset!r}, num_random={self.num_random}, first_token_mle={self.first_token_mle}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
