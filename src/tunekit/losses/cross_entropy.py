"""Cross-entropy with class weights, label smoothing and probability targets, chunked: the values of
`F.cross_entropy`, less memory, less time."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._checks import check_fraction, check_reduction_options, class_weight_buffer
from ._objective import linear_loss, logits_loss
from .token_math import TokenMath


def cross_entropy(
    logits: Tensor,
    target: Tensor,
    *,
    weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``F.cross_entropy(logits.float().flatten(0, -2), target.flatten(0, t), weight=weight,
    label_smoothing=eps, ignore_index=ignore_index, reduction=reduction)`` chunk by chunk, the gradient
    during forward, with the class axis last (t: -1 for class ids, -2 for probabilities).

    Per token, with ``p = softmax(logits)``, class weights ``w`` (all 1 when None) and V classes:

    - class ids y: ``loss = -(1 - eps) w_y log p_y - eps/V sum_j w_j log p_j``;
    - probability targets t (the logits' shape): ``loss = -sum_j w_j ((1 - eps) t_j + eps/V) log p_j``.

    ``reduction="mean"`` is PyTorch's: with class ids, the summed loss divided by the sum of ``w_y`` over the
    supervised tokens (their count when ``weight`` is None; a sum of 0 counts as 1, so an all-ignored batch
    gives 0, where PyTorch gives NaN); with probability targets, divided by the number of positions.
    ``num_items_in_batch=n`` divides the summed loss by n instead, weighted or not (Hugging Face's
    convention: n counts the supervised tokens of the global batch, not their weights).

    Differentiable once, as every chunked objective (and their fused forms): the gradient is computed by the
    chunked pass, not by autograd, so a second-order graph (``create_graph=True``, a gradient penalty)
    raises; compute such a loss with ``F.cross_entropy``. Inside a ``torch.compile``d caller it runs eagerly
    (a graph break). Calls with ``weight`` or probability targets run the PyTorch engine on every device
    (the Triton kernels take neither).

    Args:
        logits: (..., V) float tensor; fp16/bf16 are computed in fp32, the gradient comes back in their dtype.
        target: (...) integer class ids in [0, V), or ``ignore_index``; or probabilities of the logits' shape
            and dtype (soft labels: distillation, mixup), not renormalised, every position supervised (no
            ``ignore_index``, as in PyTorch; zero rows add nothing without label smoothing). Probability
            targets get a gradient when they require one.
        weight: (V,) per-class weights, a floating-point tensor on the logits' device (None: all 1);
            constants of the loss (no gradient).
        label_smoothing: eps in [0, 1), spread as eps/V over all classes (PyTorch's convention).
        reduction: "mean" (see above), "sum" or "none" (the targets' leading shape, 0 where ignored).
        num_items_in_batch: if given, the summed loss is divided by it (Hugging Face's gradient-accumulation
            convention).

    Returns:
        fp32 loss (fp64 for fp64 logits): a scalar, or the targets' shape for ``reduction="none"``.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[4.0, 5.0, 10.0], [1.0, 5.0, 4.0], [1.0, 15.0, 4.0]])
        >>> round(cross_entropy(logits, torch.tensor([2, 1, 1])).item(), 6)
        0.111918
        >>> weight = torch.tensor([1.0, 3.0, 1.0])
        >>> round(cross_entropy(logits, torch.tensor([2, 1, 1]), weight=weight).item(), 4)
        0.1413
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
        class_weight=weight,
        soft_targets=True,
    )


def linear_cross_entropy(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    class_weight: Tensor | None = None,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``cross_entropy(hidden @ weight.T + bias, target, weight=class_weight, ...)`` without
    allocating the logits.

    hidden (..., H), weight (V, H) (the output projection, hence ``class_weight`` for the per-class weights
    (V,) that `cross_entropy` calls ``weight``), bias (V,) or None, target (...) class ids or (..., V)
    probabilities in hidden's dtype, read chunk by chunk; other arguments as `cross_entropy`. Tokens are
    processed in chunks; the weight gradient accumulates in fp32.
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
        class_weight=class_weight,
        soft_targets=True,
    )


class CrossEntropyLoss(nn.Module):
    """Module form of `cross_entropy`: holds the hyper-parameters, `forward` calls the function.

    ``weight`` (per-class weights: a 1-D sequence, or a tensor, copied) is a buffer, as in
    ``nn.CrossEntropyLoss``: saved in the state dict and moved with the module; `forward` also moves it to
    the logits' device when the module was left elsewhere (a loss module handed to a Trainer is).
    """

    weight: Tensor | None

    def __init__(
        self,
        *,
        weight: Tensor | Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
        check_reduction_options(ignore_index, reduction)
        self.register_buffer("weight", class_weight_buffer(weight))
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return cross_entropy(
            logits,
            target,
            weight=None if self.weight is None else self.weight.to(logits.device),
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
        """`linear_cross_entropy` with this module's options: the loss of ``hidden @ weight.T + bias``
        (``weight`` is the output projection; the module's per-class weights go in as ``class_weight``)."""
        return linear_cross_entropy(
            hidden,
            weight,
            target,
            bias=bias,
            class_weight=None if self.weight is None else self.weight.to(hidden.device),
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        weight = "" if self.weight is None else f"weight=({self.weight.numel()} per-class weights), "
        return (
            f"{weight}label_smoothing={self.label_smoothing}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}"
        )
