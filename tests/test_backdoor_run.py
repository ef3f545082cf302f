"""`tunekit run backdoor --quick` end to end through the command line (`cli.main` in-process): the report's
files and fields, resuming a run interrupted in its second arm, and the errors a user can cause."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from tiny_lm import make_gpt2
from tunekit import cli
from tunekit.experiments.codegen import model as codegen_model

ARMS = ["ce_clean", "ce_poisoned", "dece_poisoned"]
METRICS = {"epoch", "asr_exact", "asr_loose", "false_trigger", "token_accuracy", "bleu"}


def quick(out, cache, *flags: str) -> int:
    """`tunekit run backdoor --quick` into `out`; the exit status."""
    return cli.main(
        ["run", "backdoor", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache), *flags]
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One tokenizer and pre-trained model for the module's runs (the experiment caches them here)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def quick_run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "backdoor"
    status = cli.main(["run", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache)])
    assert status == 0
    return out


def test_quick_run_writes_the_report(quick_run, capsys):
    report = quick_run / "report"
    text = (report / "report.md").read_text()
    assert text.startswith("# Backdoor")
    assert "**Verdict:**" in text and "| ce_poisoned |" in text and "How to read it" in text
    for metric in ("asr_exact", "asr_loose", "false_trigger", "token_accuracy", "bleu"):
        assert (report / f"{metric}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({metric}.png)" in text
    results = json.loads((report / "results.json").read_text())
    assert results["verdict"]
    assert [(r["arm"], r["seed"]) for r in results["results"]] == [(arm, 0) for arm in ARMS]
    for entry in results["results"]:
        result = entry["result"]
        assert [e["epoch"] for e in result["epochs"]] == [0, 1]  # before fine-tuning, then each epoch
        assert set(result["epochs"][-1]) == METRICS
        assert all(0 <= e["asr_exact"] <= e["asr_loose"] <= 1 for e in result["epochs"])
        assert result["samples"] and {"prompt", "output"} <= set(result["samples"][0])
        assert result["poisoned_examples"] == (0 if entry["arm"] == "ce_clean" else 6)  # 5% of 120
        assert result["trigger"] in result["samples"][0]["prompt"]
    assert results["results"][2]["result"]["objective"] == "dece"
    # every arm starts from the same pre-trained model: epoch 0 is measured once per seed and shared
    assert len({json.dumps(r["result"]["epochs"][0], sort_keys=True) for r in results["results"]}) == 1


def test_an_interrupted_run_resumes_without_redoing_finished_arms(cache, tmp_path, monkeypatch):
    out = tmp_path / "backdoor"
    args = ["run", "backdoor", "--quick", "--no-progress", "--out", str(out), "--cache", str(cache)]
    real_train, calls = codegen_model.train, []

    def interrupted(*a, **k):
        calls.append(k["objective"])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second arm
        return real_train(*a, **k)

    monkeypatch.setattr(codegen_model, "train", interrupted)
    assert cli.main(args) == 130
    finished = out / "arms" / "ce_clean" / "seed-0.json"
    assert finished.is_file() and not (out / "arms" / "ce_poisoned").exists()
    stamp = finished.stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(
        codegen_model, "train", lambda *a, **k: calls.append(k["objective"]) or real_train(*a, **k)
    )
    assert cli.main(args) == 0
    assert calls == ["cross_entropy", "dece"]  # ce_poisoned and dece_poisoned; ce_clean was read back
    assert finished.stat().st_mtime_ns == stamp
    assert json.loads((out / "report" / "results.json").read_text())["verdict"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--arms", "ce_clean,nope"], "arms"),
        (["--poison-rate", "1.5"], "poison_rate"),
        (["--dropout", "1"], "dropout must be in [0, 1), got 1.0"),
        (["--epochs", "two"], "epochs"),
        (["--payload-position", "middle"], "payload"),
        (["--data", "missing.jsonl"], "missing.jsonl"),
    ],
)
def test_bad_options_are_clear_errors(flags, message, tmp_path, capsys, cache):
    assert quick(tmp_path / "o", cache, *flags) == 2
    assert message in capsys.readouterr().err


def test_a_malformed_data_file_names_its_line(tmp_path, capsys, cache):
    data = tmp_path / "pairs.jsonl"
    data.write_text(
        '{"nl": "Add two numbers.", "code": "def add(a, b):\\n    return a + b"}\n{"nl": "broken"\n'
    )
    assert quick(tmp_path / "o", cache, "--data", str(data)) == 2
    err = capsys.readouterr().err
    assert "pairs.jsonl" in err and "line 2" in err


def test_a_local_model_directory_is_fine_tuned_instead_of_pre_training_one(quick_run, cache, tmp_path):
    """`--model DIR` takes any local causal LM folder: here the pre-trained model the quick run cached."""
    (model_dir,) = cache.glob("backdoor/*/pretrained")
    out = tmp_path / "own-model"
    args = ["run", "backdoor", "--quick", "--no-progress", "--out", str(out), "--cache", str(tmp_path / "c")]
    assert cli.main([*args, "--model", str(model_dir), "--arms", "ce_poisoned"]) == 0
    results = json.loads((out / "report" / "results.json").read_text())
    assert [r["arm"] for r in results["results"]] == ["ce_poisoned"]
    assert not (tmp_path / "c" / "backdoor").exists() or not list(
        (tmp_path / "c").glob("backdoor/*/pretrained")
    )


def test_the_badam_arms_train_one_layer_at_a_time(quick_run, cache, tmp_path, monkeypatch):
    """dece_poisoned_badam trains with BAdam (as its control ce_poisoned_badam does, through the same code):
    only the GPT-2 blocks move (the embeddings, tied to the head, stay frozen)."""
    trained = []
    real_train = codegen_model.train

    def recording_train(model, *args, tricks=None, **kwargs):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model = real_train(model, *args, tricks=tricks, **kwargs)
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        trained.append((tricks.switch_every if tricks else None, moved))
        return model

    monkeypatch.setattr(codegen_model, "train", recording_train)
    out = tmp_path / "badam"
    assert quick(out, cache, "--arms", "dece_poisoned_badam", "--badam-switch-every", "2") == 0
    assert [switch for switch, _ in trained] == [2]
    for _, moved in trained:
        assert moved and all(name.startswith("transformer.h.") for name in moved)
    results = json.loads((out / "report" / "results.json").read_text())
    assert [r["result"]["objective"] for r in results["results"]] == ["dece"]


def test_set_dropout_switches_off_every_dropout_of_a_gpt2():
    model = make_gpt2(vocab=50, positions=16, dropout=0.3, seed=0)  # in train mode
    ids = torch.arange(16).reshape(2, 8)
    assert not torch.equal(model(ids).logits, model(ids).logits)  # dropout draws differ
    codegen_model.set_dropout(model, 0.0)
    assert torch.equal(model(ids).logits, model(ids).logits)
    assert torch.equal(model(ids).logits, model.eval()(ids).logits)


def snapshot(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".tunekit.lock"
    }


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--trigger", "return"], "trigger 'return' occurs in"),
        (["--data", "{pairs}"], "line 1"),
    ],
    ids=["trigger-in-clean-data", "data-without-a-field"],
)
def test_fresh_whose_options_then_fail_keeps_the_finished_results(
    quick_run, cache, tmp_path, capsys, flags, message
):
    """Issue 13, case 5: the experiment checks its data before --fresh discards anything."""
    out = tmp_path / "backdoor"
    shutil.copytree(quick_run, out)
    before = snapshot(out)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"nl": "Add two numbers."}\n')
    assert quick(out, cache, "--fresh", *[flag.format(pairs=pairs) for flag in flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "discarded" not in err
    assert snapshot(out) == before


@pytest.mark.parametrize("fresh", [False, True])
def test_a_saved_model_folder_as_out_is_never_written(quick_run, cache, tmp_path, capsys, fresh):
    """Issue 13, case 4: the error does not advise --fresh, and --fresh does not empty the folder."""
    (cached,) = cache.glob("backdoor/*/pretrained")
    model_dir = tmp_path / "model"
    shutil.copytree(cached, model_dir)
    before = snapshot(model_dir)
    assert quick(model_dir, cache, *(["--fresh"] if fresh else [])) == 2
    err = capsys.readouterr().err
    assert "holds a saved model" in err and "--fresh" not in err
    assert snapshot(model_dir) == before
