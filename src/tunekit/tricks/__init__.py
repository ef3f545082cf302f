"""Fine-tuning tricks that take and return plain PyTorch objects (modules, optimizers, param groups, state
dicts, context managers) and never own the training loop: EMA of the weights, FGM / PGD adversarial training,
layer-wise learning-rate decay, BAdam's block-coordinate optimizer, pooling of encoder hidden states. They
depend on torch alone."""

from .adversarial import FGM, PGD, find_embedding_parameters
from .block_optimizer import Block, BlockOptimizer
from .ema import EMA
from .layer_decay import check_layer_decay_options, layer_decay_param_groups
from .pooling import (
    POOLING_KINDS,
    AttentionPooling,
    Pooler,
    attention_pool,
    cls_pool,
    last_k_cls_pool,
    max_pool,
    mean_pool,
)

__all__ = [
    "EMA",
    "FGM",
    "PGD",
    "POOLING_KINDS",
    "AttentionPooling",
    "Block",
    "BlockOptimizer",
    "Pooler",
    "attention_pool",
    "check_layer_decay_options",
    "cls_pool",
    "find_embedding_parameters",
    "last_k_cls_pool",
    "layer_decay_param_groups",
    "max_pool",
    "mean_pool",
]
