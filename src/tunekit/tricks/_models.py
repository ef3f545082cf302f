"""Helpers the tricks share for reading a model."""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (their ``.module``) and
    `torch.compile` (its ``_orig_mod``), so that parameter names carry no ``module.`` / ``_orig_mod.``
    prefix and match across wrapped and unwrapped models."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model
