"""What trainers log about the model's own distribution at the supervised tokens (TRL's SFTTrainer logs the
mean entropy and the mean token accuracy): per-token entropy and whether the target is the top-1 class.

`recording_token_statistics` records them during a token objective's own chunked pass (no second read of
the logits, no second product with the output layer); `token_statistics` and `linear_token_statistics`
compute them alone. The fused-linear forms never hold (tokens x V) logits. Average them over the supervised
tokens to log them::

    with recording_token_statistics() as recorded:
        loss = linear_dece_loss(hidden, lm_head.weight, target, epoch)
    entropy, is_top1 = recorded[0].entropy, recorded[0].is_top1   # target's shape
    supervised = target != -100
    log({"entropy": entropy[supervised].mean(), "mean_token_accuracy": is_top1[supervised].float().mean()})
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from ._checks import check_integer
from ._objective import linear_loss, logits_loss
from ._recording import TokenStatistics, recording
from .token_math import TokenMath

NO_LOSS = TokenMath("none")  # a math that scores nothing: the statistics are all the pass is for


@contextlib.contextmanager
def recording_token_statistics() -> Iterator[list[TokenStatistics]]:
    """Inside, every token objective (`cross_entropy`, `dece_loss`, `gce_loss`, `smile_loss` and their
    fused-linear forms) also computes, in the same chunked pass, the `TokenStatistics` of its targets: the
    entropy of the model's softmax over the whole vocabulary and whether the target is its argmax, each of
    the target's shape (0 / False where ignored). The yielded list gets one per call, in call order.

    SMILE's subsets score most tokens against a few ids: their statistics take one more read of their
    logits over the whole vocabulary (for the fused form, one more product with the weight).

    Example::

        >>> import torch
        >>> from tunekit.losses import cross_entropy
        >>> with recording_token_statistics() as recorded:
        ...     loss = cross_entropy(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 0]))
        >>> [round(h, 4) for h in recorded[0].entropy.tolist()], recorded[0].is_top1.tolist()
        ([0.6931, 0.3653], [False, True])
    """
    with recording() as recorded:
        yield recorded


def token_statistics(logits: Tensor, target: Tensor, *, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
    """Entropy of the predicted distribution and whether the target is its top-1 class, per token::

        entropy = -(softmax(logits) * log_softmax(logits)).sum(-1)     # over the whole vocabulary
        is_top1 = logits.argmax(-1) == target

    with entropy 0 and is_top1 False where target == ignore_index. Computed without gradients.

    Args:
        logits: (..., V) float, e.g. (B, N, V); fp16/bf16 are read in fp32.
        target: (...) int class indices, or ignore_index.

    Returns:
        entropy (...) fp32 (fp64 for fp64 logits) and is_top1 (...) bool, of target's shape.

    Example::

        >>> import torch
        >>> entropy, is_top1 = token_statistics(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1, 0]))
        >>> [round(h, 4) for h in entropy.tolist()], is_top1.tolist()
        ([0.6931, 0.3653], [False, True])
    """
    check_integer("ignore_index", ignore_index)
    with torch.no_grad(), recording() as recorded:
        logits_loss(
            logits,
            target,
            NO_LOSS,
            name="token_statistics",
            ignore_index=ignore_index,
            reduction="sum",
            num_items_in_batch=None,
        )
    return recorded[0].entropy, recorded[0].is_top1


def linear_token_statistics(
    hidden: Tensor, weight: Tensor, target: Tensor, *, bias: Tensor | None = None, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """`token_statistics` of the logits ``hidden @ weight.T + bias``, never materialised::

        token_statistics(F.linear(hidden, weight, bias), target, ignore_index=ignore_index)

    Args:
        hidden: (..., H) float, e.g. (B, N, H); fp16/bf16 logits are computed in fp32 after the product.
        weight: (V, H) the output projection, of hidden's dtype and device; bias: (V,) or None.
        target: (...) int class indices, or ignore_index.

    Example::

        >>> import torch
        >>> weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (V, H) = (2, 2)
        >>> entropy, is_top1 = linear_token_statistics(torch.tensor([[2.0, 0.0]]), weight, torch.tensor([0]))
        >>> round(entropy.item(), 4), is_top1.tolist()
        (0.3653, [True])
    """
    check_integer("ignore_index", ignore_index)
    with torch.no_grad(), recording() as recorded:
        linear_loss(
            hidden,
            weight,
            bias,
            target,
            NO_LOSS,
            name="linear_token_statistics",
            ignore_index=ignore_index,
            reduction="sum",
            num_items_in_batch=None,
        )
    return recorded[0].entropy, recorded[0].is_top1
