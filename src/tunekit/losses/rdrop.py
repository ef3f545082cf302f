"""R-Drop (Liang et al. 2021, "R-Drop: Regularized Dropout for Neural Networks"): run the same batch through
the model twice with dropout on and penalise the symmetric KL divergence between the two predictions.

Recipe, with any tunekit objective (or ``F.cross_entropy``) as the task loss::

    logits_a = model(**batch).logits                 # two forward passes in train mode:
    logits_b = model(**batch).logits                 # different dropout masks
    shifted = labels[:, 1:]                          # causal LM: position t predicts token t + 1
    task = 0.5 * (dece_loss(logits_a[:, :-1], shifted, epoch) + dece_loss(logits_b[:, :-1], shifted, epoch))
    loss = task + kl_weight * rdrop_kl(logits_a[:, :-1], logits_b[:, :-1], pad_mask=shifted == -100)

For sequence classification drop the shifting and the pad mask. The paper's code sums the KL over every
position and class (``reduction="sum"`` here) and tunes its weight (alpha) on that scale; "mean" divides
that sum by the number of unpadded positions, so ``kl_weight`` with "mean" corresponds to the paper's
alpha times the number of positions in a batch. Both passes receive the KL's gradient, as in the paper.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._checks import REDUCTIONS, check_choice, check_float_tensor, check_num_items, check_same_shape, describe
from ._dtypes import upcast
from ._reduction import reduce_losses


def rdrop_kl(
    logits_a: Tensor,
    logits_b: Tensor,
    *,
    pad_mask: Tensor | None = None,
    reduction: str = "mean",
    num_items_in_batch: int | Tensor | None = None,
) -> Tensor:
    """Symmetric KL divergence between the softmax distributions of two forward passes, per position::

        log_p, log_q = log_softmax(logits_a), log_softmax(logits_b)   # over the last axis
        kl = (KL(p || q) + KL(q || p)) / 2 = ((p - q) * (log_p - log_q)).sum(-1) / 2

    Args:
        logits_a, logits_b: (..., V) float tensors of the same shape, e.g. (B, C) or (B, N, V); fp16/bf16
            are computed in fp32, the gradients come back in their dtype. A class masked with -inf in both
            passes contributes 0.
        pad_mask: (...) bool, True at positions that do not count (padding, ignored labels), e.g. (B, N)
            for (B, N, V) logits; it broadcasts over the vocabulary. None: every position counts.
        reduction: "mean" over the positions that count, "sum" (the paper's), or "none" ((...), 0 at
            padding).
        num_items_in_batch: if given, the summed KL is divided by it (Hugging Face's convention).

    Example::

        >>> import torch
        >>> round(rdrop_kl(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, 0.2, -0.3])).item(), 6)
        0.10181
    """
    check_choice("reduction", reduction, REDUCTIONS)
    check_num_items(num_items_in_batch, reduction)
    check_float_tensor("logits_a", logits_a)
    check_same_shape("logits_a", logits_a, "logits_b", logits_b)
    check_float_tensor("logits_b", logits_b)
    if logits_a.dim() == 0 or logits_a.shape[-1] == 0:
        raise ValueError(
            f"logits_a must have a non-empty class axis (..., V), got shape {tuple(logits_a.shape)}"
        )
    valid = None
    if pad_mask is not None:
        if not isinstance(pad_mask, Tensor) or pad_mask.dtype != torch.bool:
            raise ValueError(
                "pad_mask must be a bool tensor, True where a position does not count (an attention mask "
                f"is the opposite: pass attention_mask == 0), got {describe(pad_mask)}"
            )
        check_same_shape("logits_a[..., 0]", logits_a[..., 0], "pad_mask", pad_mask)
        valid = ~pad_mask
    log_p = upcast(logits_a).log_softmax(dim=-1)
    log_q = upcast(logits_b).log_softmax(dim=-1)
    log_ratio = log_p - log_q
    # a class masked with -inf logits in both passes has p = q = 0 and adds nothing (not -inf - -inf = NaN)
    log_ratio = torch.where(log_ratio.isnan(), 0, log_ratio)
    kl = 0.5 * ((log_p.exp() - log_q.exp()) * log_ratio).sum(dim=-1)
    return reduce_losses(kl, valid, reduction, num_items_in_batch)


class RDropLoss(nn.Module):
    """Module form of `rdrop_kl`: holds the reduction, `forward` calls the function."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        check_choice("reduction", reduction, REDUCTIONS)
        self.reduction = reduction

    def forward(
        self,
        logits_a: Tensor,
        logits_b: Tensor,
        pad_mask: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        return rdrop_kl(
            logits_a,
            logits_b,
            pad_mask=pad_mask,
            reduction=self.reduction,
            num_items_in_batch=num_items_in_batch,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
