"""`tunekit run imbalanced --quick` end to end through the command line (`cli.main` in-process): the
report's files and fields, the arms' objectives, and the errors a user can cause."""

from __future__ import annotations

import json

import pytest

from tunekit import cli
from tunekit.experiments.imbalanced.arms import balanced_weights

ARMS = ["cross_entropy", "weighted_ce", "focal", "dice"]
FIELDS = {
    "minority_f1",
    "pr_auc",
    "macro_f1",
    "minority_f1_tuned",
    "tuned_threshold",
    "precision",
    "recall",
    "counts",
    "pr_curve",
    "f1_by_threshold",
    "epochs",
}


def quick(out, cache, *flags: str) -> int:
    return cli.main(
        ["run", "imbalanced", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache), *flags]
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One parsed corpus, tokenizer and pre-trained encoder for the module's runs."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "imbalanced"
    assert quick(out, cache) == 0
    return out


def test_quick_run_writes_the_report(quick_run):
    report = quick_run / "report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Imbalanced classification")
    assert "**Verdict:**" in text and "How to read it" in text and "maximises F1 on the validation" in text
    for arm in ARMS:
        assert f"| {arm} |" in text
    for plot in ("pr_curve", "f1_by_threshold", "validation_pr_auc"):
        assert (report / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({plot}.png)" in text
    results = json.loads((report / "results.json").read_text())
    assert results["verdict"] and results["experiment"] == "imbalanced"
    assert [(r["arm"], r["seed"]) for r in results["results"]] == [(arm, 0) for arm in ARMS]
    for entry in results["results"]:
        result = entry["result"]
        assert set(result) >= FIELDS
        for metric in ("minority_f1", "pr_auc", "macro_f1", "minority_f1_tuned", "precision", "recall"):
            assert 0 <= result[metric] <= 1
        assert 0 <= result["tuned_threshold"] <= 1  # 0 when a collapsed arm scores every text 0
        train, validation, test = (result["counts"][s] for s in ("train", "validation", "test"))
        assert sum(train) <= 400 and all(c[1] >= 1 for c in (train, validation, test))
        assert 0.01 <= test[1] / sum(test) <= 0.05  # the minority is 1-5%
        assert [e["epoch"] for e in result["epochs"]] == [1]
        assert result["pr_curve"][0][0] == 0 and result["pr_curve"][-1][0] == 1


def test_each_arm_trains_with_its_objective(quick_run):
    results = json.loads((quick_run / "report" / "results.json").read_text())["results"]
    by_arm = {r["arm"]: r["result"] for r in results}
    assert [by_arm[arm]["objective"] for arm in ARMS] == ["cross_entropy", "cross_entropy", "focal", "dice"]
    weighted = by_arm["weighted_ce"]
    expected = pytest.approx(balanced_weights(weighted["counts"]["train"]))
    assert weighted["options"] == {"weight": expected}
    assert weighted["class_weights"] == expected
    assert by_arm["cross_entropy"]["class_weights"] == []
    assert by_arm["focal"]["options"] == {"gamma": 2.0}


def test_a_second_run_reads_every_arm_back(quick_run, cache, capsys):
    assert quick(quick_run, cache) == 0
    assert "all 4 arm x seed runs" in capsys.readouterr().err


def test_a_weighted_arm_saved_by_the_focal_workaround_runs_again(quick_run, cache, capsys):
    # before cross_entropy took weight=, weighted_ce was focal_loss(gamma=0, alpha=w), whose "mean" divides
    # by the item count: such a result must not be reported as this arm
    path = quick_run / "arms" / "weighted_ce" / "seed-0.json"
    saved = json.loads(path.read_text())
    weights = saved["result"].pop("class_weights")
    saved["result"].update(objective="focal", options={"gamma": 0.0, "alpha": weights})
    path.write_text(json.dumps(saved))
    assert quick(quick_run, cache) == 0
    assert "weighted_ce/seed-0.json is not a usable result" in capsys.readouterr().err
    rerun = json.loads(path.read_text())["result"]
    assert rerun["objective"] == "cross_entropy" and rerun["class_weights"] == weights


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arms", "cross_entropy,nope"], "arms must be some of"),
        (["--minority", "nosuch"], "family 'nosuch'"),
        (["--focal-gamma", "-1"], "focal_gamma must be >= 0"),
        (["--hidden-size", "15", "--heads", "2"], "multiple of heads"),
        (["--epochs", "two"], "epochs"),
    ],
)
def test_bad_options_are_clear_errors(flags, message, tmp_path, capsys, cache):
    assert quick(tmp_path / "o", cache, *flags) == 2
    assert message in capsys.readouterr().err
