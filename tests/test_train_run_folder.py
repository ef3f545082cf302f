"""``tunekit train`` never loses a user's work (issue 13): each case a user reported, reproduced on real runs
of a tiny model through the command line (`cli.main` in-process, or a real process for Ctrl-C), asserting
what is on disk afterwards, the message and the exit status; interrupted or failed saves resume to the
weights of an uninterrupted run."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file

from finetune_data import TINY, classification_records, tiny_config, write_jsonl
from tunekit import cli
from tunekit.finetune import train
from tunekit.finetune.checkpoints import checkpoint_problem, latest_checkpoint
from tunekit.runs import RunFolderError

# EMA (its state is a piece of every checkpoint), dropout (the RNG state) and a schedule (the scheduler)
OPTIONS = {"ema_decay": "0.9", "lr_scheduler": "linear", "epochs": "2"}
STEPS_PER_EPOCH = 4  # 29 training examples of 32 (a tenth held out), batches of 8


def flags(data: Path, out: Path, **overrides: str) -> list[str]:
    values = {**TINY, **OPTIONS, **overrides}
    options = [f"--{name.replace('_', '-')}={value}" for name, value in values.items()]
    return ["train", "--train-file", str(data), "--out", str(out), "--no-progress", *options]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (the lock file's PID aside)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != ".tunekit.lock"
    }


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_same_weights(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "reviews.jsonl", classification_records(32))


@pytest.fixture(scope="module")
def finished(data, tmp_path_factory) -> Path:
    """A finished run (kept read-only by the tests: each copies it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert cli.main(flags(data, out)) == 0
    return out


@pytest.fixture(scope="module")
def reference(finished) -> dict[str, torch.Tensor]:
    """The final weights of an uninterrupted run."""
    return weights(finished / "model")


@pytest.fixture
def run_copy(finished, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)


class InterruptAfterSave(transformers.TrainerCallback):
    """Ctrl-C right after the checkpoint of ``step`` is complete (before the run ends)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def interrupted_at(data: Path, out: Path, step: int) -> None:
    """A run whose last complete checkpoint is ``step``, with no final model."""
    config = tiny_config(data, **OPTIONS)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False, callbacks=[InterruptAfterSave(step)])
    assert not (out / "model").exists()


# --- 1. validation before anything is deleted ---------------------------------------------------------------


def test_fresh_with_a_bad_input_deletes_nothing(run_copy, capsys):
    (run_copy / "notes.txt").write_text("mine")
    (run_copy / "mine.png").write_bytes(b"\x89PNG mine")
    before = snapshot(run_copy)
    status = cli.main([*flags(Path("typo.jsonl"), run_copy), "--fresh"])
    assert status == 2 and "no such data file: 'typo.jsonl'" in capsys.readouterr().err
    assert snapshot(run_copy) == before


def test_fresh_discards_only_what_tunekit_wrote(run_copy, data, capsys):
    (run_copy / "notes.txt").write_text("mine")
    (run_copy / "mine.png").write_bytes(b"\x89PNG mine")
    written = json.loads((run_copy / "tunekit-run.json").read_text())["written"]
    assert {"checkpoints", "model", "config.json", "report.md", "metrics.json", "loss.png"} <= set(written)
    assert cli.main([*flags(data, run_copy, epochs="1", learning_rate="0.01"), "--fresh"]) == 0
    assert (run_copy / "notes.txt").read_text() == "mine"
    assert (run_copy / "mine.png").read_bytes() == b"\x89PNG mine"
    assert json.loads((run_copy / "config.json").read_text())["epochs"] == 1
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["checkpoint-4"]


# --- 2. the options are compared on every rerun ----------------------------------------------------------


def test_other_options_are_refused_when_the_checkpoints_were_pruned(run_copy, data, tmp_path, capsys):
    shutil.rmtree(run_copy / "checkpoints")
    before = snapshot(run_copy)
    other = write_jsonl(tmp_path / "other.jsonl", classification_records(32, seed=3))
    assert cli.main(flags(other, run_copy, epochs="1")) == 2
    err = capsys.readouterr().err
    assert "holds a `tunekit train` run with other options (epochs: 2 there, 1 now" in err
    assert "train_file" in err and "--fresh" in err
    assert snapshot(run_copy) == before


# --- 3 and 4: a folder tunekit did not make ---------------------------------------------------------------


@pytest.mark.parametrize("fresh", [False, True])
def test_the_model_folder_as_out_is_refused(run_copy, data, fresh, capsys):
    model = run_copy / "model"
    before = snapshot(model)
    args = [*flags(data, model), "--model", str(model), *(["--fresh"] if fresh else [])]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"{model} holds a saved model (config.json, model.safetensors" in err
    assert "never writes into or empties such a folder" in err and err.count("\n") == 1
    assert snapshot(model) == before
    transformers.AutoModelForSequenceClassification.from_pretrained(model)  # still loads


def test_fresh_refuses_to_discard_the_model_it_starts_from(run_copy, data, capsys):
    before = snapshot(run_copy)
    assert cli.main([*flags(data, run_copy), "--model", str(run_copy / "model"), "--fresh"]) == 2
    assert "lies inside --out" in capsys.readouterr().err
    assert snapshot(run_copy) == before


# --- 6. one process per folder ------------------------------------------------------------------------


def test_a_second_process_on_the_same_folder_is_refused(data, tmp_path, capsys):
    out = tmp_path / "conc"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
                import fcntl, os, sys, time
                fd = os.open({str(out / ".tunekit.lock")!r}, os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                os.write(fd, f"{{os.getpid()}}\\n".encode())
                print("locked", flush=True)
                time.sleep(60)
            """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert cli.main(flags(data, out, seed="1")) == 2
        err = capsys.readouterr().err
        assert f"{out} is in use by another tunekit process (PID {holder.pid})" in err
    finally:
        holder.kill()
        holder.wait()
    assert sorted(p.name for p in out.iterdir()) == [".tunekit.lock"]  # nothing else written


def test_runs_one_after_the_other_with_other_seeds_do_not_replace_each_other(run_copy, data, capsys):
    before = snapshot(run_copy / "model")
    assert cli.main(flags(data, run_copy, seed="1")) == 2
    assert "other options (seed: 0 there, 1 now" in capsys.readouterr().err
    assert snapshot(run_copy / "model") == before


# --- 7 and 8: checkpoints that always resume --------------------------------------------------------------

PIECES = ["optimizer.pt", "scheduler.pt", "rng_state.pth", "tunekit_trainer_state.pt", "trainer_state.json"]


@pytest.mark.parametrize("piece", [*PIECES, "model.safetensors"])
@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_a_damaged_piece_makes_a_checkpoint_unusable(finished, tmp_path, piece, damage):
    checkpoint = tmp_path / "checkpoint-8"
    shutil.copytree(finished / "checkpoints" / "checkpoint-8", checkpoint)
    assert checkpoint_problem(checkpoint, ema=True) is None
    path = checkpoint / piece
    if damage == "missing":
        path.unlink()
        expected = "no model weights" if piece == "model.safetensors" else f"no {piece}"
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        expected = f"{piece} is " + ("truncated" if piece.endswith(".safetensors") else "unreadable")
    assert checkpoint_problem(checkpoint, ema=True).startswith(expected)


def test_the_ema_state_is_required_only_with_an_ema(finished, tmp_path):
    checkpoint = tmp_path / "checkpoint-8"
    shutil.copytree(finished / "checkpoints" / "checkpoint-8", checkpoint)
    (checkpoint / "tunekit_trainer_state.pt").unlink()
    assert checkpoint_problem(checkpoint, ema=False) is None
    assert checkpoint_problem(checkpoint, world_size=2, ema=False) is None  # one process's state, shared
    (checkpoint / "rng_state.pth").unlink()
    assert checkpoint_problem(checkpoint, world_size=2, ema=False) == "no rng_state_0.pth"
    assert checkpoint_problem(checkpoint, world_size=1, ema=False) == "no rng_state.pth"


@pytest.mark.parametrize(
    "damage", ["no optimizer", "truncated weights"], ids=["missing-optimizer", "truncated-model"]
)
def test_a_damaged_last_checkpoint_is_set_aside_and_the_resume_is_exact(
    data, tmp_path, reference, damage, caplog
):
    out = tmp_path / "run"
    interrupted_at(data, out, step=2 * STEPS_PER_EPOCH)
    last = out / "checkpoints" / "checkpoint-8"
    if damage == "no optimizer":
        (last / "optimizer.pt").unlink()
        reason = "no optimizer.pt"
    else:
        model = last / "model.safetensors"
        model.write_bytes(model.read_bytes()[:-100])
        reason = "model.safetensors is truncated"
    assert latest_checkpoint(out / "checkpoints", ema=True) == (
        out / "checkpoints" / "checkpoint-4",
        [(last, reason)],
    )

    resumed = train(tiny_config(data, **OPTIONS), out, progress=False)
    assert resumed.resumed_from.name == "checkpoint-4"
    assert f"checkpoint-8 cannot be resumed from ({reason}): set aside as broken-checkpoint-8" in caplog.text
    aside = out / "checkpoints" / "broken-checkpoint-8"
    assert reason in (aside / "WHY.txt").read_text()
    assert_same_weights(weights(resumed.model_dir), reference)


def test_no_usable_checkpoint_is_one_line_that_says_what_to_do(data, tmp_path, capsys):
    out = tmp_path / "run"
    interrupted_at(data, out, step=STEPS_PER_EPOCH)
    (out / "checkpoints" / "checkpoint-4" / "scheduler.pt").unlink()
    assert cli.main(flags(data, out)) == 2
    err = capsys.readouterr().err
    assert err == (
        f"tunekit: error: no checkpoint in {out / 'checkpoints'} can be resumed from "
        "(checkpoint-4: no scheduler.pt); start over with --fresh\n"
    )
    assert cli.main([*flags(data, out), "--fresh"]) == 0


SAVE_THEN_CTRL_C = """
import os, signal, sys
import torch
from tunekit import cli

torch.set_num_threads(1)  # as the suite (conftest.py): the same sums in the same order
# a shell that starts the suite in the background (`pytest &`) has SIGINT ignored, and children inherit that
signal.signal(signal.SIGINT, signal.default_int_handler)
save = torch.save


def save_then_interrupt(obj, f, *args, **kwargs):
    save(obj, f, *args, **kwargs)
    if str(f).endswith(os.path.join("checkpoint-8", "optimizer.pt")):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the checkpoint's save


torch.save = save_then_interrupt
sys.exit(cli.main(sys.argv[1:]))
"""


def test_ctrl_c_during_a_checkpoint_save_then_the_same_command_resumes_exactly(data, tmp_path, reference):
    out = tmp_path / "run"
    args = flags(data, out)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", SAVE_THEN_CTRL_C, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 130, done.stderr
    assert f"interrupted; the same command resumes from {out / 'checkpoints' / 'checkpoint-4'}" in done.stderr
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == [".saving", "checkpoint-4"]  # the half-saved checkpoint-8 has no real name

    assert cli.main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["resumed_from"].endswith("checkpoint-4")
    assert not (out / "checkpoints" / ".saving" / "checkpoint-8").exists()
    assert_same_weights(weights(out / "model"), reference)


@pytest.mark.parametrize("failure", ["disk full", "torch writer"])
def test_a_save_that_fails_part_way_is_one_line_then_resumes_exactly(
    data, tmp_path, reference, monkeypatch, capsys, failure
):
    out = tmp_path / "run"
    save = torch.save

    def failing_save(obj, f, *args, **kwargs):
        if str(f).endswith(os.path.join("checkpoint-8", "scheduler.pt")):
            if failure == "disk full":
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
            raise RuntimeError(
                "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/0: "
                "file write failed"
            )
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    assert cli.main(flags(data, out)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    if failure == "disk full":
        assert f"cannot write {out / 'checkpoints' / '.saving' / 'checkpoint-8' / 'scheduler.pt'}" in err
        assert "No space left on device (" in err and "MiB free there)" in err
    else:
        assert f"cannot write a checkpoint into {out / 'checkpoints' / '.saving'}" in err
        assert "a full disk is the usual cause" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [".saving", "checkpoint-4"]

    monkeypatch.setattr(torch, "save", save)
    assert cli.main(flags(data, out)) == 0
    assert_same_weights(weights(out / "model"), reference)


# --- 10. an --out that cannot be a run folder ------------------------------------------------------------


def test_out_that_is_a_file_or_cannot_be_written(data, tmp_path, monkeypatch, capsys):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert cli.main(flags(data, afile)) == 2
    assert capsys.readouterr().err == (
        f"tunekit: error: --out {afile} is a file, not a folder; choose a folder with --out DIR\n"
    )
    assert cli.main(flags(data, afile / "run")) == 2
    assert (
        capsys.readouterr().err == f"tunekit: error: cannot create --out {afile / 'run'}: {afile} is a file\n"
    )
    assert afile.read_text() == "mine"

    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only place (tests may run as root)
    assert cli.main(flags(data, tmp_path / "ro" / "run")) == 2
    assert "is not writable; choose a folder you can write" in capsys.readouterr().err


def test_a_folder_that_cannot_be_created_is_one_line(data, tmp_path, monkeypatch, capsys):
    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(RunFolderError, match=r"cannot write .*run: Permission denied; choose a folder"):
        train(tiny_config(data, **OPTIONS), tmp_path / "run", progress=False)
