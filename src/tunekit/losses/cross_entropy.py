"""Cross-entropy with label smoothing, chunked: the values of `F.cross_entropy`, less memory, less time."""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_fraction, check_reduction_options
from ._objective import linear_loss, logits_loss
from .token_math import TokenMath


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``F.cross_entropy(logits.float().flatten(0, -2), target.flatten(), label_smoothing=eps,
    ignore_index=ignore_index, reduction=reduction)`` chunk by chunk, the gradient during forward.

    Per token: ``loss = -(1 - eps) log p_y - eps/V sum_j log p_j`` with ``p = softmax(logits)``.

    Differentiable once, as every chunked objective (and their fused forms): the gradient is computed by the
    chunked pass, not by autograd, so a second-order graph (``create_graph=True``, a gradient penalty)
    raises; compute such a loss with ``F.cross_entropy``. Inside a ``torch.compile``d caller it runs eagerly
    (a graph break).

    Args:
        logits: (..., V) float tensor; fp16/bf16 are computed in fp32, the gradient comes back in their dtype.
        target: (...) integer class ids in [0, V), or ``ignore_index``.
        label_smoothing: eps in [0, 1), spread as eps/V over all classes (PyTorch's convention).
        reduction: "mean" (over supervised tokens), "sum" or "none" (the targets' shape, 0 where ignored).
        num_items_in_batch: if given, the summed loss is divided by it (Hugging Face's gradient-accumulation
            convention).

    Returns:
        fp32 loss (fp64 for fp64 logits): a scalar, or the targets' shape for ``reduction="none"``.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[4.0, 5.0, 10.0], [1.0, 5.0, 4.0], [1.0, 15.0, 4.0]])
        >>> round(cross_entropy(logits, torch.tensor([2, 1, 1])).item(), 6)
        0.111918
    """
    check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
    return logits_loss(
        logits,
        target,
        TokenMath("cross_entropy", label_smoothing=label_smoothing),
        name="cross_entropy",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
    )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``cross_entropy(hidden @ weight.T + bias, target, ...)`` without allocating the logits.

    hidden (..., H), weight (V, H), bias (V,) or None, target (...); other arguments as `cross_entropy`.
    Tokens are processed in chunks; the weight gradient accumulates in fp32.
    """
    check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
    return linear_loss(
        hidden,
        weight,
        bias,
        target,
        TokenMath("cross_entropy", label_smoothing=label_smoothing),
        name="linear_cross_entropy",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
    )


class CrossEntropyLoss(nn.Module):
    """Module form of `cross_entropy`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(
        self, *, label_smoothing: float = 0.0, ignore_index: int = -100, reduction: str = "mean"
    ) -> None:
        super().__init__()
        check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
        check_reduction_options(ignore_index, reduction)
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return cross_entropy(
            logits,
            target,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def linear(
        self,
        hidden: Tensor,
        weight: Tensor,
        target: Tensor,
        *,
        bias: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        """`linear_cross_entropy` with this module's options: the loss of ``hidden @ weight.T + bias``."""
        return linear_cross_entropy(
            hidden,
            weight,
            target,
            bias=bias,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return (
            f"label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}"
        )
