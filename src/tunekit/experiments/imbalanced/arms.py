"""The arms of the imbalanced experiment: the objective each trains with and its options.

Class-weighted cross-entropy is `cross_entropy` with ``weight=`` scikit-learn's "balanced" weights: per item
``w[y] * CE``. The Trainer passes ``num_items_in_batch`` (the batch's label count), so the weighted sum is
divided by that count, Hugging Face's convention, not by the sum of the batch's ``w[y]`` as
``F.cross_entropy(weight=...)``'s "mean" would: exactly what ``focal_loss(gamma=0, alpha=w)`` computes.
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
    "weighted_ce": ("cross_entropy", lambda config, counts: {"weight": balanced_weights(counts)}),
    "focal": ("focal", lambda config, counts: {"gamma": config.focal_gamma}),
    "dice": ("dice", lambda config, counts: {}),
}
