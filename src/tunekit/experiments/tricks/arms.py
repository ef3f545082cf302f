"""The arms of the tricks ablation: each is the baseline (cross-entropy, [CLS] pooling, no trick) with one
change, expressed as `tunekit.hf.TrainerTricks` options or the classifier's pooling."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["ARMS"]

# arm -> config -> (TrainerTricks keyword arguments, pooling)
ARMS: dict[str, Callable[[Any], tuple[dict, str]]] = {
    "baseline": lambda c: ({}, "cls"),
    "ema": lambda c: ({"ema_decay": c.ema_decay}, "cls"),
    "fgm": lambda c: (
        {"adversarial": "fgm", "adversarial_epsilon": c.fgm_epsilon},
        "cls",
    ),
    "pgd": lambda c: (
        {
            "adversarial": "pgd",
            "adversarial_epsilon": c.pgd_epsilon,
            "pgd_step_size": c.pgd_step_size,
            "pgd_steps": c.pgd_steps,
        },
        "cls",
    ),
    "rdrop": lambda c: ({"rdrop_weight": c.rdrop_weight}, "cls"),
    "layer_decay": lambda c: ({"layer_decay": c.layer_decay}, "cls"),
    "mean_pooling": lambda c: ({}, "mean"),
}
