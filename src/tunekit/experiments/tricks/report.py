"""The tricks ablation's report: accuracy and macro-F1 per arm over seeds, each arm's difference to the
baseline against the seeds' spread, the time each trick costs, plots and a verdict."""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from ..report import markdown_table, mean_and_spread, plot_curves, require, write_text
from ..textcls.summary import exceeds_spread, mean_std

BASELINE = "baseline"
METRICS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def write_report(config: Any, results: list, report_dir: Path) -> str:
    """Write report.md and the plots into `report_dir`; return the verdict line."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    seconds: dict[str, list[float]] = defaultdict(list)
    for result in results:
        by_arm[result.arm].append(result.result)
        seconds[result.arm].append(result.seconds)
    values = {arm: {m: [r[m] for r in runs] for m in METRICS} for arm, runs in by_arm.items()}
    first = next(iter(by_arm.values()))[0]
    verdict = _verdict(values, config.seeds)

    base_time = mean_std(seconds[BASELINE])[0] if BASELINE in seconds else None
    rows = []
    for arm in by_arm:
        row: list[object] = [arm, *(mean_and_spread(values[arm][m], digits=3) for m in METRICS)]
        for metric in METRICS:
            row.append(_difference(values, arm, metric))
        row.append(f"{mean_std(seconds[arm])[0] / base_time:.1f}x" if base_time else None)
        rows.append(row)
    plot_curves(
        {
            arm: [(e["epoch"], e["validation_accuracy"]) for r in runs for e in r["epochs"]]
            for arm, runs in by_arm.items()
        },
        report_dir / "validation_accuracy.png",
        title="accuracy on the validation split per epoch (band: min-max over seeds)",
        xlabel="epoch",
        ylabel="accuracy",
    )
    _plot_arms(values, report_dir / "test_accuracy.png")
    counts = first["counts"]
    lines = [
        "# Tricks: which one helps a small text classifier, and by how much?",
        "",
        f"**Verdict:** {verdict}",
        "",
        f"Task: from a standard-library function's first docstring line, which of {len(first['classes'])} "
        f"package families is it from ({', '.join(first['classes'])})? {sum(counts['train'])} training, "
        f"{sum(counts['validation'])} validation and {sum(counts['test'])} test texts; the largest class is "
        f"{max(counts['test']) / sum(counts['test']):.0%} of the test split. {config.describe_model()}, "
        f"fine-tuned with cross-entropy for {config.epochs} epochs; every arm is the baseline ([CLS] "
        f"pooling, no trick) with one change. {config.seeds} seed(s) per arm (the seed sets the head's "
        "initialisation, dropout and the batch order); mean ± sample standard deviation over seeds, on the "
        "test split.",
        "",
        markdown_table(
            ["arm", *METRICS.values(), "accuracy vs baseline", "macro-F1 vs baseline", "time vs baseline"],
            rows,
        ),
        "",
        "A difference is marked * when it exceeds the spread: the two means differ by more than their "
        "standard deviations added (the intervals mean ± sd do not overlap). Time is the arm's wall time "
        "against the baseline's on the same machine.",
        "",
        "Arms (`TrainerTricks` options): "
        f"`ema` (ema_decay={config.ema_decay}, evaluated with the averages), "
        f"`fgm` (adversarial='fgm', epsilon {config.fgm_epsilon}), "
        f"`pgd` (epsilon {config.pgd_epsilon}, alpha {config.pgd_alpha}, {config.pgd_steps} steps), "
        f"`rdrop` (rdrop_alpha={config.rdrop_alpha}, dropout {config.dropout}), "
        f"`layer_decay` (layer_decay={config.layer_decay}: the embeddings learn at "
        f"{config.layer_decay ** (config.layers + 1):.2f}x the head's rate), "
        "`mean_pooling` (`PooledClassifier(pooling='mean')` instead of 'cls').",
        "",
        "![test accuracy per arm](test_accuracy.png)",
        "",
        "![validation accuracy per epoch](validation_accuracy.png)",
    ]
    write_text(report_dir / "report.md", "\n".join(lines) + "\n")
    return verdict


def _difference(values: dict[str, dict[str, list[float]]], arm: str, metric: str) -> str | None:
    if BASELINE not in values or arm == BASELINE:
        return None
    ours, theirs = values[arm][metric], values[BASELINE][metric]
    delta = mean_std(ours)[0] - mean_std(theirs)[0]
    return f"{delta:+.3f}" + (" *" if exceeds_spread(ours, theirs) else "")


def _verdict(values: dict[str, dict[str, list[float]]], seeds: int) -> str:
    if BASELINE not in values:
        best = max(values, key=lambda arm: mean_std(values[arm]["accuracy"])[0])
        return f"no baseline arm ran; best accuracy {mean_std(values[best]['accuracy'])[0]:.3f} ({best})"
    base = mean_std(values[BASELINE]["accuracy"])[0]
    deltas = {arm: mean_std(v["accuracy"])[0] - base for arm, v in values.items() if arm != BASELINE}
    if not deltas:
        return f"only the baseline ran: accuracy {base:.3f}"
    real = {
        arm: d
        for arm, d in deltas.items()
        if exceeds_spread(values[arm]["accuracy"], values[BASELINE]["accuracy"])
    }
    helped = sorted((arm for arm, d in real.items() if d > 0), key=lambda arm: -deltas[arm])
    hurt = sorted((arm for arm, d in real.items() if d < 0), key=lambda arm: deltas[arm])
    spread = "" if seeds > 1 else " (one seed: no spread to judge by, read it as a hint)"
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
    return "; ".join(parts) + spread


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
