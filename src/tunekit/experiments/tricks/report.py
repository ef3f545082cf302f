"""The tricks ablation's report: accuracy and macro-F1 per arm over seeds, each arm's difference to the
baseline against the seeds' spread, the time each trick costs, plots and a verdict."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...runs.report import markdown_table, mean_std, plot_curves, require
from ..report_parts import (
    exceeds_spread,
    metric_values,
    one_seed_hedge,
    per_epoch,
    results_by_arm,
    spread_cells,
    write_markdown,
)

BASELINE = "baseline"
METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}
# A run collapsed when its macro-F1 is at most this above that of predicting the largest class for every test
# text: at the experiment's test sizes one or two texts predicted otherwise move macro-F1 by about that much.
COLLAPSE_MARGIN = 0.01
TOO_SHORT = "the run is too short to compare tricks; run without --quick or with more --epochs"


@dataclass(frozen=True)
class Collapse:
    """A run that predicts one class for (nearly) every test text."""

    label: str
    exact: bool  # accuracy and macro-F1 are exactly those of predicting `label` for every test text
    majority: bool  # `label` is the largest class of the test split

    def __str__(self) -> str:
        if self.exact:
            return f"predicts {self.label!r} for every test text"
        return f"scores no better than predicting {self.label!r} for every test text"


def write_report(config: Any, results: list, report_dir: Path) -> str:
    """Write report.md and the plots into `report_dir`; return the verdict line."""
    by_arm = results_by_arm(results)
    seconds: dict[str, list[float]] = defaultdict(list)
    for result in results:
        seconds[result.arm].append(result.seconds)
    values = metric_values(by_arm, METRICS)
    collapses = {arm: [collapse(run) for run in runs] for arm, runs in by_arm.items()}
    first = next(iter(by_arm.values()))[0]
    verdict = _verdict(values, collapses)

    base_time = mean_std(seconds[BASELINE])[0] if BASELINE in seconds else None
    rows = []
    for arm in by_arm:
        row: list[object] = [arm, *spread_cells(values[arm], METRICS, digits=3)]
        for metric in METRICS:
            row.append(_difference(values, arm, metric))
        row.append(f"{mean_std(seconds[arm])[0] / base_time:.1f}x" if base_time else None)
        rows.append(row)
    headers = ["arm", *METRICS.values(), "accuracy vs baseline", "macro-F1 vs baseline", "time vs baseline"]
    if any(any(c) for c in collapses.values()):  # the column only when it has something to say
        headers.append("collapsed to one class")
        for row, arm in zip(rows, by_arm, strict=True):
            row.append(_collapse_mark(collapses[arm]))
    plot_curves(
        per_epoch(by_arm, "validation_accuracy"),
        report_dir / "validation_accuracy.png",
        title="accuracy on the validation split per epoch (band: min-max over seeds)",
        xlabel="epoch",
        ylabel="accuracy",
    )
    _plot_arms(values, report_dir / "test_accuracy.png")
    counts = first["counts"]
    lines = [
        f"Task: from a standard-library function's first docstring line, which of {len(first['classes'])} "
        f"package families is it from ({', '.join(first['classes'])})? {sum(counts['train'])} training, "
        f"{sum(counts['validation'])} validation and {sum(counts['test'])} test texts; the largest class is "
        f"{max(counts['test']) / sum(counts['test']):.0%} of the test split. {config.describe_model()}, "
        f"fine-tuned with cross-entropy for {config.epochs} epochs; every arm is the baseline ([CLS] "
        f"pooling, no trick) with one change. {config.seeds} seed(s) per arm (the seed sets the head's "
        "initialisation, dropout and the batch order); mean ± sample standard deviation over seeds, on the "
        "test split.",
        "",
        markdown_table(headers, rows),
        "",
        "A difference is marked * when it exceeds the spread: the two means differ by more than their "
        "standard deviations added (the intervals mean ± sd do not overlap). Time is the arm's wall time "
        "against the baseline's on the same machine. An arm collapsed to one class when its macro-F1 is no "
        f"more than {COLLAPSE_MARGIN} above that of predicting the largest class for every test text; the "
        "verdict does not rank collapsed arms.",
        "",
        "Arms (`TrainerTricks` options): "
        f"`ema` (ema_decay={config.ema_decay}, evaluated with the averages), "
        f"`fgm` (adversarial='fgm', epsilon {config.fgm_epsilon}), "
        f"`pgd` (epsilon {config.pgd_epsilon}, step size {config.pgd_step_size}, {config.pgd_steps} steps), "
        f"`rdrop` (rdrop_weight={config.rdrop_weight}, dropout {config.dropout}), "
        f"`layer_decay` (layer_decay={config.layer_decay}: the embeddings learn at "
        f"{config.layer_decay ** (config.layers + 1):.2f}x the head's rate), "
        "`mean_pooling` (`PooledClassifier(pooling='mean')` instead of 'cls').",
        "",
        "![test accuracy per arm](test_accuracy.png)",
        "",
        "![validation accuracy per epoch](validation_accuracy.png)",
    ]
    write_markdown(
        report_dir, "Tricks: which one helps a small text classifier, and by how much?", verdict, lines
    )
    return verdict


def _difference(values: dict[str, dict[str, list[float]]], arm: str, metric: str) -> str | None:
    if BASELINE not in values or arm == BASELINE:
        return None
    ours, theirs = values[arm][metric], values[BASELINE][metric]
    delta = mean_std(ours)[0] - mean_std(theirs)[0]
    return f"{delta:+.3f}" + (" *" if exceeds_spread(ours, theirs) else "")


def collapse(run: dict) -> Collapse | None:
    """How one arm x seed collapsed to a single class, or None when it did not.

    The arms record no predictions, but their scores tell: predicting class k for all N test texts scores
    accuracy n_k / N and macro-F1 2 n_k / (C (N + n_k)), highest for the largest class."""
    counts, classes = run["counts"]["test"], run["classes"]
    total = sum(counts)
    constant = [(n / total, 2 * n / (len(counts) * (total + n))) for n in counts]
    largest = max(range(len(counts)), key=counts.__getitem__)
    if run["macro_f1"] > constant[largest][1] + COLLAPSE_MARGIN:
        return None
    for k, (accuracy, macro_f1) in enumerate(constant):
        if math.isclose(run["accuracy"], accuracy, abs_tol=1e-9) and math.isclose(
            run["macro_f1"], macro_f1, abs_tol=1e-9
        ):
            return Collapse(classes[k], exact=True, majority=counts[k] == counts[largest])
    return Collapse(classes[largest], exact=False, majority=True)


def verdict(results: list) -> str:
    """The verdict line of `ArmResult`s: each trick against the baseline beyond the seeds' spread, arms that
    collapsed to one class named instead of ranked."""
    by_arm = results_by_arm(results)
    collapses = {arm: [collapse(run) for run in runs] for arm, runs in by_arm.items()}
    return _verdict(metric_values(by_arm, METRICS), collapses)


def _verdict(values: dict[str, dict[str, list[float]]], collapses: dict[str, list[Collapse | None]]) -> str:
    collapsed = {arm: runs for arm, runs in collapses.items() if all(runs)}
    learned = {arm: v for arm, v in values.items() if arm not in collapsed}
    if not learned:
        return _every_arm_collapsed(collapsed)
    spread = one_seed_hedge(values)
    notes = _collapse_notes(collapsed, collapses)
    if BASELINE not in values:
        best = max(learned, key=lambda arm: mean_std(learned[arm]["accuracy"])[0])
        ranking = f"no baseline arm ran; best accuracy {mean_std(learned[best]['accuracy'])[0]:.3f} ({best})"
    elif BASELINE in collapsed:
        ranking = (
            f"the baseline collapsed to one class ({_how(collapsed[BASELINE])}): no reference to measure the "
            "tricks against; accuracy of the arms that learned: "
            + ", ".join(f"{arm} {mean_std(learned[arm]['accuracy'])[0]:.3f}" for arm in _by_accuracy(learned))
        )
    else:
        ranking = _against_baseline(learned, others_ran=len(values) > 1)
    return "; ".join([ranking, *notes]) + spread


def _against_baseline(values: dict[str, dict[str, list[float]]], others_ran: bool) -> str:
    """Each arm's accuracy against the baseline's, beyond the seeds' spread or within it."""
    base = mean_std(values[BASELINE]["accuracy"])[0]
    deltas = {arm: mean_std(v["accuracy"])[0] - base for arm, v in values.items() if arm != BASELINE}
    if not deltas:
        return (
            f"baseline accuracy {base:.3f}" if others_ran else f"only the baseline ran: accuracy {base:.3f}"
        )
    real = {
        arm: d
        for arm, d in deltas.items()
        if exceeds_spread(values[arm]["accuracy"], values[BASELINE]["accuracy"])
    }
    helped = sorted((arm for arm, d in real.items() if d > 0), key=lambda arm: -deltas[arm])
    hurt = sorted((arm for arm, d in real.items() if d < 0), key=lambda arm: deltas[arm])
    parts = [f"baseline accuracy {base:.3f}"]
    if helped:
        parts.append(
            "beyond the seeds' spread, " + ", ".join(f"{a} {deltas[a]:+.3f}" for a in helped) + " helped"
        )
    if hurt:
        parts.append(", ".join(f"{a} {deltas[a]:+.3f}" for a in hurt) + " hurt")
    rest = [a for a in deltas if a not in real]
    if rest:
        parts.append(
            ("no other trick" if helped or hurt else "no trick")
            + " moved accuracy beyond the spread ("
            + ", ".join(f"{a} {deltas[a]:+.3f}" for a in rest)
            + ")"
        )
    return "; ".join(parts)


