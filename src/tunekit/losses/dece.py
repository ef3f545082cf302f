"""DeCE, the deceptive cross-entropy of Yang et al. 2024 (arXiv 2407.08956), a defence against backdoors
planted in poisoned fine-tuning data: as training goes on, the prediction is mixed more and more with the
(smoothed) target, so confidently memorised rare patterns stop paying off."""

from __future__ import annotations

from torch import Tensor, nn

from ._checks import check_epoch, check_fraction, check_reduction_options
from ._objective import linear_loss, logits_loss
from .token_math import TokenMath


def dece_loss(
    logits: Tensor,
    target: Tensor,
    epoch: float,
    *,
    alpha_base: float = 0.985,
    label_smoothing: float = 0.05,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """DeCE of logits (..., V) against target (...), chunked, the gradient computed during forward.

    With ``alpha = alpha_base ** epoch`` (epoch counted from 1) and eps = label_smoothing, per token::

        t = full((V,), eps / (V - 1)); t[y] = 1 - eps
        p = softmax(logits.float()).clamp(1e-7, 1.0)
        loss = -(t * log(alpha * p + (1 - alpha) * t)).sum()

    Ignored tokens (``ignore_index``, -100 by default, the Hugging Face convention) count nowhere: "mean"
    divides by the supervised tokens only.

    Args:
        logits: (..., V) float tensor, V >= 2; fp16/bf16 are computed in fp32, the gradient comes back in
            their dtype.
        target: (...) integer class ids in [0, V), or ``ignore_index``.
        epoch: the current epoch, counted from 1 (a fractional epoch decays alpha smoothly).
        alpha_base: in (0, 1]; 1 turns DeCE into cross-entropy against the smoothed target.
        label_smoothing: eps in [0, 1), put as eps/(V-1) on every class but the label.
        reduction: as in `cross_entropy`.
        num_items_in_batch: as in `cross_entropy`.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[4.0, 5.0, 10.0], [1.0, 5.0, 4.0]])
        >>> round(dece_loss(logits, torch.tensor([2, 1]), epoch=1).item(), 4)
        0.3638
    """
    token_math = _dece_math(epoch, alpha_base, label_smoothing)
    return logits_loss(
        logits,
        target,
        token_math,
        name="dece_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        min_classes=2,  # eps is spread over the V - 1 other classes
    )


def linear_dece_loss(
    hidden: Tensor,
    weight: Tensor,
    target: Tensor,
    epoch: float,
    *,
    bias: Tensor | None = None,
    alpha_base: float = 0.985,
    label_smoothing: float = 0.05,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Computes ``dece_loss(hidden @ weight.T + bias, target, epoch, ...)`` without allocating the logits.

    hidden (..., H), weight (V, H), bias (V,) or None, target (...); other arguments as `dece_loss`.
    """
    token_math = _dece_math(epoch, alpha_base, label_smoothing)
    return linear_loss(
        hidden,
        weight,
        bias,
        target,
        token_math,
        name="linear_dece_loss",
        ignore_index=ignore_index,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
        min_classes=2,  # eps is spread over the V - 1 other classes
    )


def _dece_math(epoch: float, alpha_base: float, label_smoothing: float):
    check_epoch(epoch)
    check_fraction("alpha_base", alpha_base, zero_ok=False, one_ok=True)
    check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
    return TokenMath("dece", label_smoothing=label_smoothing, param=alpha_base**epoch)


class DeCELoss(nn.Module):
    """Module form of `dece_loss`. The epoch is state: a training loop or callback calls `set_epoch`
    (epochs counted from 1) and it is saved in and restored from the state dict."""

    def __init__(
        self,
        *,
        alpha_base: float = 0.985,
        label_smoothing: float = 0.05,
        ignore_index: int = -100,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        check_fraction("alpha_base", alpha_base, zero_ok=False, one_ok=True)
        check_fraction("label_smoothing", label_smoothing, zero_ok=True, one_ok=False)
        check_reduction_options(ignore_index, reduction)
        self.alpha_base = alpha_base
        self.label_smoothing = label_smoothing
        self.ignore_index = ignore_index
        self.reduction = reduction
        self.epoch: float = 1

    def set_epoch(self, epoch: float) -> None:
        check_epoch(epoch)
        self.epoch = epoch

    @property
    def alpha(self) -> float:
        """The current mixing weight of the prediction, ``alpha_base ** epoch``."""
        return self.alpha_base**self.epoch

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return dece_loss(
            logits,
            target,
            self.epoch,
            alpha_base=self.alpha_base,
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
        """`linear_dece_loss` with this module's options and epoch: the loss of ``hidden @ weight.T + b``."""
        return linear_dece_loss(
            hidden,
            weight,
            target,
            self.epoch,
            bias=bias,
            alpha_base=self.alpha_base,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def get_extra_state(self) -> dict[str, float]:
        return {"epoch": self.epoch}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.set_epoch(state["epoch"])

    def extra_repr(self) -> str:
        return (
            f"alpha_base={self.alpha_base}, label_smoothing={self.label_smoothing}, epoch={self.epoch}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
