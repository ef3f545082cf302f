"""The arms of the backdoor experiment: which objective each trains with, on which data, and how."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple


class Arm(NamedTuple):
    objective: str
    options: Callable[[Any], dict]  # the objective's options, from the config
    poisoned: bool  # trained on the poisoned data
    badam: bool = False  # one GPT-2 layer at a time (`tunekit.tricks.BlockOptimizer` around AdamW)


def _dece_options(config: Any) -> dict:
    return {"alpha_base": config.dece_alpha_base, "label_smoothing": config.dece_label_smoothing}


ARM_OBJECTIVES: dict[str, Arm] = {
    "ce_clean": Arm("cross_entropy", lambda c: {}, poisoned=False),
    "ce_poisoned": Arm("cross_entropy", lambda c: {}, poisoned=True),
    "dece_poisoned": Arm("dece", _dece_options, poisoned=True),
    # the seed harness's combination: DeCE trained with BAdam ("badamw"); and its control, cross-entropy
    # with BAdam, which shows whether training one layer at a time keeps the backdoor out by itself
    "dece_poisoned_badam": Arm("dece", _dece_options, poisoned=True, badam=True),
    "ce_poisoned_badam": Arm("cross_entropy", lambda c: {}, poisoned=True, badam=True),
    "label_smoothing_poisoned": Arm(
        "cross_entropy", lambda c: {"label_smoothing": c.label_smoothing}, poisoned=True
    ),
    "gce_poisoned": Arm("gce", lambda c: {"q": c.gce_q}, poisoned=True),
}