def _by_accuracy(values: dict[str, dict[str, list[float]]]) -> list[str]:
    return sorted(values, key=lambda arm: -mean_std(values[arm]["accuracy"])[0])


def _every_arm_collapsed(collapsed: dict[str, list[Collapse]]) -> str:
    runs = [c for cs in collapsed.values() for c in cs]
    to = "the majority class" if all(c.majority for c in runs) else "one class"
    groups = _group(collapsed)
    if len(groups) == 1:
        (how,) = groups
        what = f"each {how}"
    else:
        what = "; ".join(f"{', '.join(arms)}: {how}" for how, arms in groups.items())
    return f"every arm collapsed to {to} ({what}): {TOO_SHORT}"


def _collapse_notes(
    collapsed: dict[str, list[Collapse]], collapses: dict[str, list[Collapse | None]]
) -> list[str]:
    """Which arms collapsed in every seed (not ranked) and which in some (their means include it)."""
    notes = []
    others = {arm: runs for arm, runs in collapsed.items() if arm != BASELINE}
    if others:
        groups = _group(others)
        notes.append(
            "collapsed to one class, so not ranked: "
            + ", ".join(
                f"{', '.join(arms)} ({'each ' if len(arms) > 1 else ''}{how})" for how, arms in groups.items()
            )
        )
    for arm, runs in collapses.items():
        if any(runs) and not all(runs):
            notes.append(
                f"{arm} collapsed to one class in {sum(map(bool, runs))} of {len(runs)} seeds (its mean "
                "includes them)"
            )
    return notes


