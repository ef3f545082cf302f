"""Scratch buffers that every chunk of one call reuses.

Allocating a chunk's temporaries afresh makes malloc give their pages back to the OS and fault them in again
at the next chunk; on CPU that cost a third of the objectives' time (`benchmarks/`). A `Workspace` hands out
views of buffers it allocates once per call, each as large as the largest request under its name.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class Workspace:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """An uninitialised (shape) tensor that stays valid until the next `get` of the same name."""
        numel = math.prod(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            buffer = torch.empty(numel, dtype=dtype, device=self.device)
            self._buffers[name] = buffer
        return buffer[:numel].view(shape)

    def like(self, name: str, tensor: Tensor, dtype: torch.dtype | None = None) -> Tensor:
        return self.get(name, tuple(tensor.shape), dtype or tensor.dtype)


def scratch(workspace: Workspace | None, name: str, tensor: Tensor) -> Tensor:
    """A buffer shaped like `tensor` from `workspace`, or a new one when there is none."""
    return torch.empty_like(tensor) if workspace is None else workspace.like(name, tensor)
