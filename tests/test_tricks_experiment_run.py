"""`tunekit run tricks --quick` end to end through the command line (`cli.main` in-process): the report's
files and fields, the tricks each arm switched on, and the errors a user can cause."""

from __future__ import annotations

import json

import pytest

from tunekit import cli
from tunekit.experiments.tricks.report import collapse

ARMS = ["baseline", "ema", "fgm", "pgd", "rdrop", "layer_decay", "mean_pooling"]


def quick(out, cache, *flags: str) -> int:
    return cli.main(
        ["run", "tricks", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache), *flags]
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "tricks"
    assert quick(out, cache) == 0
    return out


def test_quick_run_writes_the_report(quick_run):
    report = quick_run / "report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Tricks")
    assert "**Verdict:**" in text and "exceeds the spread" in text and "time vs baseline" in text
    for arm in ARMS:
        assert f"| {arm} |" in text
    for plot in ("test_accuracy", "validation_accuracy"):
        assert (report / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({plot}.png)" in text
    results = json.loads((report / "results.json").read_text())
    # --quick trains for one epoch: arms that collapsed to one class are not ranked
    collapsed = {r["arm"]: collapse(r["result"]) for r in results["results"]}
    if all(collapsed.values()):
        assert results["verdict"].startswith("every arm collapsed")
    else:
        start = "the baseline collapsed" if collapsed["baseline"] else "baseline accuracy"
        assert results["verdict"].startswith(start)
    assert [(r["arm"], r["seed"]) for r in results["results"]] == [(arm, 0) for arm in ARMS]
    for entry in results["results"]:
        result = entry["result"]
        assert len(result["classes"]) == 4 and sum(result["counts"]["test"]) > 0
        assert 0 <= result["accuracy"] <= 1 and 0 <= result["macro_f1"] <= 1
        assert [e["epoch"] for e in result["epochs"]] == [1]


def test_each_arm_changes_one_thing(quick_run):
    results = json.loads((quick_run / "report" / "results.json").read_text())["results"]
    by_arm = {r["arm"]: r["result"] for r in results}
    assert by_arm["baseline"]["tricks"] == {} and by_arm["baseline"]["pooling"] == "cls"
    assert by_arm["ema"]["tricks"] == {"ema_decay": 0.99}
    assert by_arm["fgm"]["tricks"]["adversarial"] == "fgm"
    assert by_arm["pgd"]["tricks"]["pgd_steps"] == 2  # --quick
    assert by_arm["rdrop"]["tricks"] == {"rdrop_weight": 1.0}
    assert by_arm["layer_decay"]["tricks"] == {"layer_decay": 0.75}
    assert by_arm["mean_pooling"]["tricks"] == {} and by_arm["mean_pooling"]["pooling"] == "mean"


def test_the_verdict_compares_with_the_baseline_only_when_it_ran(cache, tmp_path):
    out = tmp_path / "no-baseline"
    assert quick(out, cache, "--arms", "ema") == 0
    results = json.loads((out / "report" / "results.json").read_text())
    collapsed = all(collapse(r["result"]) for r in results["results"])  # --quick: one epoch
    assert results["verdict"].startswith("every arm collapsed" if collapsed else "no baseline arm ran")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arms", "baseline,swa"], "arms must be some of"),
        (["--layer-decay", "0"], "layer_decay must be a number in (0, 1]"),
        (["--families", "1"], "families must be >= 2"),
        (["--families", "100000"], "count must be an integer in [2,"),
        (["--ema-decay", "1"], "ema_decay must be a number in [0, 1)"),
    ],
)
def test_bad_options_are_clear_errors(flags, message, tmp_path, capsys, cache):
    assert quick(tmp_path / "o", cache, *flags) == 2
    assert message in capsys.readouterr().err
