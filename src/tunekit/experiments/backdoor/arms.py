"""The arms of the backdoor experiment: which objective each trains with, and on which data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# arm name -> (objective, its options from the config, poisoned training data?)
ARM_OBJECTIVES: dict[str, tuple[str, Callable[[Any], dict], bool]] = {
    "ce_clean": ("cross_entropy", lambda c: {}, False),
    "ce_poisoned": ("cross_entropy", lambda c: {}, True),
    "dece_poisoned": (
        "dece",
        lambda c: {"alpha_base": c.dece_alpha_base, "label_smoothing": c.dece_label_smoothing},
        True,
    ),
    "label_smoothing_poisoned": ("cross_entropy", lambda c: {"label_smoothing": c.label_smoothing}, True),
    "gce_poisoned": ("gce", lambda c: {"q": c.gce_q}, True),
}
