"""Training objectives.

Token-level objectives replace cross-entropy on sequences; each has a logits form, a fused-linear form that
never materialises the logits, and an `nn.Module` that holds its hyper-parameters. Classification and
regression objectives score a head's output; `rdrop_kl` is R-Drop's consistency term between two passes
(`linear_rdrop_kl` its fused-linear form); `token_statistics` gives the entropy and top-1 accuracy per token
that trainers log.

The registries of these objectives, and what each supports, are `tunekit.losses.registry`.

On CUDA tensors the token-level objectives run Triton kernels when `triton` is installed; the environment
variable ``TUNEKIT_BACKEND`` (``auto``, ``torch`` or ``triton``) chooses (see the guide "On a GPU: the Triton
kernels").
"""

from ._recording import TokenStatistics
from .cross_entropy import CrossEntropyLoss, cross_entropy, linear_cross_entropy
from .dece import DeCELoss, dece_loss, linear_dece_loss
from .dice import DiceLoss, dice_loss
from .focal import BinaryFocalLoss, FocalLoss, binary_focal_loss, focal_loss
from .gce import GCELoss, gce_loss, linear_gce_loss
from .mse_corr import MSECorrLoss, mse_corr_loss
from .rdrop import RDropLoss, linear_rdrop_kl, rdrop_kl
from .smile import SMILELoss, linear_smile_loss, smile_loss
from .statistics import linear_token_statistics, recording_token_statistics, token_statistics

__all__ = [
    "BinaryFocalLoss",
    "CrossEntropyLoss",
    "DeCELoss",
    "DiceLoss",
    "FocalLoss",
    "GCELoss",
    "MSECorrLoss",
    "RDropLoss",
    "SMILELoss",
    "TokenStatistics",
    "binary_focal_loss",
    "cross_entropy",
    "dece_loss",
    "dice_loss",
    "focal_loss",
    "gce_loss",
    "linear_cross_entropy",
    "linear_dece_loss",
    "linear_gce_loss",
    "linear_rdrop_kl",
    "linear_smile_loss",
    "linear_token_statistics",
    "mse_corr_loss",
    "rdrop_kl",
    "recording_token_statistics",
    "smile_loss",
    "token_statistics",
]
