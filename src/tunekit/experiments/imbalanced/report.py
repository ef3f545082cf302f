"""The imbalanced experiment's report: the table over seeds, precision-recall and F1-by-threshold plots,
validation curves per epoch, and a verdict measured against plain cross-entropy."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from ..report import markdown_table, mean_and_spread, plot_curves, write_text
from ..textcls.summary import exceeds_spread, mean_std

METRICS = {
    "minority_f1": "minority F1 (p > 0.5)",
    "minority_f1_tuned": "minority F1 (threshold tuned on validation)",
    "pr_auc": "PR-AUC",
    "macro_f1": "macro-F1 (p > 0.5)",
    "precision": "precision (p > 0.5)",
    "recall": "recall (p > 0.5)",
    "tuned_threshold": "tuned threshold",
    "mean_minority_probability": "mean p(minority)",
}
BASELINE = "cross_entropy"
COLLAPSED_F1 = 0.05  # minority F1 at p > 0.5 below this: the arm (almost) never predicts the minority


def write_report(config: Any, results: list, report_dir: Path) -> str:
    """Write report.md and the plots into `report_dir`; return the verdict line."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for result in results:
        by_arm[result.arm].append(result.result)
    values = {arm: {m: [r[m] for r in runs] for m in METRICS} for arm, runs in by_arm.items()}
    first = next(iter(by_arm.values()))[0]
    counts = first["counts"]
    verdict = _verdict(values)
    if config.seeds == 1:
        verdict += " (one seed: no spread to judge by, read it as a hint)"

    rows = [[arm, *(mean_and_spread(values[arm][m]) for m in METRICS)] for arm in by_arm]
    plot_curves(
        {arm: [tuple(point) for r in runs for point in r["pr_curve"]] for arm, runs in by_arm.items()},
        report_dir / "pr_curve.png",
        title="precision-recall on the test split (band: min-max over seeds)",
        xlabel="recall",
        ylabel="precision (interpolated)",
        ylim=(0, 1.02),
    )
    plot_curves(
        {arm: [tuple(point) for r in runs for point in r["f1_by_threshold"]] for arm, runs in by_arm.items()},
        report_dir / "f1_by_threshold.png",
        title="minority F1 on the test split by decision threshold",
        xlabel="threshold on p(minority)",
        ylabel="minority F1",
        ylim=(0, 1),
    )
    plot_curves(
        {
            arm: [(e["epoch"], e["validation_pr_auc"]) for r in runs for e in r["epochs"]]
            for arm, runs in by_arm.items()
        },
        report_dir / "validation_pr_auc.png",
        title="PR-AUC on the validation split per epoch",
        xlabel="epoch",
        ylabel="PR-AUC",
        ylim=(0, 1),
    )
    minority, total = (
        {split: c[1] for split, c in counts.items()},
        {split: sum(c) for split, c in counts.items()},
    )
    share = ", ".join(f"{split} {minority[split]} of {total[split]}" for split in counts)
    lines = [
        "# Imbalanced classification: which objective finds the minority class?",
        "",
        f"**Verdict:** {verdict}",
        "",
        f"Task: from a standard-library function's first docstring line, is it from the `{config.minority}` "
        f"package? Minority examples per split: {share} "
        f"({minority['train'] / total['train']:.1%} of the training split). {config.describe_model()}, "
        f"fine-tuned for {config.epochs} epochs per arm, {config.seeds} seed(s); mean ± sample standard "
        "deviation over seeds, all on the test split. The tuned threshold maximises F1 on the validation "
        "split and is then applied to the test split, which never chooses anything.",
        "",
        markdown_table(["arm", *METRICS.values()], rows),
        "",
        "Arms: `cross_entropy` (tunekit's `cross_entropy`), `weighted_ce` (`focal_loss` with gamma 0 and the "
        f"balanced class weights {[round(w, 3) for w in _weights(by_arm)]}: tunekit's `cross_entropy` has no "
        f"class weights), `focal` (`focal_loss`, gamma {config.focal_gamma}, no alpha), `dice` (batch dice "
        "over both classes, `CLASSIFICATION_LOSSES['dice']`).",
        "",
        "Against cross-entropy (a difference counts as real when the means differ by more than the two "
        "standard deviations added):",
        "",
        *_comparisons(values),
        "",
        f"The minority is {minority['test'] / total['test']:.1%} of the test split; a calibrated model's "
        "mean p(minority) is near that, an arm that collapsed has it near 0.",
        "",
        "How to read it: PR-AUC measures the ranking alone, whatever the threshold; minority F1 at p > 0.5 "
        "is what a user gets from `argmax`; the tuned F1 shows how much of the gap a threshold chosen on "
        "validation data closes. An objective that mainly shifts the scores (class weights) can raise F1 at "
        "the default threshold without improving the ranking.",
        "",
        "![precision-recall](pr_curve.png)",
        "",
        "![F1 by threshold](f1_by_threshold.png)",
        "",
        "![validation PR-AUC per epoch](validation_pr_auc.png)",
    ]
    write_text(report_dir / "report.md", "\n".join(lines) + "\n")
    return verdict


