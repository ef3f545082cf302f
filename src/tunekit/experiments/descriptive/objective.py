"""The mixture arm's objective: ``mle_weight * cross_entropy + (1 - mle_weight) * smile_loss`` (Yue et al.
2023 weight MLE by 0.01 and SMILE by 0.99 to keep some pressure on the whole vocabulary)."""

from __future__ import annotations

from torch import Tensor, nn

from ..._checks import check_fraction
from ...losses import cross_entropy, smile_loss


class MLESMILEMixture(nn.Module):
    """``mle_weight * cross_entropy(logits, target) + (1 - mle_weight) * smile_loss(logits, target, ...)``.

    logits (B, N, V), target (B, N) with ``-100`` where nothing is supervised. Both terms are summed over the
    supervised tokens and divided by the same count (``num_items_in_batch`` when given, else the batch's own
    count), so the weights are the weights of two per-token means. ``smile_options`` go to `smile_loss`.
    """

    def __init__(self, *, mle_weight: float = 0.01, **smile_options) -> None:
        super().__init__()
        check_fraction("mle_weight", mle_weight, zero_ok=True, one_ok=True)
        self.mle_weight = float(mle_weight)
        self.smile_options = smile_options

    def forward(
        self, logits: Tensor, target: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        mle = cross_entropy(logits, target, num_items_in_batch=num_items_in_batch)
        smile = smile_loss(logits, target, num_items_in_batch=num_items_in_batch, **self.smile_options)
        return self.mle_weight * mle + (1 - self.mle_weight) * smile

    def extra_repr(self) -> str:
        return f"mle_weight={self.mle_weight}, smile_options={self.smile_options}"
