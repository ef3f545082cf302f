"""Summaries over seeds for the classification reports: mean and standard deviation, and whether an arm's
difference to a baseline is larger than the seeds' spread.

>>> exceeds_spread([0.80, 0.82, 0.81], [0.70, 0.71, 0.72])
True
>>> exceeds_spread([0.80, 0.84, 0.76], [0.79, 0.83, 0.75])
False
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence

__all__ = ["exceeds_spread", "mean_std"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation); the deviation of a single value is 0."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def exceeds_spread(arm: Sequence[float], baseline: Sequence[float]) -> bool:
    """True when the means differ by more than the sum of the two standard deviations, i.e. the intervals
    mean ± sd do not overlap. With one seed each (no spread) any difference counts: read it as a hint."""
    (m_arm, s_arm), (m_base, s_base) = mean_std(arm), mean_std(baseline)
    return abs(m_arm - m_base) > s_arm + s_base


def results_by_arm(results: Iterable) -> dict[str, list[dict]]:
    """Each arm's result dicts (one per seed), from the runner's `ArmResult`s, in their order."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_arm[result.arm].append(result.result)
    return by_arm


def metric_values(by_arm: dict[str, list[dict]], metrics: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """arm -> metric -> its value per seed."""
    return {arm: {m: [r[m] for r in runs] for m in metrics} for arm, runs in by_arm.items()}
