"""The imbalanced experiment's report: the table over seeds, precision-recall and F1-by-threshold plots,
validation curves per epoch, and a verdict measured against plain cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...runs.report import markdown_table, mean_std, plot_curves
from ..report_parts import (
    exceeds_spread,
    metric_values,
    one_seed_hedge,
    per_epoch,
    points,
    results_by_arm,
    spread_cells,
    write_markdown,
)

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
# An arm collapsed to one class when, at p > 0.5, it predicts the other class fewer times than this share of
# that class's test texts: relative to the class's size, because the minority is only 1-5% of the texts.
COLLAPSE_SHARE = 0.1
NEAR_CHANCE = 2.0  # PR-AUC under this many times the minority's share: a ranking near chance
TOO_SHORT = "the run is too short to compare objectives; run without --quick or with more --epochs"


@dataclass(frozen=True)
class Collapse:
    """One arm x seed that predicts one class at p > 0.5 for (nearly) every test text."""

    to: str  # "majority" or "minority"
    others: int  # test texts predicted as the other class
    total: int

    def __str__(self) -> str:
        other = "minority" if self.to == "majority" else "majority"
        count = "none" if self.others == 0 else self.others
        return f"predicting the {other} for {count} of the {self.total} test texts"


def write_report(config: Any, results: list, report_dir: Path) -> str:
    """Write report.md and the plots into `report_dir`; return the verdict line."""
    by_arm = results_by_arm(results)
    values = metric_values(by_arm, METRICS)
    collapses = {arm: [collapse(run) for run in runs] for arm, runs in by_arm.items()}
    first = next(iter(by_arm.values()))[0]
    counts = first["counts"]
    verdict = _verdict(values, collapses, _minority_share(first))

    rows = [[arm, *spread_cells(values[arm], METRICS)] for arm in by_arm]
    headers = ["arm", *METRICS.values()]
    if any(any(c) for c in collapses.values()):  # the column only when it has something to say
        headers.append("collapsed at p > 0.5")
        for row, arm in zip(rows, by_arm, strict=True):
            row.append(_collapse_mark(collapses[arm]))
    plot_curves(
        points(by_arm, "pr_curve"),
        report_dir / "pr_curve.png",
        title="precision-recall on the test split (band: min-max over seeds)",
        xlabel="recall",
        ylabel="precision (interpolated)",
        ylim=(0, 1.02),
    )
    plot_curves(
        points(by_arm, "f1_by_threshold"),
        report_dir / "f1_by_threshold.png",
        title="minority F1 on the test split by decision threshold",
        xlabel="threshold on p(minority)",
        ylabel="minority F1",
        ylim=(0, 1),
    )
    plot_curves(
        per_epoch(by_arm, "validation_pr_auc"),
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
        f"Task: from a standard-library function's first docstring line, is it from the `{config.minority}` "
        f"package? Minority examples per split: {share} "
        f"({minority['train'] / total['train']:.1%} of the training split). {config.describe_model()}, "
        f"fine-tuned for {config.epochs} epochs per arm, {config.seeds} seed(s); mean ± sample standard "
        "deviation over seeds, all on the test split. The tuned threshold maximises F1 on the validation "
        "split and is then applied to the test split, which never chooses anything.",
        "",
        markdown_table(headers, rows),
        "",
        "Arms: `cross_entropy` (tunekit's `cross_entropy`), `weighted_ce` (`cross_entropy` with `weight=` "
        f"the balanced class weights {[round(w, 3) for w in _weights(by_arm)]}; the Trainer passes "
        "`num_items_in_batch`, so the weighted sum is divided by the batch's label count, Hugging Face's "
        "convention, not by the sum of the labels' weights), "
        f"`focal` (`focal_loss`, gamma {config.focal_gamma}, no alpha), `dice` (batch dice over both "
        "classes, `CLASSIFICATION_LOSSES['dice']`).",
        "",
        "Against cross-entropy (a difference counts as real when the means differ by more than the two "
        "standard deviations added):",
        "",
        *_comparisons(values),
        "",
        f"The minority is {minority['test'] / total['test']:.1%} of the test split; a calibrated model's "
        "mean p(minority) is near that, an arm that collapsed has it near 0. An arm collapsed to one class "
        f"when, at p > 0.5, it predicts the other class fewer times than {COLLAPSE_SHARE:.0%} of that "
        "class's test texts; the verdict does not compare collapsed arms.",
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
    title = "Imbalanced classification: which objective finds the minority class?"
    write_markdown(report_dir, title, verdict, lines)
    return verdict


def _weights(by_arm: dict[str, list[dict]]) -> list[float]:
    for runs in by_arm.values():
        if runs[0]["class_weights"]:
            return runs[0]["class_weights"]
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


def _minority_share(run: dict) -> float:
    """The minority's share of the test split: the PR-AUC of a random ranking."""
    majority, minority = run["counts"]["test"]
    return minority / (majority + minority)


def collapse(run: dict) -> Collapse | None:
    """How one arm x seed collapsed to a single class at p > 0.5, or None when it predicts both."""
    majority, minority = run["counts"]["test"]
    total = majority + minority
    predicted_minority = round(run["predicted_positive_rate"] * total)
    if predicted_minority < COLLAPSE_SHARE * minority:
        return Collapse("majority", predicted_minority, total)
    if total - predicted_minority < COLLAPSE_SHARE * majority:
        return Collapse("minority", total - predicted_minority, total)
    return None


