"""What trainers log about the model's own distribution at the supervised tokens (TRL's SFTTrainer logs the
mean entropy and the mean token accuracy): per-token entropy and whether the target is the top-1 class.

Both forms run the engine's chunked pass over the supervised tokens, without gradients, so the fused-linear
form never holds (tokens x V) logits. Average them over the supervised tokens to log them::

    entropy, is_top1 = linear_token_statistics(hidden[:, :-1], lm_head.weight, labels[:, 1:])
    supervised = labels[:, 1:] != -100
    log({"entropy": entropy[supervised].mean(), "mean_token_accuracy": is_top1[supervised].float().mean()})
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import check_integer, check_logits_and_target, check_target_range
from ._dtypes import compute_dtype_for
from ._engine import LinearSource, LogitsSource, Segment, Source, TokenLossJob
from ._objective import check_projection, whole_vocabulary
from ._workspace import Workspace


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
    num_classes = check_logits_and_target(logits, target)
    return _statistics(
        (logits,),
        lambda segments: LogitsSource(logits, False, segments),
        target,
        num_classes,
        ignore_index,
    )


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
    check_logits_and_target(hidden, target, what="hidden")
    num_classes = check_projection(hidden, weight, bias)
    return _statistics(
        (hidden, weight, bias),
        lambda segments: LinearSource(hidden, weight, bias, (False, False, False)),
        target,
        num_classes,
        ignore_index,
    )


def _statistics(
    inputs: tuple[Tensor | None, ...],
    make_source: Callable[[list[Segment]], Source],
    target: Tensor,
    num_classes: int,
    ignore_index: int,
) -> tuple[Tensor, Tensor]:
    check_integer("ignore_index", ignore_index)
    check_target_range(target, num_classes, ignore_index)
    valid = target != ignore_index
    segments = whole_vocabulary(target, valid, num_classes)
    # The job's per-token "loss" is the entropy; the top-1 flags of its chunks come back in the order the
    # job scores them, the segment's rows in order (one whole-vocabulary segment).
    top1_parts: list[Tensor] = []

    def entropy_and_top1(z: Tensor, target: Tensor, grad_scale: None, workspace: Workspace):
        top1_parts.append(z.argmax(dim=-1) == target)
        return _entropy(z, workspace), None

    job = TokenLossJob(
        lambda needs: make_source(segments),
        segments,
        entropy_and_top1,
        num_tokens=valid.numel(),
        device=valid.device,
        dtype=compute_dtype_for(*inputs),
    )
    with torch.no_grad():
        entropy, _ = job.run(None, tuple(False for _ in inputs))
        is_top1 = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
        if top1_parts:
            is_top1[segments[0].rows] = torch.cat(top1_parts)
    return entropy.view(target.shape), is_top1.view(target.shape)


def _entropy(z: Tensor, workspace: Workspace) -> Tensor:
    """-(softmax(z) * log_softmax(z)).sum(-1) of z (R, V) (read only) from one exp pass:
    log s - <e, y> / s with y = z - max (<= 0), e = exp(y), s = e.sum(-1) (>= 1), so both terms are >= 0."""
    shifted = torch.sub(z, z.amax(dim=-1, keepdim=True), out=workspace.like("shifted", z))  # y
    e = torch.exp(shifted, out=workspace.like("exp", z))
    total = e.sum(dim=-1)
    return e.mul_(shifted).sum(dim=-1).div_(total).neg_().add_(total.log())