def _group(collapsed: dict[str, list[Collapse]]) -> dict[str, list[str]]:
    """How the arms collapsed -> the arms that collapsed so."""
    groups: dict[str, list[str]] = defaultdict(list)
    for arm, runs in collapsed.items():
        groups[_how(runs)].append(arm)
    return groups


def _how(runs: list[Collapse]) -> str:
    return str(runs[0]) if len(set(runs)) == 1 else "predicts one class in each seed, not always the same"


def _collapse_mark(runs: list[Collapse | None]) -> str | None:
    """The table's note on an arm that collapsed in some or every seed."""
    hits = [c for c in runs if c]
    if not hits:
        return None
    labels = ", ".join(dict.fromkeys(f"{c.label!r}" + ("" if c.exact else " (nearly)") for c in hits))
    return labels if len(hits) == len(runs) else f"{labels} in {len(hits)} of {len(runs)} seeds"


def _plot_arms(values: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Test accuracy per arm: each seed a dot, the mean a bar with ± one standard deviation."""
    require("matplotlib", "Plotting the report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    arms = list(values)
    for x, arm in enumerate(arms):
        points = values[arm]["accuracy"]
        mean, std = mean_std(points)
        axes.errorbar([x], [mean], yerr=[std], fmt="o", color="C0", capsize=6, markersize=8)
        axes.scatter([x] * len(points), points, color="C1", s=14, zorder=3)
    if BASELINE in values:
        axes.axhline(mean_std(values[BASELINE]["accuracy"])[0], color="grey", linestyle="--", linewidth=1)
    axes.set_xticks(range(len(arms)), arms, rotation=20)
    axes.set_ylabel("test accuracy")
    axes.set_title("test accuracy per arm: mean ± sd (blue), seeds (orange)")
    axes.grid(True, axis="y", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    figure.savefig(temp, format="png", dpi=120)
    os.replace(temp, path)
