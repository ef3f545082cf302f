"""The imbalanced experiment's verdict and table on synthetic arm results (no training): arms that collapsed
to one class at p > 0.5 (cross-entropy included) are named, not compared, and a run where every arm
collapsed says so instead of comparing objectives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit.experiments.imbalanced.experiment import ImbalancedConfig
from tunekit.experiments.imbalanced.report import Collapse, collapse, verdict, write_report
from tunekit.experiments.runner import ArmResult

TEST_COUNTS = [983, 49]  # majority, minority: the test split of the default and --quick runs
TOTAL = sum(TEST_COUNTS)
ONE_SEED = " (one seed: no spread to judge by, read it as a hint)"
TOO_SHORT = "the run is too short to compare objectives; run without --quick or with more --epochs"
DOCS = Path(__file__).parents[1] / "docs" / "imbalanced" / "results.json"


def run(arm: str, f1: float, tuned: float, pr_auc: float, predicted: int, seed: int = 0) -> ArmResult:
    """One arm x seed: minority F1 at p > 0.5, tuned minority F1, PR-AUC and how many of the test texts it
    predicts as the minority at p > 0.5."""
    result = {
        "objective": arm,
        "options": {},
        "class_weights": [],
        "counts": {"train": [300, 100], "validation": [990, 52], "test": TEST_COUNTS},
        "minority_f1": f1,
        "minority_f1_tuned": tuned,
        "pr_auc": pr_auc,
        "macro_f1": 0.5 + f1 / 2,
        "precision": f1,
        "recall": f1,
        "tuned_threshold": 0.4,
        "predicted_positive_rate": predicted / TOTAL,
        "mean_minority_probability": 0.05,
        "pr_curve": [[0.0, 1.0], [1.0, pr_auc]],
        "f1_by_threshold": [[0.5, f1]],
        "epochs": [{"epoch": 1, "validation_minority_f1": f1, "validation_pr_auc": pr_auc}],
    }
    return ArmResult(arm, seed, result, seconds=10.0)


def test_collapse_is_relative_to_the_class_size():
    assert collapse(run("a", 0, 0.1, 0.07, predicted=0).result) == Collapse("majority", 0, TOTAL)
    assert collapse(run("a", 0.1, 0.1, 0.07, predicted=4).result) == Collapse("majority", 4, TOTAL)
    assert collapse(run("a", 0.2, 0.2, 0.2, predicted=5).result) is None  # 5 of 49: a tenth of the minority
    assert collapse(run("a", 0.7, 0.7, 0.76, predicted=42).result) is None
    assert collapse(run("a", 0.09, 0.1, 0.07, predicted=TOTAL).result) == Collapse("minority", 0, TOTAL)
    assert collapse(run("a", 0.1, 0.1, 0.07, predicted=TOTAL - 90).result) == Collapse("minority", 90, TOTAL)


def test_every_arm_collapsed_in_a_quick_run_is_not_a_comparison():
    """`tunekit run imbalanced --quick`: every arm predicted the majority for all 1032 test texts and the
    verdict compared cross-entropy with the others as if it had not collapsed."""
    results = [
        run("cross_entropy", 0.0, 0.10, 0.07, predicted=0),
        run("weighted_ce", 0.0, 0.08, 0.08, predicted=0),
        run("focal", 0.0, 0.10, 0.07, predicted=0),
        run("dice", 0.0, 0.12, 0.07, predicted=0),
    ]
    assert verdict(results) == (
        "every arm collapsed to the majority class at p > 0.5 (each predicting the minority for none of the "
        "1032 test texts), so F1 at p > 0.5 cannot compare them; PR-AUC, which needs no threshold: "
        "cross_entropy 0.07, weighted_ce 0.08, focal 0.07, dice 0.07 (0.05 by chance); near chance too: "
        + TOO_SHORT
    )


def test_every_arm_collapsed_with_a_ranking_above_chance_is_not_called_too_short():
    results = [run("cross_entropy", 0.0, 0.5, 0.6, predicted=0), run("focal", 0.0, 0.4, 0.5, predicted=2)]
    text = verdict(results)
    assert text.startswith("every arm collapsed to the majority class at p > 0.5 (in every seed)")
    assert text.endswith("cross_entropy 0.60, focal 0.50 (0.05 by chance)" + ONE_SEED)
    assert "too short" not in text


def test_a_collapsed_cross_entropy_is_named_and_the_others_compared_with_it():
    results = [
        run("cross_entropy", 0.0, 0.40, 0.45, predicted=0),
        run("weighted_ce", 0.50, 0.48, 0.47, predicted=60),
        run("dice", 2 * 49 / (TOTAL + 49), 0.10, 0.06, predicted=TOTAL),
    ]
    assert verdict(results) == (
        "cross-entropy 0.00 / 0.40 / 0.45 (minority F1 at p > 0.5 / minority F1 with the threshold tuned on "
        "validation / PR-AUC), collapsed to the majority class at p > 0.5, predicting the minority for none "
        "of the 1032 test texts; weighted_ce differs beyond the seeds' spread: minority F1 +0.50, PR-AUC "
        "+0.02 (0.50 / 0.48 / 0.47); dice collapsed to the minority class at p > 0.5, predicting the "
        "majority for none of the 1032 test texts (0.09 / 0.10 / 0.06)" + ONE_SEED
    )


def test_an_arm_collapsed_in_some_seeds_is_compared_with_a_note():
    results = []
    for seed in range(3):
        results += [
            run("cross_entropy", 0.70 + seed / 100, 0.70, 0.76, predicted=42, seed=seed),
            run("focal", 0.71 + seed / 100, 0.70, 0.76, predicted=40, seed=seed),
        ]
    results[-1] = run("focal", 0.0, 0.1, 0.1, predicted=0, seed=2)
    text = verdict(results)
    assert text.startswith("cross-entropy 0.71 / 0.70 / 0.76")
    assert text.endswith("focal collapsed to one class at p > 0.5 in 1 of 3 seeds (its means include them)")


@pytest.mark.parametrize("seeds", [1, 2])
def test_the_table_marks_collapsed_arms(tmp_path, seeds):
    results = [run("cross_entropy", 0.7, 0.7, 0.76, predicted=42, seed=seed) for seed in range(seeds)] + [
        run("dice", 0.0, 0.12, 0.07, predicted=0, seed=seed) for seed in range(seeds)
    ]
    write_report(ImbalancedConfig(seeds=seeds), results, tmp_path)
    table = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| ")]
    assert table[0].endswith("| mean p(minority) | collapsed at p > 0.5 |")
    assert table[1].startswith("| cross_entropy |") and table[1].endswith("|  |")
    assert table[2].startswith("| dice |") and table[2].endswith("| to the majority |")


def test_the_measured_run_in_docs_gets_the_verdict_it_shows():
    stored = json.loads(DOCS.read_text())
    assert verdict([ArmResult(**entry) for entry in stored["results"]]) == stored["verdict"]
