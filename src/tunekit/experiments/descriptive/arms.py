"""The arms of the descriptive experiment: the objective each fine-tunes with.

Each maps the config to ``(objective, options)`` for `tunekit.experiments.codegen.model.train`: a name
registered in `tunekit.losses.registry.TOKEN_LOSSES` with its options, or a loss module with how it reduces
(`TrainerLoss`'s ``per_item``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .objective import MLESMILEMixture

ARM_OBJECTIVES: dict[str, Callable[[Any], tuple[Any, dict]]] = {
    "mle": lambda c: ("cross_entropy", {}),
    "smile": lambda c: ("smile", {"subset": "sequence"}),
    "smile_no_first_mle": lambda c: ("smile", {"subset": "sequence", "first_token_mle": False}),
    # a sum over the supervised tokens divided by num_items_in_batch, as its two terms
    "mle+smile": lambda c: (
        MLESMILEMixture(mle_weight=c.mix_mle_weight, subset="sequence"),
        {"per_item": True},
    ),
    "smile_random": lambda c: ("smile", {"subset": "random", "num_random": c.num_random}),
    "smile_reverse": lambda c: ("smile", {"subset": "reverse"}),
}


def objective_name(objective: Any, options: dict) -> str:
    """A readable name of an arm's objective for the results: ``smile(subset='random', num_random=10)``."""
    if not isinstance(objective, str):
        return repr(objective).replace("\n", " ")
    return f"{objective}({', '.join(f'{k}={v!r}' for k, v in options.items())})"
