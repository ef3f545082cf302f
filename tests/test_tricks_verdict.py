"""The tricks ablation's verdict and table on synthetic arm results (no training): arms that collapsed to one
class are named, not ranked, and a run where every arm collapsed says it is too short to compare tricks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunekit.experiments.runner import ArmResult
from tunekit.experiments.tricks.experiment import TricksConfig
from tunekit.experiments.tricks.report import Collapse, collapse, verdict, write_report

CLASSES = ["tkinter", "asyncio", "distutils", "email"]
TEST_COUNTS = [105, 49, 43, 33]  # the --quick run's test split
ONE_SEED = " (one seed: no spread to judge by, read it as a hint)"
DOCS = Path(__file__).parents[1] / "docs" / "tricks" / "results.json"


def single_class(label: str) -> tuple[float, float]:
    """(accuracy, macro-F1) of predicting `label` for every test text: the class's F1 is 2 n / (N + n),
    every other class's 0."""
    n, total = TEST_COUNTS[CLASSES.index(label)], sum(TEST_COUNTS)
    return n / total, 2 * n / (total + n) / len(CLASSES)


def run(name: str, accuracy: float, macro_f1: float, seed: int = 0) -> ArmResult:
    result = {
        "tricks": {},
        "pooling": "cls",
        "classes": CLASSES,
        "counts": {"train": [40, 20, 20, 20], "validation": [30, 10, 10, 10], "test": TEST_COUNTS},
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "epochs": [{"epoch": 1, "validation_accuracy": accuracy, "validation_macro_f1": macro_f1}],
    }
    return ArmResult(name, seed, result, seconds=10.0)


def collapsed(name: str, label: str = "tkinter", seed: int = 0) -> ArmResult:
    return run(name, *single_class(label), seed=seed)


def test_predicting_one_class_everywhere_is_recognised_from_accuracy_and_macro_f1():
    assert collapse(collapsed("baseline").result) == Collapse("tkinter", exact=True, majority=True)
    assert collapse(collapsed("baseline", "email").result) == Collapse("email", exact=True, majority=False)
    accuracy, macro_f1 = single_class("tkinter")
    nearly = collapse(run("baseline", accuracy + 0.004, macro_f1 + 0.005).result)
    assert nearly == Collapse("tkinter", exact=False, majority=True)
    assert collapse(run("baseline", accuracy, macro_f1 + 0.02).result) is None
    assert collapse(run("baseline", 0.62, 0.55).result) is None


def test_every_arm_collapsed_in_a_quick_run_is_not_a_ranking():
    """`tunekit run tricks --quick`: every arm predicted 'tkinter' for all 230 test texts, and the verdict
    said "baseline accuracy 0.457; no trick moved accuracy beyond the spread (ema +0.000, ...)"."""
    arms = ["baseline", "ema", "fgm", "pgd", "rdrop", "layer_decay", "mean_pooling"]
    assert verdict([collapsed(arm) for arm in arms]) == (
        "every arm collapsed to the majority class (each predicts 'tkinter' for every test text): the run is "
        "too short to compare tricks; run without --quick or with more --epochs"
    )


def test_collapsed_arms_are_named_and_the_rest_ranked():
    results = []
    for seed, (base, ema) in enumerate([(0.70, 0.80), (0.71, 0.81), (0.72, 0.82)]):
        results += [
            run("baseline", base, base - 0.05, seed),
            run("ema", ema, ema - 0.05, seed),
            run("rdrop", base + 0.01, base - 0.04, seed),
            collapsed("fgm", seed=seed),
            collapsed("pgd", seed=seed),
        ]
    assert verdict(results) == (
        "baseline accuracy 0.710; beyond the seeds' spread, ema +0.100 helped; no other trick moved accuracy "
        "beyond the spread (rdrop +0.010); collapsed to one class, so not ranked: fgm, pgd (each predicts "
        "'tkinter' for every test text)"
    )


def test_a_collapsed_baseline_is_no_reference():
    learned = [run("ema", 0.55, 0.40), run("mean_pooling", 0.62, 0.50)]
    results = [collapsed("baseline"), *learned, collapsed("fgm")]
    assert verdict(results) == (
        "the baseline collapsed to one class (predicts 'tkinter' for every test text): no reference to "
        "measure the tricks against; accuracy of the arms that learned: mean_pooling 0.620, ema 0.550; "
        "collapsed to one class, so not ranked: fgm (predicts 'tkinter' for every test text)" + ONE_SEED
    )


def test_an_arm_collapsed_in_some_seeds_is_ranked_with_a_note():
    results = []
    for seed in range(3):
        results += [run("baseline", 0.70 + seed / 100, 0.65, seed), run("ema", 0.71 + seed / 100, 0.66, seed)]
    results[-1] = collapsed("ema", seed=2)
    text = verdict(results)
    assert text.startswith("baseline accuracy 0.710; ")
    assert text.endswith("ema collapsed to one class in 1 of 3 seeds (its mean includes them)")


def test_only_arms_that_learned_compete_without_a_baseline():
    results = [collapsed("ema"), run("fgm", 0.40, 0.30)]
    assert verdict(results).startswith("no baseline arm ran; best accuracy 0.400 (fgm); collapsed to one")
    assert verdict([collapsed("ema"), collapsed("fgm", "email")]) == (
        "every arm collapsed to one class (ema: predicts 'tkinter' for every test text; fgm: predicts "
        "'email' for every test text): the run is too short to compare tricks; run without --quick or with "
        "more --epochs"
    )


def test_the_table_marks_collapsed_arms(tmp_path):
    results = [run("baseline", 0.62, 0.55), collapsed("ema"), run("fgm", *single_class("tkinter")[:1], 0.16)]
    write_report(TricksConfig(seeds=1), results, tmp_path)
    table = [line for line in (tmp_path / "report.md").read_text().splitlines() if line.startswith("| ")]
    assert table[0].endswith("| time vs baseline | collapsed to one class |")
    assert table[1].startswith("| baseline |") and table[1].endswith("|  |")
    assert table[2].startswith("| ema |") and table[2].endswith("| 'tkinter' |")
    assert table[3].startswith("| fgm |") and table[3].endswith("| 'tkinter' (nearly) |")


def test_a_run_without_collapse_keeps_its_table_and_verdict(tmp_path):
    """The measured run in docs/: no arm collapsed, so no extra column and the verdict it printed."""
    stored = json.loads(DOCS.read_text())
    results = [ArmResult(**entry) for entry in stored["results"]]
    assert verdict(results) == stored["verdict"]
    write_report(TricksConfig(), results, tmp_path)
    assert "collapsed to one class |" not in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize("label", CLASSES)
def test_collapse_to_any_class_is_found(label):
    assert collapse(collapsed("baseline", label).result).label == label
