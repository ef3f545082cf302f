"""The dtype tunekit computes in: fp16/bf16/fp32 inputs in fp32, fp64 in fp64 (gradcheck). The losses, the
classification heads and the metrics all upcast through here."""

from __future__ import annotations

import torch
from torch import Tensor


def compute_dtype_for(*tensors: Tensor | None) -> torch.dtype:
    if any(t is not None and t.dtype == torch.float64 for t in tensors):
        return torch.float64
    return torch.float32


def upcast(tensor: Tensor) -> Tensor:
    """`tensor` in its compute dtype: a new tensor, or the caller's own when it already is (never modified);
    autograd casts the gradient back to the input's dtype."""
    return tensor.to(compute_dtype_for(tensor))
