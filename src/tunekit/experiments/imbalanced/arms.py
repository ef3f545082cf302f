"""The arms of the imbalanced experiment: the objective each trains with and its options.

Class-weighted cross-entropy is `focal_loss` with ``gamma=0`` and a per-class ``alpha``: tunekit's
`cross_entropy` takes no class weights. Per item that is ``alpha[y] * CE``; "mean" divides by the number of
items (as torchvision's focal loss does), not by the sum of the items' weights as
``F.cross_entropy(weight=...)`` does, so the two differ by a per-batch factor, not in the direction of the
gradient of any one batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["ARMS", "balanced_weights"]


def balanced_weights(counts: Sequence[int]) -> list[float]:
    """``n / (C * n_c)`` per class (scikit-learn's "balanced"): every class carries the same total weight,
    and the weights average to 1 over the training items.

    >>> balanced_weights([90, 10])
    [0.5555555555555556, 5.0]
    """
    if not counts or any(n < 1 for n in counts):
        raise ValueError(f"every class needs at least one training example, got counts {list(counts)}")
    total = sum(counts)
    return [total / (len(counts) * n) for n in counts]


# arm -> (objective in CLASSIFICATION_LOSSES, options from (config, training counts per class))
ARMS: dict[str, tuple[str, Callable[[Any, Sequence[int]], dict]]] = {
    "cross_entropy": ("cross_entropy", lambda config, counts: {}),
    "weighted_ce": ("focal", lambda config, counts: {"gamma": 0.0, "alpha": balanced_weights(counts)}),
    "focal": ("focal", lambda config, counts: {"gamma": config.focal_gamma}),
    "dice": ("dice", lambda config, counts: {}),
}