def _weights(by_arm: dict[str, list[dict]]) -> list[float]:
    for runs in by_arm.values():
        if "alpha" in runs[0]["options"]:
            return runs[0]["options"]["alpha"]
    from .arms import balanced_weights

    return balanced_weights(next(iter(by_arm.values()))[0]["counts"]["train"])


def _comparisons(values: dict[str, dict[str, list[float]]]) -> list[str]:
    if BASELINE not in values:
        return ["- (no cross_entropy arm to compare with)"]
    lines = []
    for arm in values:
        if arm == BASELINE:
            continue
        parts = []
        for metric in ("minority_f1", "minority_f1_tuned", "pr_auc", "macro_f1"):
            ours, theirs = values[arm][metric], values[BASELINE][metric]
            delta = mean_std(ours)[0] - mean_std(theirs)[0]
            real = "beyond the spread" if exceeds_spread(ours, theirs) else "within the spread"
            parts.append(f"{METRICS[metric].split(' (')[0]}{_qualifier(metric)} {delta:+.3f} ({real})")
        lines.append(f"- `{arm}`: " + "; ".join(parts))
    return lines


def _qualifier(metric: str) -> str:
    return {"minority_f1": " at 0.5", "minority_f1_tuned": " tuned", "macro_f1": " at 0.5"}.get(metric, "")


def _verdict(values: dict[str, dict[str, list[float]]]) -> str:
    """One line: cross-entropy's numbers, then each other arm as better, worse (collapsed when it predicts
    almost no minority item) or within the seeds' spread, on minority F1 at p > 0.5 and on PR-AUC."""
    mean = {arm: {m: mean_std(v)[0] for m, v in metrics.items()} for arm, metrics in values.items()}
    if BASELINE not in values or len(values) < 2:
        best = max(mean, key=lambda arm: mean[arm]["pr_auc"])
        return (
            f"only {', '.join(values)} ran; best PR-AUC {mean[best]['pr_auc']:.2f} ({best}); "
            "add cross_entropy to compare"
        )
    base = mean[BASELINE]
    parts = [
        f"cross-entropy {_numbers(base)} (minority F1 at p > 0.5 / minority F1 with the threshold tuned on "
        "validation / PR-AUC)"
    ]
    same, other = [], []
    for arm in values:
        if arm == BASELINE:
            continue
        numbers = _numbers(mean[arm])
        changes = {
            metric: mean[arm][metric] - base[metric]
            for metric in ("minority_f1", "pr_auc")
            if exceeds_spread(values[arm][metric], values[BASELINE][metric])
        }
        if mean[arm]["minority_f1"] < COLLAPSED_F1:
            other.append(f"{arm} collapsed to the majority class ({numbers})")
        elif not changes:
            same.append(f"{arm} {numbers}")
        else:
            how = ", ".join(f"{METRICS[m].split(' (')[0]} {d:+.2f}" for m, d in changes.items())
            other.append(f"{arm} differs beyond the seeds' spread: {how} ({numbers})")
    if same:
        parts.append("within the seeds' spread of it: " + ", ".join(same))
    return "; ".join(parts + other)


def _numbers(means: dict[str, float]) -> str:
    return f"{means['minority_f1']:.2f} / {means['minority_f1_tuned']:.2f} / {means['pr_auc']:.2f}"
