"""Training objectives. Token-level objectives replace cross-entropy on sequences; each has a logits form,
a fused-linear form that never materialises the logits, and an `nn.Module` that holds its hyper-parameters.
"""

from .cross_entropy import CrossEntropyLoss, cross_entropy, linear_cross_entropy
from .dece import DeCELoss, dece_loss, linear_dece_loss
from .registry import TOKEN_LOSSES, TokenLossSpec
from .smile import SMILELoss, linear_smile_loss, smile_loss

__all__ = [
    "TOKEN_LOSSES",
    "CrossEntropyLoss",
    "DeCELoss",
    "SMILELoss",
    "TokenLossSpec",
    "cross_entropy",
    "dece_loss",
    "linear_cross_entropy",
    "linear_dece_loss",
    "linear_smile_loss",
    "smile_loss",
]
