"""`compute_loss_func` for the Hugging Face Trainer from any tunekit objective.

``Trainer(..., compute_loss_func=TrainerLoss("dece", task="causal_lm"))`` scores the model's ``logits``
with a registered objective (or any loss module) instead of the model's built-in loss. The Trainer passes
``num_items_in_batch``, the number of supervised labels (``!= -100``) in the whole accumulated batch, summed
over processes with ``average_tokens_across_devices``; objectives that are sums over items divide by it, so
micro-batches of uneven sizes, gradient accumulation and several processes give exactly the loss and the
gradients of one big batch.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice
from ..losses import CLASSIFICATION_LOSSES, TOKEN_LOSSES
from ..losses.rdrop import rdrop_kl

TASKS = ("causal_lm", "seq2seq", "token_classification", "sequence_classification")
_SINGLE_LABEL = "single_label_classification"


class TrainerLoss:
    """A Trainer ``compute_loss_func``: ``loss = objective(logits, target, num_items_in_batch=n)``.

    The target is aligned with the logits (B, N, V) / (B, C) by task:

    - "causal_lm": position i predicts label i + 1, so ``target = labels[:, 1:]`` padded with -100 at the
      end (the logits are not copied); the Trainer counts ``n`` over ``labels[:, 1:]`` for causal LMs.
    - "seq2seq", "token_classification": ``target = labels`` (B, N).
    - "sequence_classification": ``target = labels`` of the objective's problem type: (B,) class ids,
      (B, C) 0/1 labels, or (B,) / (B, 1) regression targets.

    Objectives that are a statistic of the whole batch (dice, correlation; ``per_item=False`` in the
    registry) cannot be split over micro-batches exactly; each micro-batch's value is weighted by its share
    of the labels, ``loss * local_items / n``, so the accumulated loss is their label-weighted mean.

    Args:
        objective: a name in `TOKEN_LOSSES` or `CLASSIFICATION_LOSSES` (built with ``**kwargs``), or a loss
            module / function ``(logits, target[, num_items_in_batch=])``; it takes ``num_items_in_batch``
            (and is then treated as a sum over items) when its signature has that parameter.
        task: one of `TASKS`.
        ignore_index: the label that marks positions without a target (the Hugging Face -100).
        **kwargs: the registered objective's options, e.g. ``label_smoothing=0.1`` or ``gamma=2``.

    Example::

        >>> loss_func = TrainerLoss("dece", task="causal_lm", alpha_base=0.99)
        >>> loss_func.objective
        DeCELoss(alpha_base=0.99, label_smoothing=0.05, epoch=1, ignore_index=-100, reduction='mean')
    """

    def __init__(
        self,
        objective: str | nn.Module | Callable[..., Tensor],
        task: str,
        *,
        ignore_index: int = -100,
        **kwargs: Any,
    ) -> None:
        check_choice("task", task, TASKS)
        self.task = task
        self.ignore_index = ignore_index
        self.problem_type = _SINGLE_LABEL
        if isinstance(objective, str):
            self.objective, self.per_item, self.problem_type = _build(objective, task, ignore_index, kwargs)
        elif callable(objective):
            if kwargs:
                raise ValueError(f"options {sorted(kwargs)} are only for a registered objective's name")
            self.objective = objective
            self.per_item = "num_items_in_batch" in inspect.signature(objective).parameters
        else:
            raise ValueError(f"objective must be a registered name or a callable, got {objective!r}")

    def __call__(
        self, outputs: Any, labels: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        return self.from_logits(_logits_of(outputs), labels, num_items_in_batch)

    def from_logits(
        self, logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        """The loss of logits against the batch's labels, as `__call__` computes it from model outputs."""
        if labels is None:
            raise ValueError("TrainerLoss needs labels: the batch has no 'labels' field")
        target = self.target(labels)
        if self.per_item:
            return self.objective(logits, target, num_items_in_batch=num_items_in_batch)
        loss = self.objective(logits, target)
        if num_items_in_batch is None:
            return loss
        return loss * (target != self.ignore_index).sum() / torch.as_tensor(num_items_in_batch).clamp_min(1)

    def target(self, labels: Tensor) -> Tensor:
        """The labels aligned with the logits: shifted one position left for a causal LM."""
        if self.task == "causal_lm":
            return F.pad(labels, (0, 1), value=self.ignore_index)[..., 1:]
        return labels

    def set_epoch(self, epoch: float) -> None:
        """Forwarded to objectives with an epoch schedule (DeCE); the Trainer mixin calls it every step."""
        if hasattr(self.objective, "set_epoch"):
            self.objective.set_epoch(epoch)

    def __repr__(self) -> str:
        return f"TrainerLoss({self.objective!r}, task={self.task!r})"


def rdrop_loss_func(
    loss_func: TrainerLoss, alpha: float
) -> Callable[[Any, Tensor, int | Tensor | None], Tensor]:
    """R-Drop over a batch repeated twice in one forward pass (rows [0, B) and [B, 2B) the two passes)::

        loss = (task(a) + task(b)) / 2 + alpha * sum_supervised KL_sym(a, b) / n

    with the KL summed over the positions that have a target and divided by ``num_items_in_batch`` (their
    count in the accumulated batch), so it accumulates exactly as the task loss does; `labels` are the
    repeated labels (2B, ...)."""

    def compute(outputs: Any, labels: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
        logits_a, logits_b = _logits_of(outputs).chunk(2)
        labels = labels[: labels.shape[0] // 2]
        task = 0.5 * (
            loss_func.from_logits(logits_a, labels, num_items_in_batch)
            + loss_func.from_logits(logits_b, labels, num_items_in_batch)
        )
        target = loss_func.target(labels)
        pad_mask = target == loss_func.ignore_index
        if num_items_in_batch is None:
            kl = rdrop_kl(logits_a, logits_b, pad_mask=pad_mask, reduction="mean")
        else:
            kl = rdrop_kl(logits_a, logits_b, pad_mask=pad_mask, num_items_in_batch=num_items_in_batch)
        return task + alpha * kl

    return compute


def _build(name: str, task: str, ignore_index: int, kwargs: dict) -> tuple[nn.Module, bool, str]:
    """(module, per_item, problem_type) of a registered objective, checked against the task."""
    if name in TOKEN_LOSSES and (task != "sequence_classification" or name not in CLASSIFICATION_LOSSES):
        if task == "sequence_classification" and TOKEN_LOSSES[name].sequence_only:
            raise ValueError(f"objective {name!r} needs (B, N) token labels, not task={task!r}")
        return TOKEN_LOSSES[name].module(ignore_index=ignore_index, **kwargs), True, _SINGLE_LABEL
    if name in CLASSIFICATION_LOSSES:
        spec = CLASSIFICATION_LOSSES[name]
        if task != "sequence_classification" and spec.problem_type != _SINGLE_LABEL:
            raise ValueError(
                f"objective {name!r} scores {spec.problem_type} heads; task={task!r} has one class per token"
            )
        options = {**spec.kwargs, **kwargs}
        if "ignore_index" in inspect.signature(spec.module).parameters:
            options["ignore_index"] = ignore_index
        return spec.module(**options), spec.per_item, spec.problem_type
    known = sorted(set(TOKEN_LOSSES) | set(CLASSIFICATION_LOSSES))
    raise ValueError(f"objective must be one of {known} or a callable, got {name!r}")


def _logits_of(outputs: Any) -> Tensor:
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    if isinstance(outputs, Tensor):
        return outputs
    raise ValueError(
        f"the model's outputs have no 'logits' (got {type(outputs).__name__}); "
        "return a ModelOutput / dict with logits"
    )
