"""Classification scores the applications share, computed by scikit-learn ("cli" extra, imported when a
score is computed)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from ..runs.report import require

__all__ = ["macro_f1"]


def macro_f1(predicted: Any, gold: Any, classes: Iterable[int] | None = None) -> float:
    """The unweighted mean over classes c of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``: scikit-learn's
    ``f1_score(gold, predicted, average="macro", labels=classes, zero_division=0)``.

    `predicted` and `gold` are class ids of the same length (sequences, arrays or 1-D tensors). `classes`
    are the classes averaged over; by default those present in `gold` or `predicted`, so a class absent from
    both does not count, while one of `classes` absent from both scores 0. NaN when there are no items.

    >>> macro_f1([0, 1, 1], [0, 1, 0]), macro_f1([0, 1, 1], [0, 1, 0], classes=range(3))
    (0.6666666666666666, 0.4444444444444444)
    """
    predicted, gold = _class_ids(predicted), _class_ids(gold)
    if len(gold) == 0:
        return math.nan
    metrics = require("sklearn.metrics", "Scoring macro-F1")
    labels = None if classes is None else list(classes)
    return float(metrics.f1_score(gold, predicted, average="macro", labels=labels, zero_division=0))


def _class_ids(values: Any) -> np.ndarray:
    """`values` as an integer array (a tensor is read through ``tolist``, on any device)."""
    if not isinstance(values, np.ndarray) and hasattr(values, "tolist"):
        values = values.tolist()
    return np.asarray(values, dtype=np.int64)
