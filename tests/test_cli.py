"""The ``tunekit`` command line: ``python -m tunekit`` in a subprocess for help, listing and a bad option
(exit status and message), and ``cli.main([...])`` in-process for whole runs of the toy experiment of
test_runner.py: flags, YAML, resuming, refusing a changed config, Ctrl-C, and errors inside an arm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_runner import FAIL, arm_calls, reset_toy
from tunekit import cli
from tunekit.cli import run as cli_run

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _toy_state(monkeypatch, tmp_path):
    reset_toy()
    monkeypatch.chdir(tmp_path)  # default output folder runs/<name>
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)
    yield
    reset_toy()


def tunekit(*args: str, toy: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    if toy:
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
        env["TUNEKIT_EXPERIMENTS"] = "test_runner"
    return subprocess.run(
        [sys.executable, "-m", "tunekit", *args], capture_output=True, text=True, env=env, timeout=120
    )


def main(*args: str) -> int:
    return cli.main(list(args))


# --- subprocess --------------------------------------------------------------------------------------------


def test_help_in_a_subprocess():
    done = tunekit("--help", toy=False)
    assert done.returncode == 0, done.stderr
    assert "usage: tunekit" in done.stdout and "run" in done.stdout and "tunekit run --list" in done.stdout


def test_list_in_a_subprocess():
    done = tunekit("run", "--list")
    assert done.returncode == 0, done.stderr
    assert "toy" in done.stdout and "fit y = a x by SGD with several momenta" in done.stdout


def test_bad_option_value_in_a_subprocess():
    done = tunekit("run", "toy", "--epochs", "three", "--no-progress")
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "tunekit: error: invalid value for epochs (--epochs) in the command line: expected an integer, "
        "got 'three'"
    )
    assert "Traceback" not in done.stderr and not Path("runs").exists()


# --- in-process --------------------------------------------------------------------------------------------


def test_full_run(capsys):
    assert (
        main("run", "toy", "--quick", "--no-progress", "--seeds", "0,1", "--arms", "sgd,heavy", "--lr", "0.2")
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("verdict: ") and "fits the slope best" in out[0]
    assert out[1] == f"report: {Path('runs/toy/report/report.md')}"
    results = json.loads(Path("runs/toy/report/results.json").read_text())
    assert results["config"]["epochs"] == 1 and results["config"]["steps"] == 2  # --quick
    assert results["config"]["lr"] == 0.2 and results["arms"] == ["sgd", "heavy"]
    assert len(results["results"]) == 4 and results["verdict"] == out[0].removeprefix("verdict: ")
    assert Path("cache/toy/prepared.txt").is_file()  # $TUNEKIT_CACHE
    report = Path("runs/toy/report/report.md").read_text()
    assert "tunekit run toy --out runs/toy --epochs 1 --steps 2 --lr 0.2 --arms sgd,heavy" in report


def test_help_lists_the_fields(capsys):
    assert main("run", "toy", "--help") == 0
    text = capsys.readouterr().out
    assert "usage: tunekit run [NAME] [options] [experiment options]" in text
    assert "options of toy:" in text and "--epochs INT" in text and "epochs (default: 3; --quick: 1)" in text
    assert "--init {zero,random}" in text and "initial slope (default: random)" in text
    assert "experiments:" in text and "toy" in text


def test_list(capsys):
    assert main("run", "--list") == 0
    assert "fit y = a x by SGD with several momenta" in capsys.readouterr().out


def test_yaml_and_flags(tmp_path, capsys):
    Path("toy.yaml").write_text("epochs: 2\nsteps: 1\narms: [sgd]\nseeds: [0]\n")
    assert (
        main("run", "toy", "--config", "toy.yaml", "--steps", "3", "--out", "elsewhere", "--no-progress") == 0
    )
    config = json.loads(Path("elsewhere/config.json").read_text())["config"]
    assert (config["epochs"], config["steps"], config["arms"]) == (2, 3, ["sgd"])
    Path("bad.yaml").write_text("epochz: 2\n")
    assert main("run", "toy", "--config", "bad.yaml") == 2
    err = capsys.readouterr().err
    assert "tunekit: error: unknown field 'epochz' in config file bad.yaml (did you mean 'epochs'?)" in err
    assert main("run", "toy", "--config", "missing.yaml") == 2
    assert capsys.readouterr().err.strip() == "tunekit: error: config file missing.yaml not found"


def test_usage_errors(capsys):
    assert main("run", "toy", "--nope", "1") == 2
    assert "tunekit run: error: unrecognized arguments: --nope 1" in capsys.readouterr().err
    assert main("run", "toy", "--init", "ones") == 2
    assert "invalid value for init (--init) in the command line: expected one of zero, random" in (
        capsys.readouterr().err
    )
    assert main("run", "nope") == 2
    assert "tunekit: error: unknown experiment 'nope'; available: " in capsys.readouterr().err
    assert main() == 2
    assert "usage: tunekit" in capsys.readouterr().err
    assert main("fit") == 2
    assert "invalid choice: 'fit' (choose from 'run', 'train', 'decode')" in capsys.readouterr().err


def test_name_defaults_and_may_follow_options(monkeypatch, capsys):
    monkeypatch.setattr(cli_run, "DEFAULT_EXPERIMENT", "toy")
    assert main("run", "--quick", "--no-progress", "--seeds", "0", "--arms", "sgd") == 0
    assert json.loads(Path("runs/toy/config.json").read_text())["experiment"] == "toy"
    monkeypatch.setattr(cli_run, "DEFAULT_EXPERIMENT", "not-registered")
    assert main("run", "--quick", "--no-progress", "toy", "--seeds", "0", "--arms", "sgd") == 0
    assert arm_calls() == [("sgd", 0)]  # the second run resumed the first
    assert main("run", "--quick") == 2
    assert "unknown experiment 'not-registered'" in capsys.readouterr().err


def test_changed_config_then_fresh(capsys):
    base = ("run", "toy", "--quick", "--no-progress", "--seeds", "0")
    assert main(*base) == 0
    assert main(*base, "--lr", "0.05") == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert err.startswith("tunekit: error: runs/toy holds a `tunekit run toy` run with other options (lr: ")
    assert "lr: 0.1 there, 0.05 now" in err and "--out DIR" in err and "--fresh" in err
    reset_toy()
    assert main(*base, "--lr", "0.05", "--fresh") == 0
    assert arm_calls() == [("sgd", 0), ("momentum", 0), ("heavy", 0)]


def test_ctrl_c_keeps_finished_arms(capsys):
    FAIL.update(at=2, error=KeyboardInterrupt())
    args = ("run", "toy", "--quick", "--no-progress", "--seeds", "0")
    assert main(*args) == 130
    err = capsys.readouterr().err
    assert "tunekit: interrupted; 1 finished arm x seed result is kept in runs/toy/arms" in err
    assert "the same command resumes" in err
    reset_toy()
    assert main(*args) == 0
    assert arm_calls() == [("momentum", 0), ("heavy", 0)]


def test_errors_inside_the_experiment(capsys):
    Path("x.txt").write_text("0.5\nhalf\n")
    assert main("run", "toy", "--quick", "--data", "x.txt") == 2  # a user error found by prepare
    err = capsys.readouterr().err
    assert err.startswith("tunekit: error: x.txt, line 2: not a number: 'half' [TUNEKIT_TRACEBACK=1 shows")
    assert "Traceback" not in err
    assert main("run", "toy", "--quick", "--data", "absent.txt", "--out", "other") == 2
    assert "tunekit: error: data file absent.txt not found" in capsys.readouterr().err

    FAIL.update(at=2, error=ValueError("labels out of range"))
    assert main("run", "toy", "--quick", "--no-progress", "--out", "a") == 2
    err = capsys.readouterr().err
    assert "tunekit: error: toy: arm 'momentum', seed 0 failed: ValueError: labels out of range" in err
    assert "Traceback" not in err

    reset_toy()
    FAIL.update(at=1, error=RuntimeError("a bug"))
    assert main("run", "toy", "--quick", "--no-progress", "--out", "b") == 1  # not a user error: traceback
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err
    assert "tunekit: error: toy: arm 'sgd', seed 0 failed: RuntimeError: a bug (0 finished" in err
