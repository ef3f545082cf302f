"""Fine-tuning tricks that take and return plain PyTorch objects (modules, param groups, state dicts,
context managers) and never own the training loop."""

from .ema import EMA
from .layer_decay import layer_decay_param_groups

__all__ = [
    "EMA",
    "layer_decay_param_groups",
]
