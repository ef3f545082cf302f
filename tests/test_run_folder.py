"""`tunekit.runs.RunFolder`, the folder mechanism ``tunekit train`` and ``tunekit run`` share, and the cases
of issue 13 on the experiment runner (with test_runner's real toy experiment): a folder tunekit did not make
is never written into or emptied, ``--fresh`` runs only after the experiment accepted its inputs and
discards only tunekit's files, one process per folder, and saved results of the wrong shape are named, set
aside and run again."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from test_runner import CALLS, TOY, ToyConfig, arm_calls, reset_toy, run
from tunekit import cli
from tunekit.experiments import EXPERIMENTS, register, run_experiment
from tunekit.runs import RunFolder, RunFolderError


def folder(path: Path, kind: str = "train") -> RunFolder:
    return RunFolder(
        path,
        kind=kind,
        outputs=("checkpoints", "report.md"),
        compare=lambda saved, new: {k: (saved.get(k), new.get(k)) for k in new if saved.get(k) != new.get(k)},
    )


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".tunekit.lock"
    }


# --- RunFolder ---------------------------------------------------------------------------------------------


def test_a_new_folder_is_created_marked_and_recorded(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    run_folder = folder(out)
    run_folder.check({"lr": 1})
    assert not out.exists()  # check only reads
    with run_folder.claim({"lr": 1}) as discarded:
        assert discarded == []
        (out / "checkpoints").mkdir()
        (out / "loss.png").write_bytes(b"png")
        run_folder.record("loss.png")
    marker = json.loads((out / "tunekit-run.json").read_text())
    assert marker["kind"] == "train"
    assert marker["written"] == ["checkpoints", "config.json", "loss.png", "report.md"]
    assert json.loads((out / "config.json").read_text()) == {"lr": 1}
    run_folder.check({"lr": 1})  # the same run: may continue
    with pytest.raises(
        RunFolderError, match=r"holds a `tunekit train` run with other options \(lr: 1 there, 2 now\)"
    ):
        run_folder.check({"lr": 2})


def test_fresh_discards_what_tunekit_wrote_and_keeps_the_rest(tmp_path):
    out = tmp_path / "run"
    with folder(out).claim({"lr": 1}):
        (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        (out / "report.md").write_text("old report")
        (out / "acc.png").write_bytes(b"png")
        folder(out).record("acc.png")
    (out / "notes.txt").write_text("mine")
    (out / "mine.png").write_bytes(b"mine")
    with folder(out).claim({"lr": 2}, fresh=True) as discarded:
        assert sorted(discarded) == ["acc.png", "checkpoints", "report.md"]
    assert sorted(p.name for p in out.iterdir()) == [
        ".tunekit.lock",
        "config.json",
        "mine.png",
        "notes.txt",
        "tunekit-run.json",
    ]
    assert json.loads((out / "config.json").read_text()) == {"lr": 2}


@pytest.mark.parametrize("fresh", [False, True])
def test_a_folder_tunekit_did_not_make_is_never_touched(tmp_path, fresh):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "model.safetensors").write_bytes(b"weights")
    documents = tmp_path / "documents"
    documents.mkdir()
    (documents / "thesis.tex").write_text("keep me")
    before = snapshot(tmp_path)
    with pytest.raises(RunFolderError, match=r"model holds a saved model \(config.json, model.safetensors\)"):
        folder(model).check({}, fresh=fresh)
    with (
        pytest.raises(RunFolderError, match=r"documents holds files tunekit did not write \(thesis.tex\)"),
        folder(documents).claim({}, fresh=fresh),
    ):
        pass
    assert snapshot(tmp_path) == before
    assert not (model / ".tunekit.lock").exists() and not (documents / ".tunekit.lock").exists()


def test_another_kind_of_run_is_refused_even_with_fresh(tmp_path):
    out = tmp_path / "run"
    with folder(out, kind="run backdoor").claim({}):
        pass
    for fresh in (False, True):
        with pytest.raises(
            RunFolderError, match="holds a run of `tunekit run backdoor`, not of `tunekit train`"
        ):
            folder(out).check({}, fresh=fresh)


def test_a_run_from_before_markers_is_adopted(tmp_path):
    out = tmp_path / "old"
    (out / "checkpoints").mkdir(parents=True)
    identity = {"train_file": "a.jsonl", "task": "causal_lm", "objective": "dece"}
    (out / "config.json").write_text(json.dumps(identity))
    (out / "notes.txt").write_text("mine")
    with folder(out).claim(identity):
        pass
    assert json.loads((out / "tunekit-run.json").read_text())["written"] == [
        "checkpoints",
        "config.json",
        "report.md",
    ]
    with pytest.raises(RunFolderError, match="holds a run of `tunekit run toy`, not of `tunekit train`"):
        legacy = tmp_path / "old-experiment"
        legacy.mkdir()
        (legacy / "config.json").write_text(json.dumps({"experiment": "toy", "config": {}}))
        folder(legacy).check({})


def test_unreadable_or_missing_records(tmp_path):
    out = tmp_path / "run"
    with folder(out).claim({"lr": 1}):
        pass
    (out / "config.json").write_text('{"lr": ')
    with pytest.raises(RunFolderError, match=r"config.json is unreadable .*start over with --fresh"):
        folder(out).check({"lr": 1})
    folder(out).check({"lr": 1}, fresh=True)
    (out / "config.json").unlink()
    (out / "checkpoints").mkdir()
    with pytest.raises(RunFolderError, match="holds checkpoints of a run whose options were not recorded"):
        folder(out).check({"lr": 1})
    (out / "tunekit-run.json").write_text("[]")
    with pytest.raises(RunFolderError, match=r"tunekit-run.json is unreadable .*not a tunekit marker"):
        folder(out).check({"lr": 1})


def test_one_process_at_a_time(tmp_path):
    out = tmp_path / "run"
    busy = rf"{out} is in use by another tunekit process \(PID {os.getpid()}\)"
    with (
        folder(out).claim({"lr": 1}),
        pytest.raises(RunFolderError, match=busy),
        folder(out).claim({"lr": 1}),
    ):
        pass
    with folder(out).claim({"lr": 1}):  # released
        pass


# --- the experiment runner ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _toy_state():
    reset_toy()
    yield
    reset_toy()


@pytest.mark.parametrize("fresh", [False, True])
def test_run_into_a_saved_model_folder_is_refused_without_advising_fresh(
    tmp_path, monkeypatch, capsys, fresh
):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    (model / "model.safetensors").write_bytes(b"weights")
    before = snapshot(model)
    monkeypatch.setenv("TUNEKIT_EXPERIMENTS", "test_runner")
    args = ["run", "toy", "--out", str(model), "--no-progress", *(["--fresh"] if fresh else [])]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "holds a saved model (config.json, model.safetensors), not a tunekit run" in err
    assert "--fresh" not in err and err.count("\n") == 1
    assert snapshot(model) == before and CALLS == []


def test_fresh_whose_inputs_then_fail_keeps_the_earlier_results(tmp_path):
    out = tmp_path / "run"
    run(out, ToyConfig(epochs=1, seeds=(0,)))
    before = snapshot(out)
    bad = tmp_path / "x.txt"
    bad.write_text("1\nnot a number\n")
    with pytest.raises(ValueError, match="line 2: not a number"):
        run(out, ToyConfig(epochs=2, seeds=(0,), data=bad), resume=False)
    assert snapshot(out) == before
    with pytest.raises(FileNotFoundError):
        run(out, ToyConfig(epochs=2, seeds=(0,), data=tmp_path / "missing.txt"), resume=False)
    assert snapshot(out) == before


WRONG_SHAPES = {
    "empty result": lambda data: {**data, "result": {}},
    "null metric": lambda data: {**data, "result": {**data["result"], "final_loss": None}},
    "no seconds": lambda data: {k: v for k, v in data.items() if k != "seconds"},
    "another arm": lambda data: {**data, "arm": "heavy"},
    "a list": lambda data: [data],
}
REASONS = {
    "empty result": "result is {}, not the fields an arm returns",
    "null metric": "result has no value for final_loss",
    "no seconds": "seconds is None, not a number",
    "another arm": "not the result of arm 'sgd', seed 0",
    "a list": "not the result of arm 'sgd', seed 0",
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_a_result_of_the_wrong_shape_is_named_set_aside_and_run_again(tmp_path, shape, capsys):
    strict = register(dataclasses.replace(TOY, name="toy-strict", result_fields=("final_loss", "slope")))
    try:
        out = tmp_path / "run"
        config = ToyConfig(epochs=1, seeds=(0,))
        first = run_experiment(
            strict.name, out_dir=out, config=config, cache_dir=tmp_path / "c", progress=False
        )
        path = out / "arms" / "sgd" / "seed-0.json"
        path.write_text(json.dumps(WRONG_SHAPES[shape](json.loads(path.read_text()))))
        reset_toy()
        again = run_experiment(
            strict.name, out_dir=out, config=config, cache_dir=tmp_path / "c", progress=True
        )
    finally:
        del EXPERIMENTS["toy-strict"]
    err = capsys.readouterr().err
    assert (
        f"warning: {path} is not a usable result ({REASONS[shape]}); set aside as seed-0.rejected.json" in err
    )
    assert arm_calls() == [("sgd", 0)]
    assert (out / "arms" / "sgd" / "seed-0.rejected.json").is_file()
    assert [r.result for r in again.results] == [r.result for r in first.results]


def test_run_with_an_out_that_is_a_file_or_cannot_be_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TUNEKIT_EXPERIMENTS", "test_runner")
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert cli.main(["run", "toy", "--out", str(afile), "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"tunekit: error: --out {afile} is a file, not a folder; choose a folder with --out DIR\n"
    )
    monkeypatch.setattr("os.access", lambda path, mode: False)
    assert cli.main(["run", "toy", "--out", str(tmp_path / "ro" / "run"), "--no-progress"]) == 2
    assert "is not writable; choose a folder you can write" in capsys.readouterr().err
    assert CALLS == [] and afile.read_text() == "mine"
