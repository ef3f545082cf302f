"""What the experiments' reports share: their results grouped by arm, the values a table or a plot reads from
them, the spread test over seeds, and report.md's frame (title, verdict, body).

A report reads the runner's `ArmResult`s as ``by_arm``: arm -> the result dicts of its seeds, in order.

>>> exceeds_spread([0.80, 0.82, 0.81], [0.70, 0.71, 0.72])
True
>>> exceeds_spread([0.80, 0.84, 0.76], [0.79, 0.83, 0.75])
False
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..runs.report import mean_and_spread, mean_std, write_text

__all__ = [
    "ONE_SEED",
    "exceeds_spread",
    "last_epoch_values",
    "metric_values",
    "one_seed_hedge",
    "per_epoch",
    "points",
    "results_by_arm",
    "spread_cells",
    "write_markdown",
]

ONE_SEED = " (one seed: no spread to judge by, read it as a hint)"

# arm -> metric -> its value per seed
Values = dict[str, dict[str, list[float]]]


def results_by_arm(results: Iterable) -> dict[str, list[dict]]:
    """Each arm's result dicts (one per seed), from the runner's `ArmResult`s, in their order."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_arm[result.arm].append(result.result)
    return by_arm


def metric_values(by_arm: Mapping[str, list[dict]], metrics: Iterable[str]) -> Values:
    """arm -> metric -> its value per seed, for results that hold each metric at their top level."""
    return {arm: {m: [r[m] for r in runs] for m in metrics} for arm, runs in by_arm.items()}


def last_epoch_values(by_arm: Mapping[str, list[dict]], metrics: Iterable[str]) -> Values:
    """arm -> metric -> the last epoch's value per seed, for results with a list of ``epochs``."""
    return {arm: {m: [r["epochs"][-1][m] for r in runs] for m in metrics} for arm, runs in by_arm.items()}


def per_epoch(by_arm: Mapping[str, list[dict]], metric: str) -> dict[str, list[tuple[float, float]]]:
    """arm -> (epoch, value) of every seed's every epoch: a curve per arm for `plot_curves`, which draws
    the seeds' mean with their range as a band."""
    return {
        arm: [(e["epoch"], e[metric]) for run in runs for e in run["epochs"]] for arm, runs in by_arm.items()
    }


def points(by_arm: Mapping[str, list[dict]], field: str) -> dict[str, list[tuple[float, ...]]]:
    """arm -> every seed's (x, y) points of the result field `field` (a curve such as a precision-recall
    curve), for `plot_curves`."""
    return {arm: [tuple(point) for run in runs for point in run[field]] for arm, runs in by_arm.items()}


def spread_cells(values: Mapping[str, Sequence[float]], metrics: Iterable[str], digits: int = 2) -> list[str]:
    """One arm's table cells: ``mean ± sd (n=seeds)`` of each metric (`mean_and_spread`)."""
    return [mean_and_spread(values[m], digits=digits) for m in metrics]


def exceeds_spread(arm: Sequence[float], baseline: Sequence[float]) -> bool:
    """True when the means differ by more than the sum of the two standard deviations, i.e. the intervals
    mean ± sd do not overlap. With one seed each (no spread) any difference counts: read it as a hint."""
    (m_arm, s_arm), (m_base, s_base) = mean_std(arm), mean_std(baseline)
    return abs(m_arm - m_base) > s_arm + s_base


def one_seed_hedge(values: Values) -> str:
    """`ONE_SEED` when an arm ran with a single seed (its verdict has no spread to go by), else ''."""
    seeds = min(len(per_metric) for metrics in values.values() for per_metric in metrics.values())
    return ONE_SEED if seeds == 1 else ""


def write_markdown(report_dir: Path, title: str, verdict: str, body: Iterable[str]) -> Path:
    """Write ``report_dir/report.md``: ``# title``, the verdict in bold, then the `body` lines."""
    lines = [f"# {title}", "", f"**Verdict:** {verdict}", "", *body]
    return write_text(report_dir / "report.md", "\n".join(lines) + "\n")