def verdict(results: list) -> str:
    """The verdict line of `ArmResult`s: each objective against cross-entropy on minority F1 at p > 0.5 and
    PR-AUC, beyond the seeds' spread or within it; arms that collapsed to one class named, not compared."""
    by_arm = results_by_arm(results)
    collapses = {arm: [collapse(run) for run in runs] for arm, runs in by_arm.items()}
    chance = _minority_share(next(iter(by_arm.values()))[0])
    return _verdict(metric_values(by_arm, METRICS), collapses, chance)


def _verdict(
    values: dict[str, dict[str, list[float]]],
    collapses: dict[str, list[Collapse | None]],
    chance: float,
) -> str:
    """One line: cross-entropy's numbers, then each other arm as better, worse, collapsed or within the seeds'
    spread, on minority F1 at p > 0.5 and on PR-AUC; `chance` is the PR-AUC of a random ranking."""
    mean = {arm: {m: mean_std(v)[0] for m, v in metrics.items()} for arm, metrics in values.items()}
    hedge = one_seed_hedge(values)
    collapsed = {arm: runs for arm, runs in collapses.items() if all(runs)}
    if len(collapsed) == len(values):
        return _every_arm_collapsed(collapsed, mean, chance, hedge)
    if BASELINE in values and len(values) > 1:
        parts = _against_baseline(values, mean, collapsed)
    else:
        best = max((arm for arm in mean if arm not in collapsed), key=lambda arm: mean[arm]["pr_auc"])
        parts = [
            f"only {', '.join(values)} ran; best PR-AUC {mean[best]['pr_auc']:.2f} ({best}); "
            "add cross_entropy to compare",
            *(f"{arm} {_collapsed(runs)}" for arm, runs in collapsed.items()),
        ]
    return "; ".join(parts + _partial_collapse_notes(collapses)) + hedge


def _against_baseline(
    values: dict[str, dict[str, list[float]]],
    mean: dict[str, dict[str, float]],
    collapsed: dict[str, list[Collapse]],
) -> list[str]:
    base = mean[BASELINE]
    baseline = (
        f"cross-entropy {_numbers(base)} (minority F1 at p > 0.5 / minority F1 with the threshold tuned on "
        "validation / PR-AUC)"
    )
    if BASELINE in collapsed:
        baseline += f", {_collapsed(collapsed[BASELINE])}"
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
        if arm in collapsed:
            other.append(f"{arm} {_collapsed(collapsed[arm])} ({numbers})")
        elif not changes:
            same.append(f"{arm} {numbers}")
        else:
            how = ", ".join(f"{METRICS[m].split(' (')[0]} {d:+.2f}" for m, d in changes.items())
            other.append(f"{arm} differs beyond the seeds' spread: {how} ({numbers})")
    if same:
        return [baseline, "within the seeds' spread of it: " + ", ".join(same), *other]
    return [baseline, *other]


def _every_arm_collapsed(
    collapsed: dict[str, list[Collapse]], mean: dict[str, dict[str, float]], chance: float, hedge: str
) -> str:
    """F1 at p > 0.5 compares nothing; PR-AUC still tells whether any arm learned a ranking."""
    tos = {_to(runs) for runs in collapsed.values()}
    to = f"the {tos.pop()} class" if len(tos) == 1 else "one class"
    hows = {_how(runs) for runs in collapsed.values()}
    how = f"each {hows.pop()}" if len(hows) == 1 else "in every seed"
    pr_auc = ", ".join(f"{arm} {mean[arm]['pr_auc']:.2f}" for arm in collapsed)
    line = (
        f"every arm collapsed to {to} at p > 0.5 ({how}), so F1 at p > 0.5 cannot compare them; PR-AUC, "
        f"which needs no threshold: {pr_auc} ({chance:.2f} by chance)"
    )
    if max(m["pr_auc"] for m in mean.values()) < NEAR_CHANCE * chance:
        return f"{line}; near chance too: {TOO_SHORT}"
    return line + hedge


def _partial_collapse_notes(collapses: dict[str, list[Collapse | None]]) -> list[str]:
    return [
        f"{arm} collapsed to one class at p > 0.5 in {sum(map(bool, runs))} of {len(runs)} seeds (its means "
        "include them)"
        for arm, runs in collapses.items()
        if any(runs) and not all(runs)
    ]


def _collapsed(runs: list[Collapse]) -> str:
    return f"collapsed to the {_to(runs)} class at p > 0.5, {_how(runs)}"


def _to(runs: list[Collapse]) -> str:
    tos = {c.to for c in runs}
    return tos.pop() if len(tos) == 1 else "majority or minority"


def _how(runs: list[Collapse]) -> str:
    return str(runs[0]) if len(set(runs)) == 1 else f"in each of its {len(runs)} seeds"


def _collapse_mark(runs: list[Collapse | None]) -> str | None:
    """The table's note on an arm that collapsed in some or every seed."""
    hits = [c for c in runs if c]
    if not hits:
        return None
    to = "to the " + " or ".join(dict.fromkeys(c.to for c in hits))
    return to if len(hits) == len(runs) else f"{to} in {len(hits)} of {len(runs)} seeds"


def _numbers(means: dict[str, float]) -> str:
    return f"{means['minority_f1']:.2f} / {means['minority_f1_tuned']:.2f} / {means['pr_auc']:.2f}"
