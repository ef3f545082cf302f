"""``tunekit train`` through the command line (`cli.main` in-process): a run from flags and from YAML, a
rerun that resumes, and the user errors (exit 2, the message on stderr, no traceback)."""

from __future__ import annotations

import json
import sys

import pytest

from finetune_data import TINY, classification_records, write_jsonl
from tunekit import cli


def tiny_flags() -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default output folder is runs/train
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)


def test_train_from_flags_then_rerun_resumes(tmp_path, capsys):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(24))
    args = ["train", "--train-file", str(data), "--no-progress", *tiny_flags(), "--epochs", "1"]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1: train_loss " in out and ", accuracy " in out and ", macro_f1 " in out
    assert "model: runs/train/model" in out and "report: runs/train/report.md" in out
    results = json.loads((tmp_path / "runs/train/metrics.json").read_text())
    assert results["complete"] and results["resumed_from"] is None

    assert cli.main(args) == 0  # the same command: resumes from the last checkpoint, nothing left to train
    results = json.loads((tmp_path / "runs/train/metrics.json").read_text())
    assert results["resumed_from"].endswith("checkpoint-3") and [e["epoch"] for e in results["epochs"]] == [1]

    assert cli.main([*args, "--epochs", "2"]) == 2  # another option: refused
    assert "other options (epochs: 1 there, 2 now)" in capsys.readouterr().err
    assert cli.main([*args, "--epochs", "2", "--fresh"]) == 0


def test_train_from_a_yaml_config(tmp_path, capsys):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(16))
    lines = [
        f"train_file: {data}",
        "objective: focal",
        "objective_options: {gamma: 1.0}",
        "ema_decay: 0.9",
        "epochs: 1",
    ]
    lines += [f"{name}: {value}" for name, value in TINY.items() if name != "epochs"]
    config = tmp_path / "train.yaml"
    config.write_text("\n".join(lines) + "\n")
    assert cli.main(["train", "--config", str(config), "--out", "focal", "--no-progress"]) == 0
    results = json.loads((tmp_path / "focal/metrics.json").read_text())
    assert results["objective"] == "focal (gamma=1.0)" and results["tricks"].startswith("EMA (decay 0.9")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("train_file: d.jsonl\nlearning_rat: 0.1\n", "unknown field 'learning_rat' in config file"),
        ("train_file: d.jsonl\nobjective: smile\n", "does not fit task sequence_"),
        ("- a list\n", "must be a mapping of field names to values"),
    ],
)
def test_a_bad_yaml_config_is_a_user_error(tmp_path, capsys, yaml_text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    assert cli.main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunekit: error: ") and message in err and "Traceback" not in err


def test_bad_data_is_a_user_error_with_file_and_line(tmp_path, capsys):
    data = tmp_path / "reviews.jsonl"
    data.write_text('{"text": "fine", "label": "pos"}\n{"text": "bad", "labels": "neg"}\n')
    assert cli.main(["train", "--train-file", str(data), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"tunekit: error: {data}, line 2: missing field 'label' (fields: text, labels)" in err
    assert not (tmp_path / "runs").exists()


def test_problem_type_errors_are_user_errors(tmp_path, capsys):
    data = tmp_path / "scores.jsonl"
    data.write_text('{"text": "fine", "label": 0.5}\n{"text": "bad", "label": "low"}\n')
    args = ["train", "--train-file", str(data), "--no-progress", "--problem-type", "regression"]
    assert cli.main([*args, "--objective", "mse_corr"]) == 2
    err = capsys.readouterr().err
    assert (
        f"tunekit: error: {data}, line 2: field 'label' must be a finite number (regression), got 'low'"
        in err
    )
    assert cli.main(args) == 2  # the default objective, cross_entropy, is single-label
    err = capsys.readouterr().err
    assert (
        "does not fit task sequence_classification with problem_type regression" in err
        and "Traceback" not in err
    )
    assert not (tmp_path / "runs").exists()


def test_other_user_errors(tmp_path, capsys, monkeypatch):
    assert cli.main(["train", "--no-progress"]) == 2
    assert "no default for train_file" in capsys.readouterr().err
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    assert cli.main(["train", "--train-file", str(data), "--resume", "--out", "none_yet"]) == 2
    assert "nothing to resume: none_yet/checkpoints has no checkpoint" in capsys.readouterr().err
    folder = tmp_path / "saved_dataset"
    folder.mkdir()
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed (it may be): its import raises
    assert cli.main(["train", "--train-file", str(folder)]) == 1  # a missing package: status 1
    assert "pip install datasets" in capsys.readouterr().err


def test_help_lists_the_options(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in (
        "--train-file",
        "--task",
        "--objective",
        "--problem-type",
        "--label-separator",
        "--ema-decay",
        "--adversarial",
        "--objective-options",
        "--badam",
        "--rdrop-weight",
        "--resume",
        "--fresh",
    ):
        assert flag in text
    assert cli.main(["--help"]) == 0
    assert "fine-tune a model on your own data" in capsys.readouterr().out
