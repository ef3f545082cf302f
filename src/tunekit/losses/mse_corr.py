"""Mean squared error plus a Pearson-correlation term, for regression heads judged by correlation (e.g.
similarity scores): the MSE fits the scale, the correlation term the ranking within the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_float_tensor, check_non_negative, check_same_shape
from ._dtypes import upcast


def mse_corr_loss(pred: Tensor, target: Tensor, *, corr_weight: float = 1.5, eps: float = 1e-8) -> Tensor:
    """MSE plus ``corr_weight`` times one minus the Pearson correlation of each output column::

        mse = ((pred - target) ** 2).mean()
        a, b = pred - pred.mean(0), target - target.mean(0)                       # per column
        r = (a * b).sum(0) / sqrt((a ** 2).sum(0) * (b ** 2).sum(0))             # Pearson r per column
        loss = mse + corr_weight * (1 - r).mean()

    The correlation is over the batch, so it is a batch-level statistic (no ``reduction``, no
    ``num_items_in_batch``). A column without variation in pred or target (constant, a batch of one, or
    ``sqrt((a ** 2).sum(0) * (b ** 2).sum(0)) <= eps``) gets r = 0, not NaN, and no gradient through r. An
    empty batch gives 0 and a zero gradient.

    Args:
        pred: (N,) or (N, D) float predictions (trailing dimensions past the first are columns);
            fp16/bf16 are computed in fp32.
        target: the shape of pred, real values; (N,) also goes with (N, 1) pred (a regression head with
            ``num_labels=1``).
        corr_weight: weight >= 0 of the correlation term.
        eps: > 0; a column whose correlation denominator is at most eps counts as without variation.

    Returns:
        fp32 scalar (fp64 for fp64 pred).

    Example::

        >>> import torch
        >>> pred = torch.tensor([[0.1], [0.2], [0.2], [0.8], [0.4]])
        >>> target = torch.tensor([[0.0], [1.0], [0.0], [0.0], [1.0]])
        >>> round(mse_corr_loss(pred, target).item(), 4)
        2.0341
    """
    _check_options(corr_weight, eps)
    check_float_tensor("pred", pred)
    if pred.dim() == 2 and pred.shape[1] == 1 and isinstance(target, Tensor) and target.dim() == 1:
        target = target.unsqueeze(1)  # a regression head's (N, 1) output against (N,) labels
    check_same_shape("pred", pred, "target", target)
    if pred.dim() == 0:
        raise ValueError(f"pred must have a batch dimension, got shape {tuple(pred.shape)}")
    if pred.shape[0] == 0:  # an empty batch scores 0, as every objective's does, with a zero gradient
        return upcast(pred).sum() * 0
    if pred.numel() == 0:
        raise ValueError(f"pred must have at least one output column, got shape {tuple(pred.shape)}")
    x = upcast(pred).reshape(pred.shape[0], -1)
    y = target.to(x.dtype).reshape(x.shape)
    mse = F.mse_loss(x, y)
    a, b = x - x.mean(0), y - y.mean(0)
    variances = (a * a).sum(0) * (b * b).sum(0)
    # exact equality catches constant columns whose mean is rounded (a != 0) at any scale
    flat = (x.amax(0) == x.amin(0)) | (y.amax(0) == y.amin(0)) | (variances <= eps * eps)
    # the floor goes inside the sqrt (whose gradient at 0 is infinite); `where` then drops the flat columns
    correlation = (a * b).sum(0) / variances.clamp_min(eps * eps).sqrt()
    correlation = torch.where(flat, 0, correlation)
    return mse + corr_weight * (1 - correlation).mean()


class MSECorrLoss(nn.Module):
    """Module form of `mse_corr_loss`: holds the hyper-parameters, `forward` calls the function."""

    def __init__(self, *, corr_weight: float = 1.5, eps: float = 1e-8) -> None:
        super().__init__()
        _check_options(corr_weight, eps)
        self.corr_weight = corr_weight
        self.eps = eps

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return mse_corr_loss(pred, target, corr_weight=self.corr_weight, eps=self.eps)

    def extra_repr(self) -> str:
        return f"corr_weight={self.corr_weight}, eps={self.eps}"


def _check_options(corr_weight: float, eps: float) -> None:
    check_non_negative("corr_weight", corr_weight)
    check_non_negative("eps", eps, positive=True)
