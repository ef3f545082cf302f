"""The registry of token-level objectives: the shared tests, the benchmarks and the demo iterate over it,
so a new objective is one entry here plus its per-token math."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .cross_entropy import CrossEntropyLoss, cross_entropy, linear_cross_entropy
from .dece import DeCELoss, dece_loss, linear_dece_loss
from .smile import SMILELoss, linear_smile_loss, smile_loss


@dataclass(frozen=True)
class TokenLossSpec:
    """One token-level objective: `function(logits, target, *extra_args, **kwargs)`, its fused-linear form
    `linear_function(hidden, weight, target, *extra_args, bias=None, **kwargs)` and its module."""

    name: str
    function: Callable
    linear_function: Callable
    module: type[nn.Module]
    extra_args: tuple = ()
    sequence_only: bool = False  # needs (B, N, V) logits and (B, N) labels


TOKEN_LOSSES: dict[str, TokenLossSpec] = {
    spec.name: spec
    for spec in (
        TokenLossSpec("cross_entropy", cross_entropy, linear_cross_entropy, CrossEntropyLoss),
        TokenLossSpec("dece", dece_loss, linear_dece_loss, DeCELoss, extra_args=(1,)),
        TokenLossSpec("smile", smile_loss, linear_smile_loss, SMILELoss, sequence_only=True),
    )
}
