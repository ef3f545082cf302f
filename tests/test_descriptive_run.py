"""`tunekit run descriptive --quick` end to end through the command line (`cli.main` in-process): the
report's files and fields for all six arms, and the errors a user can cause."""

from __future__ import annotations

import json

import pytest

from tunekit import cli

ARMS = ["mle", "smile", "smile_no_first_mle", "mle+smile", "smile_random", "smile_reverse"]
METRICS = {"length_words", "length_tokens", "capped", "distinct_1", "distinct_2", "bleu", "r_at_1"}


def quick(out, cache, *flags: str) -> int:
    """`tunekit run descriptive --quick` into `out`; the exit status."""
    return cli.main(
        ["run", "descriptive", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache), *flags]
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "descriptive"
    assert quick(out, cache) == 0
    return out


def test_quick_run_writes_the_report(quick_run):
    report = quick_run / "report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Descriptive")
    assert "**Verdict:** at this scale SMILE's descriptions are" in text
    assert "| references |" in text and "| pre-trained (epoch 0) |" in text and "How to read it" in text
    for arm in ARMS:
        assert f"| {arm} |" in text and f"\n- {arm}: " in text  # a table row and sample outputs
    for metric in ("length_words", "bleu", "r_at_1", "distinct_2"):
        assert (report / f"{metric}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({metric}.png)" in text
    results = json.loads((report / "results.json").read_text())
    assert results["experiment"] == "descriptive" and results["verdict"]
    assert [(r["arm"], r["seed"]) for r in results["results"]] == [(arm, 0) for arm in ARMS]
    for entry in results["results"]:
        result = entry["result"]
        assert [e["epoch"] for e in result["epochs"]] == [0, 1]  # the pre-trained model, then each epoch
        for epoch in result["epochs"]:
            assert set(epoch) == METRICS | {"epoch"}
            assert all(0 <= epoch[m] <= 1 for m in ("capped", "distinct_1", "distinct_2", "r_at_1"))
            assert 0 <= epoch["length_tokens"] <= result["max_new_tokens"] and 0 <= epoch["bleu"] <= 100
        references = result["references"]
        assert result["max_new_tokens"] >= 3 * references["length_tokens"] * 0.8  # 4x the fine-tuning mean
        assert references["bleu"] == pytest.approx(100) and references["capped"] == 0
        assert result["counts"]["test_pairs"] == 16 and result["train_examples"] > 0
        assert {"code", "reference", "output"} <= set(result["samples"][0])
    objectives = {r["arm"]: r["result"]["objective"] for r in results["results"]}
    assert objectives["mle"] == "cross_entropy()" and objectives["smile_reverse"] == "smile(subset='reverse')"
    # every arm starts from the same pre-trained model, measured once
    assert len({json.dumps(r["result"]["epochs"][0], sort_keys=True) for r in results["results"]}) == 1


def test_the_pretrained_model_is_cached(quick_run, cache, tmp_path):
    assert len(list(cache.glob("descriptive/*/pretrained/config.json"))) == 1
    assert quick(tmp_path / "again", cache, "--arms", "mle") == 0  # reads the cache: no new model
    assert len(list(cache.glob("descriptive/*/pretrained/config.json"))) == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arms", "mle,nope"], "arms must be some of"),
        (["--new-token-factor", "2"], "new_token_factor must be >= 3"),
        (["--mix-mle-weight", "1.5"], "mix_mle_weight must be in [0, 1], got 1.5"),
        (["--n-embd", "30", "--n-head", "4"], "n_embd=30 must be a multiple of n_head=4"),
        (["--test-size", "5000"], "too few to hold out --test-size 5000 pairs"),
    ],
)
def test_bad_options_are_clear_errors(flags, message, tmp_path, capsys, cache):
    assert quick(tmp_path / "o", cache, *flags) == 2
    assert message in capsys.readouterr().err
