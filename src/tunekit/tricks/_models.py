"""Helpers the tricks share for reading a model."""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / FSDP-style wrappers (their `.module`), so
    that parameter names carry no ``module.`` prefix and match across wrapped and unwrapped models."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model
