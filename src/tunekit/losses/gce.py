"""GCE, the generalized cross-entropy (L_q loss) of Zhang & Sabuncu 2018 ("Generalized Cross Entropy Loss for
Training Deep Neural Networks with Noisy Labels"), robust to noisy labels: its gradient is cross-entropy's
weighted by p_y^q, so tokens the model finds implausible (mislabelled ones, most likely) count less.
q -> 0 is cross-entropy, q = 1 is 1 - p_y (the mean absolute error up to a factor 2)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from ._checks import check_fraction, check_reduction_options, class_weight_buffer
from ._objective import linear_loss, logits_loss
from .token_math import TokenMath

# The paper's experiments use q = 0.7; smaller q trains faster but is less robust to label noise.
DEFAULT_Q = 0.7


def gce_loss(
    logits: Tensor,
    target: Tensor,
    *,
    q: float = DEFAULT_Q,
    weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """GCE of logits (..., V) against target (...), chunked, the gradient computed during forward.

    Per supervised token, with ``p = softmax(logits)`` and class weights ``w`` (all 1 when None)::

        loss = w_y (1 - p_y ** q) / q          d loss / d logits = w_y p_y ** q * (p - onehot(y))

    Naive equivalent (which, unlike this function, gives NaN gradients once p_y underflows to 0)::

        p_y = torch.softmax(logits.float(), -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
        loss = ((1 - p_y**q) / q)[target != ignore_index].mean()

    p_y ** q is computed as ``exp(q * log_softmax(logits)_y)``, so saturated logits give loss 1/q and a zero
    gradient rather than NaN. Ignored tokens (``ignore_index``, -100 by default, the Hugging Face convention)
    count nowhere: "mean" divides by the supervised tokens only, or with ``weight`` by the sum of their
    ``w_y``, as `cross_entropy` (and ``F.cross_entropy``) do. Probability targets are not taken (the L_q loss
    is defined on the label's probability): a float target raises ``ValueError``.

    Args:
        logits: (..., V) float tensor; fp16/bf16 are computed in fp32, the gradient comes back in their dtype.
        target: (...) integer class ids in [0, V), or ``ignore_index``.
        q: in (0, 1]. The default 0.7 is the value of the paper's experiments; q -> 0 approaches
            cross-entropy (use `cross_entropy` for q = 0), q = 1 gives ``1 - p_y``.
        weight: (V,) per-class weights as in `cross_entropy`, or None.
        reduction: as in `cross_entropy`.
        num_items_in_batch: as in `cross_entropy`.

    Returns:
        fp32 loss (fp64 for fp64 logits): a scalar, or the targets' shape for ``reduction="none"``.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[4.0, 5.0, 10.0], [1.0, 5.0, 4.0]])
        >>> round(gce_loss(logits, torch.tensor([2, 1])).item(), 5)
        0.15054
        >>> round(gce_loss(logits, torch.tensor([2, 1]), q=0.5).item(), 5)
        0.15522
    """
    return logits_loss(
        logits,
        target,
        _gce_math(q),
        name="gce_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        class_weight=weight,
    )


def linear_gce_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    *,
    bias: Tensor | None = None,
    q: float = DEFAULT_Q,
    class_weight: Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``gce_loss(hidden @ weight.T + bias, target, q=q, weight=class_weight, ...)`` without
    allocating the logits.

    hidden (..., H), weight (V, H) (the output projection; per-class weights are ``class_weight``), bias
    (V,) or None, target (...); other arguments as `gce_loss`.
    Tokens are processed in chunks; the weight gradient accumulates in fp32.
    """
    return linear_loss(
        hidden,
        weight,
        bias,
        target,
        _gce_math(q),
        name="linear_gce_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        class_weight=class_weight,
    )


def _gce_math(q: float):
    check_fraction("q", q, zero_ok=False, one_ok=True)
    return TokenMath("gce", param=float(q))


class GCELoss(nn.Module):
    """Module form of `gce_loss`: holds the hyper-parameters, `forward` calls the function. ``weight`` is a
    buffer, as `CrossEntropyLoss`'s."""

    weight: Tensor | None

    def __init__(
        self,
        *,
        q: float = DEFAULT_Q,
        weight: Tensor | Sequence[float] | None = None,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_fraction("q", q, zero_ok=False, one_ok=True)
        check_reduction_options(ignore_index, reduction)
        self.register_buffer("weight", class_weight_buffer(weight))
        self.q = q
        self.ignore_index = ignore_index
        self.reduction = reduction

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return gce_loss(
            logits,
            target,
            q=self.q,
            weight=None if self.weight is None else self.weight.to(logits.device),
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
        """`linear_gce_loss` with this module's options: the loss of ``hidden @ weight.T + bias``."""
        return linear_gce_loss(
            hidden,
            weight,
            target,
            bias=bias,
            q=self.q,
            class_weight=None if self.weight is None else self.weight.to(hidden.device),
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        weight = "" if self.weight is None else f"weight=({self.weight.numel()} per-class weights), "
        return f"q={self.q}, {weight}ignore_index={self.ignore_index}, reduction={self.reduction!r}"
