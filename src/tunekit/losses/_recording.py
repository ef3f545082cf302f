"""Statistics of the model's distribution recorded by the engine during an objective's own chunked pass.

`tunekit.losses.statistics.recording_token_statistics` opens a recording; every token objective called
inside it appends a `TokenStatistics` that the engine fills as it scores each chunk of logits (read from
the logits or computed from the hidden states), so that a trainer logs entropy and top-1 accuracy without a
second pass over the output layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor

from ._workspace import Workspace, scratch

_RECORDINGS: ContextVar[list[TokenStatistics] | None] = ContextVar("tunekit_token_statistics", default=None)


@dataclass
class TokenStatistics:
    """Per target position: ``entropy`` of the model's softmax over the whole vocabulary (0 where ignored)
    and ``is_top1``, whether the target is its argmax (False where ignored); both of the target's shape."""

    entropy: Tensor
    is_top1: Tensor

    @classmethod
    def empty(cls, shape: torch.Size, dtype: torch.dtype, device: torch.device) -> TokenStatistics:
        return cls(
            torch.zeros(shape, dtype=dtype, device=device),
            torch.zeros(shape, dtype=torch.bool, device=device),
        )

    def record(self, rows: Tensor, z: Tensor, target: Tensor, workspace: Workspace | None) -> None:
        """Fill the flat `rows` (R,) from their logits over the whole vocabulary z (R, V) and targets (R,)."""
        entropy, is_top1 = entropy_and_top1(z, target, workspace)
        self.entropy.view(-1).index_copy_(0, rows, entropy)
        self.is_top1.view(-1).index_copy_(0, rows, is_top1)


def entropy_and_top1(z: Tensor, target: Tensor, workspace: Workspace | None = None) -> tuple[Tensor, Tensor]:
    """``-(softmax(z) * log_softmax(z)).sum(-1)`` and ``z.argmax(-1) == target`` of z (R, V), from one exp
    pass: with y = z - max (<= 0), e = exp(y) and s = e.sum(-1) (>= 1) the entropy is log s - <e, y> / s,
    two terms >= 0."""
    row_max, argmax = z.max(dim=-1, keepdim=True)
    is_top1 = argmax.squeeze(1) == target
    shifted = torch.sub(z, row_max, out=scratch(workspace, "shifted", z))
    e = torch.exp(shifted, out=scratch(workspace, "exp", z))
    total = e.sum(dim=-1)
    entropy = e.mul_(shifted).sum(dim=-1).div_(total).neg_().add_(total.log())
    return entropy, is_top1


@contextlib.contextmanager
def recording() -> Iterator[list[TokenStatistics]]:
    """Inside, each chunked objective call appends its `TokenStatistics` to the yielded list."""
    recordings: list[TokenStatistics] = []
    token = _RECORDINGS.set(recordings)
    try:
        yield recordings
    finally:
        _RECORDINGS.reset(token)


def new_recording(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> TokenStatistics | None:
    """A `TokenStatistics` for one objective call, appended to the open recording; None when none is open."""
    recordings = _RECORDINGS.get()
    if recordings is None:
        return None
    statistics = TokenStatistics.empty(shape, dtype, device)
    recordings.append(statistics)
    return statistics
