"""The experiment runner, configs and report helpers (`tunekit.experiments`), on a real toy experiment.

The toy experiment fits ``y = a x`` by a few SGD steps in torch, one arm per momentum, and records the loss
and slope per epoch; it counts its calls and can be told to raise inside its n-th arm x seed, so the tests
interrupt real runs in real folders and check what a rerun recomputes. test_cli.py imports it from here
(and ``TUNEKIT_EXPERIMENTS=test_runner`` registers it in a subprocess, which imports torch only to run it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import pytest

from tunekit.experiments import (
    EXPERIMENTS,
    ArmError,
    Experiment,
    Progress,
    add_config_arguments,
    config_from_sources,
    config_to_dict,
    default_cache_dir,
    load_experiments,
    register,
    run_experiment,
)
from tunekit.experiments import runner as runner_module
from tunekit.runs.config import config_overrides
from tunekit.runs.report import markdown_table, mean_and_spread, mean_std, plot_curves, write_json, write_text

MOMENTUM = {"sgd": 0.0, "momentum": 0.5, "heavy": 0.9}


def _help(text: str, **kwargs):
    return field(metadata={"help": text, **kwargs.pop("metadata", {})}, **kwargs)


@dataclass
class ToyConfig:
    QUICK: ClassVar[dict] = {"epochs": 1, "steps": 2}

    slope: float = field(default=2.0, metadata={"help": "true slope a of y = a x"})
    epochs: int = field(default=3, metadata={"help": "epochs"})
    steps: int = field(default=4, metadata={"help": "SGD steps per epoch"})
    lr: float = field(default=0.1, metadata={"help": "learning rate"})
    init: Literal["zero", "random"] = field(default="random", metadata={"help": "initial slope"})
    noise: float | None = field(default=None, metadata={"help": "noise added to y (none: exact)"})
    data: Path | None = field(default=None, metadata={"help": "file of x values, one per line"})
    tag: str = field(default="toy", metadata={"help": "a label"})
    centered: bool = field(default=False, metadata={"help": "centre x"})
    arms: tuple[str, ...] = field(
        default=("sgd", "momentum", "heavy"), metadata={"help": "arms to run", "changes_results": False}
    )
    seeds: tuple[int, ...] = field(default=(0, 1), metadata={"help": "seeds", "changes_results": False})

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        unknown = [arm for arm in self.arms if arm not in MOMENTUM]
        if unknown:
            raise ValueError(f"arms {unknown} are not among {tuple(MOMENTUM)}")


CALLS: list[tuple] = []  # ("prepare",) and ("arm", arm, seed), in order
FAIL: dict = {}  # {"at": n, "error": exception}: the n-th run_arm call (counted over a test) raises


def reset_toy() -> None:
    CALLS.clear()
    FAIL.clear()


def arm_calls() -> list[tuple[str, int]]:
    return [(arm, seed) for kind, *rest in CALLS if kind == "arm" for arm, seed in [rest]]


def toy_prepare(config: ToyConfig, cache_dir: Path, progress: Progress):
    import torch  # here, so that a subprocess that only lists or parses does not import torch

    CALLS.append(("prepare",))
    if config.data is not None:
        if not config.data.is_file():
            raise FileNotFoundError(f"data file {config.data} not found")
        x = []
        for number, line in enumerate(config.data.read_text().splitlines(), 1):
            try:
                x.append(float(line))
            except ValueError:
                raise ValueError(f"{config.data}, line {number}: not a number: {line!r}") from None
        x = torch.tensor(x)
    else:
        x = torch.linspace(-1, 1, 16)
    if config.centered:
        x = x - x.mean()
    y = config.slope * x
    if config.noise is not None:
        y = y + config.noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    (cache_dir / "toy").mkdir(parents=True, exist_ok=True)
    (cache_dir / "toy" / "prepared.txt").write_text("ok")
    progress.write("toy: data ready")
    return x, y


def toy_run_arm(config: ToyConfig, prepared, arm: str, seed: int, work_dir: Path, progress: Progress) -> dict:
    import torch

    CALLS.append(("arm", arm, seed))
    if FAIL.get("at") == len(arm_calls()):
        raise FAIL["error"]
    x, y = prepared
    gen = torch.Generator().manual_seed(seed)
    w = torch.zeros(1) if config.init == "zero" else torch.randn(1, generator=gen)
    w.requires_grad_(True)
    optimizer = torch.optim.SGD([w], lr=config.lr, momentum=MOMENTUM[arm])
    epochs = []
    for epoch in range(1, config.epochs + 1):
        with progress.bar(config.steps, f"{arm} epoch {epoch}") as bar:
            for _ in range(config.steps):
                loss = ((w * x - y) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                bar.update()
        with torch.no_grad():
            epochs.append({"epoch": epoch, "loss": float(((w * x - y) ** 2).mean()), "slope": float(w)})
    (work_dir / "slope.txt").write_text(str(float(w.detach())))
    return {"final_loss": epochs[-1]["loss"], "slope": w.detach()[0], "epochs": epochs, "tag": config.tag}


def toy_report(config: ToyConfig, results, report_dir: Path) -> str:
    arms = list(dict.fromkeys(r.arm for r in results))
    losses = {arm: [r.result["final_loss"] for r in results if r.arm == arm] for arm in arms}
    best = min(arms, key=lambda arm: sum(losses[arm]) / len(losses[arm]))
    rows = [[arm, mean_and_spread(losses[arm], digits=4)] for arm in arms]
    write_text(report_dir / "report.md", "## Final loss\n\n" + markdown_table(["arm", "loss"], rows) + "\n")
    series = {r.arm: [] for r in results}
    for r in results:
        series[r.arm] += [(e["epoch"], e["loss"]) for e in r.result["epochs"]]
    plot_curves(series, report_dir / "loss.png", title="loss", xlabel="epoch", ylabel="MSE")
    (report_dir / "samples.txt").write_text(
        "\n".join(f"{r.arm} {r.seed} {r.result['slope']}" for r in results)
    )
    return f"{best} fits the slope best:\nfinal loss {sum(losses[best]) / len(losses[best]):.3g}"


TOY = register(
    Experiment(
        name="toy",
        summary="fit y = a x by SGD with several momenta",
        config_class=ToyConfig,
        arms=lambda config: list(config.arms),
        seeds=lambda config: list(config.seeds),
        prepare=toy_prepare,
        run_arm=toy_run_arm,
        report=toy_report,
    )
)


@pytest.fixture(autouse=True)
def _toy_state():
    reset_toy()
    yield
    reset_toy()


def run(out: Path, config: ToyConfig | None = None, **kwargs):
    return run_experiment(
        "toy", out_dir=out, config=config, cache_dir=out.parent / "cache", progress=False, **kwargs
    )


# --- configs -----------------------------------------------------------------------------------------------


def test_precedence_defaults_quick_yaml_overrides(tmp_path):
    assert config_from_sources(ToyConfig) == ToyConfig()
    assert config_from_sources(ToyConfig, quick=True) == ToyConfig(epochs=1, steps=2)
    yaml_path = tmp_path / "toy.yaml"
    yaml_path.write_text("epochs: 5\nlr: 0.2\ntag: from-yaml\n")
    config = config_from_sources(ToyConfig, yaml_path=yaml_path, overrides={"lr": "0.3"}, quick=True)
    assert (config.epochs, config.steps, config.lr, config.tag) == (5, 2, 0.3, "from-yaml")
    # the flag spelling of a field is accepted too
    assert config_from_sources(ToyConfig, overrides={"--epochs": "6"}).epochs == 6


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("slope", "1.5", 1.5),
        ("slope", "1e-3", 0.001),
        ("epochs", "7", 7),
        ("tag", "hello, world", "hello, world"),
        ("centered", "true", True),
        ("centered", "False", False),
        ("centered", "yes", True),
        ("centered", "0", False),
        ("noise", "none", None),
        ("noise", "0.25", 0.25),
        ("data", "None", None),
        ("data", "~/x.txt", Path.home() / "x.txt"),
        ("init", "zero", "zero"),
        ("arms", "sgd, momentum", ("sgd", "momentum")),
        ("seeds", "0,1,2", (0, 1, 2)),
        ("seeds", "", ()),
    ],
)
def test_string_conversions(name, text, expected):
    value = getattr(config_from_sources(ToyConfig, overrides={name: text}), name)
    assert value == expected and type(value) is type(expected)


def test_yaml_values_keep_their_types(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "epochs: 4\ncentered: yes\narms: [heavy]\nseeds: [3, 4]\ndata: null\ntag: 123\nslope: 3\n"
    )
    config = config_from_sources(ToyConfig, yaml_path=path)
    assert (config.epochs, config.centered, config.arms, config.seeds) == (4, True, ("heavy",), (3, 4))
    assert (config.data, config.tag, config.slope) == (None, "123", 3.0)
    assert isinstance(config.slope, float)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert config_from_sources(ToyConfig, yaml_path=empty) == ToyConfig()


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        ({"epoch": "3"}, ["unknown field 'epoch'", "the command line", "did you mean '--epochs'", "steps"]),
        ({"epochs": "three"}, ["epochs (--epochs)", "the command line", "expected an integer", "'three'"]),
        ({"epochs": "2.5"}, ["epochs", "expected an integer"]),
        ({"slope": "steep"}, ["slope", "expected a number"]),
        ({"centered": "maybe"}, ["centered", "true or false"]),
        ({"init": "ones"}, ["init", "one of zero, random", "'ones'"]),
        ({"seeds": "0,x"}, ["seeds", "expected an integer", "'x'"]),
        ({"seeds": "0,,1"}, ["seeds", "empty items"]),
        ({"noise": "loud"}, ["noise", "expected a number", "or none"]),
        ({"data": " "}, ["data", "expected a path"]),
        ({"steps": "0"}, ["steps must be >= 1, got 0"]),  # the class's validate()
        ({"arms": "sgd,adam"}, ["['adam']"]),
    ],
)
def test_bad_overrides_name_the_field(overrides, fragments):
    with pytest.raises(ValueError) as info:
        config_from_sources(ToyConfig, overrides=overrides)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("epoch: 3\n", ["unknown field 'epoch'", "did you mean 'epochs'"]),
        ("epochs: three\n", ["invalid value for epochs", "expected an integer"]),
        ("slope: true\n", ["slope", "expected a number"]),
        ("tag: [a, b]\n", ["tag", "expected text"]),
        ("- epochs\n- 3\n", ["must be a mapping", "got a list"]),
        ("epochs: [1\n", ["is not valid YAML"]),
        ("just text\n", ["must be a mapping", "got a str"]),
    ],
)
def test_bad_yaml_names_the_file(tmp_path, text, fragments):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        config_from_sources(ToyConfig, yaml_path=path)
    assert str(path) in str(info.value)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_missing_yaml_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config file .*nope\.yaml not found"):
        config_from_sources(ToyConfig, yaml_path=tmp_path / "nope.yaml")


def test_bad_quick_settings_and_unsupported_types():
    @dataclass
    class BadQuick:
        QUICK: ClassVar[dict] = {"epochz": 1}
        epochs: int = field(default=1, metadata={"help": "epochs"})

    with pytest.raises(ValueError, match=r"unknown field 'epochz' in BadQuick.QUICK"):
        config_from_sources(BadQuick, quick=True)

    @dataclass
    class Unsupported:
        weights: list = field(default_factory=list, metadata={"help": "weights"})

    with pytest.raises(TypeError, match=r"Unsupported\.weights: unsupported config field type"):
        config_from_sources(Unsupported)

    @dataclass
    class Required:
        data: Path = field(metadata={"help": "data"})

    with pytest.raises(ValueError, match="no default for data: set it in the config file or with --data"):
        config_from_sources(Required)
    assert config_from_sources(Required, overrides={"data": "x"}).data == Path("x")


def test_config_to_dict_is_json():
    config = ToyConfig(data=Path("/tmp/x"), noise=0.5)
    as_dict = config_to_dict(config)
    assert as_dict["data"] == "/tmp/x" and as_dict["arms"] == ["sgd", "momentum", "heavy"]
    assert json.loads(json.dumps(as_dict)) == as_dict


def test_config_arguments(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    parser = argparse.ArgumentParser(prog="toy")
    add_config_arguments(parser, ToyConfig)
    help_text = parser.format_help()
    for fragment in [
        "--epochs INT",
        "epochs (default: 3; --quick: 1)",
        "--init {zero,random}",
        "--noise FLOAT|none",
        "--data PATH|none",
        "--centered [{true,false}]",
        "--arms TEXT,...",
        "(default: sgd,momentum,heavy)",
        "--seeds INT,...",
    ]:
        assert fragment in help_text
    namespace = parser.parse_args(["--epochs", "4", "--centered", "--seeds", "5"])
    assert config_overrides(namespace, ToyConfig) == {"epochs": "4", "centered": "true", "seeds": "5"}
    config = config_from_sources(ToyConfig, overrides=config_overrides(namespace, ToyConfig))
    assert (config.epochs, config.centered, config.seeds, config.lr) == (4, True, (5,), 0.1)
    # a bool's --no- form: false, and hidden from the help (listed with its --field)
    assert config_overrides(parser.parse_args(["--no-centered"]), ToyConfig) == {"centered": "false"}
    assert "--no-centered" not in help_text


# --- running -----------------------------------------------------------------------------------------------


def test_run_writes_results_and_report(tmp_path):
    out = tmp_path / "run"
    summary = run(out, ToyConfig(epochs=2))
    assert summary.report_dir == out / "report"
    assert [(r.arm, r.seed) for r in summary.results] == [
        (a, s) for a in ("sgd", "momentum", "heavy") for s in (0, 1)
    ]
    # seed-major execution: every arm of seed 0 first
    assert arm_calls() == [(a, s) for s in (0, 1) for a in ("sgd", "momentum", "heavy")]
    assert CALLS[0] == ("prepare",)
    first = summary.results[0].result
    assert isinstance(first["slope"], float) and len(first["epochs"]) == 2
    assert summary.verdict == summary.verdict.strip() and "\n" not in summary.verdict
    assert summary.verdict.startswith("momentum fits the slope best: final loss")  # one line from two

    saved = json.loads((out / "config.json").read_text())
    assert saved["experiment"] == "toy" and saved["config"]["epochs"] == 2
    arm_file = json.loads((out / "arms" / "momentum" / "seed-1.json").read_text())
    assert arm_file["arm"] == "momentum" and arm_file["seed"] == 1 and arm_file["seconds"] >= 0
    assert arm_file["result"] == summary.results[3].result
    assert (out / "work" / "heavy" / "seed-0" / "slope.txt").is_file()
    assert (tmp_path / "cache" / "toy" / "prepared.txt").is_file()

    results = json.loads((out / "report" / "results.json").read_text())
    assert set(results) >= {"experiment", "summary", "verdict", "config", "arms", "seeds", "results"}
    assert results["verdict"] == summary.verdict and results["config"] == config_to_dict(ToyConfig(epochs=2))
    assert results["arms"] == ["sgd", "momentum", "heavy"] and results["seeds"] == [0, 1]
    assert [r["result"] for r in results["results"]] == [r.result for r in summary.results]
    assert set(results["results"][0]) == {"arm", "seed", "result", "seconds"}

    report = (out / "report" / "report.md").read_text()
    assert report.startswith("# toy: fit y = a x by SGD with several momenta\n\n**Verdict:** momentum fits")
    assert "## Final loss" in report and "| heavy |" in report
    assert "tunekit run toy --out" in report and "--epochs 2" in report
    assert (out / "report" / "samples.txt").is_file()
    assert (out / "report" / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![loss](loss.png)" in report  # a plot the body does not show is appended


def test_interrupted_run_resumes_without_recomputing(tmp_path):
    config = ToyConfig(epochs=2)
    reference = run(tmp_path / "reference", config)
    reset_toy()

    out = tmp_path / "run"
    FAIL.update(at=3, error=RuntimeError("out of memory, say"))
    with pytest.raises(ArmError) as info:
        run(out, config)
    message = str(info.value)
    assert "arm 'heavy', seed 0 failed: RuntimeError: out of memory, say" in message
    assert "2 finished arm x seed results are saved in" in message and "resumes" in message
    assert (info.value.arm, info.value.seed) == ("heavy", 0)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert sorted(p.relative_to(out / "arms").as_posix() for p in (out / "arms").rglob("*.json")) == [
        "momentum/seed-0.json",
        "sgd/seed-0.json",
    ]
    assert not list(out.rglob("*.tmp")) and not (out / "report").exists()

    reset_toy()
    summary = run(out, config)
    assert arm_calls() == [
        ("heavy", 0),
        ("sgd", 1),
        ("momentum", 1),
        ("heavy", 1),
    ]  # the 2 finished: not again
    assert [r.result for r in summary.results] == [r.result for r in reference.results]
    assert summary.verdict == reference.verdict

    reset_toy()  # a finished run: read back, reported again, nothing prepared or run
    again = run(out, config)
    assert CALLS == [] and [r.result for r in again.results] == [r.result for r in reference.results]
    assert [r.seconds for r in again.results] == [r.seconds for r in summary.results]


def test_changed_config_refuses_to_resume_and_fresh_starts_over(tmp_path):
    out = tmp_path / "run"
    run(out, ToyConfig(epochs=1, seeds=(0,)))
    with pytest.raises(ValueError) as info:
        run(out, ToyConfig(epochs=2, lr=0.05, seeds=(0,)))
    message = str(info.value)
    assert "other options (epochs: 1 there, 2 now; lr: 0.1 there, 0.05 now)" in message
    assert "--out DIR" in message and "--fresh" in message
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 1  # untouched

    reset_toy()
    summary = run(out, ToyConfig(epochs=2, lr=0.05, seeds=(0,)), resume=False)
    assert arm_calls() == [("sgd", 0), ("momentum", 0), ("heavy", 0)]
    assert len(summary.results[0].result["epochs"]) == 2
    assert json.loads((out / "config.json").read_text())["config"]["epochs"] == 2


def test_arms_and_seeds_may_change_between_attempts(tmp_path):
    out = tmp_path / "run"
    run(out, ToyConfig(epochs=1, seeds=(0,), arms=("sgd",)))
    reset_toy()
    summary = run(
        out, ToyConfig(epochs=1, seeds=(0, 1), arms=("sgd", "heavy"))
    )  # marked changes_results=False
    assert arm_calls() == [("heavy", 0), ("sgd", 1), ("heavy", 1)]
    assert [(r.arm, r.seed) for r in summary.results] == [("sgd", 0), ("sgd", 1), ("heavy", 0), ("heavy", 1)]
    reset_toy()
    fewer = run(out, ToyConfig(epochs=1, seeds=(1,), arms=("heavy",)))
    assert CALLS == [] and [(r.arm, r.seed) for r in fewer.results] == [("heavy", 1)]
    assert json.loads((out / "report" / "results.json").read_text())["seeds"] == [1]


def test_other_experiment_or_foreign_folder_is_refused(tmp_path):
    other = register(dataclasses.replace(TOY, name="toy-other"))
    try:
        out = tmp_path / "run"
        run(out, ToyConfig(epochs=1, seeds=(0,), arms=("sgd",)))
        refused = "holds a run of `tunekit run toy`, not of `tunekit run toy-other`"
        with pytest.raises(ValueError, match=refused):
            run_experiment(other.name, out_dir=out, config=ToyConfig(), progress=False)
    finally:
        del EXPERIMENTS["toy-other"]
    foreign = tmp_path / "documents"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    for resume in (True, False):
        with pytest.raises(ValueError, match=r"holds files tunekit did not write \(thesis.tex\)"):
            run(foreign, ToyConfig(epochs=1), resume=resume)
    assert (foreign / "thesis.tex").read_text() == "keep me"
    afile = tmp_path / "afile"
    afile.write_text("")
    with pytest.raises(ValueError, match="is a file"):
        run(afile)


@pytest.mark.parametrize(
    ("arms", "seeds", "message"),
    [
        (["a/b"], [0], "arm name 'a/b'"),
        ([".."], [0], "arm name '..'"),
        (["a", "a"], [0], "arm a given more than once"),
        (["a"], [1, 1], "seed 1 given more than once"),
        (["a"], [-1], "non-negative integers, got -1"),
        ([], [0], "selects no arms"),
        (["a"], [], "selects no seeds"),
    ],
)
def test_bad_arms_and_seeds(tmp_path, arms, seeds, message):
    experiment = register(
        dataclasses.replace(TOY, name="toy-bad", arms=lambda c: arms, seeds=lambda c: seeds)
    )
    try:
        with pytest.raises(ValueError, match=message.replace(".", r"\.").replace("[", r"\[")):
            run_experiment(experiment.name, out_dir=tmp_path / "run", progress=False)
    finally:
        del EXPERIMENTS["toy-bad"]
    assert CALLS == []


def test_arm_must_return_json(tmp_path):
    experiment = register(dataclasses.replace(TOY, name="toy-set", run_arm=lambda *args: {"x": {1, 2}}))
    try:
        with pytest.raises(ArmError, match="arm 'sgd', seed 0 failed: TypeError: cannot write set"):
            run_experiment(experiment.name, out_dir=tmp_path / "run", progress=False)
    finally:
        del EXPERIMENTS["toy-set"]


def test_report_with_its_own_title_and_no_body(tmp_path):
    def titled(config, results, report_dir):
        write_text(report_dir / "report.md", "# My toy\n\nbody text\n")
        return "a verdict"

    experiment = register(dataclasses.replace(TOY, name="toy-titled", report=titled))
    bare = register(
        dataclasses.replace(TOY, name="toy-bare", report=lambda config, results, report_dir: "bare")
    )
    try:
        config = ToyConfig(epochs=1, seeds=(0, 1), arms=("sgd",))
        run_experiment(experiment.name, out_dir=tmp_path / "a", config=config, progress=False)
        report = (tmp_path / "a" / "report" / "report.md").read_text()
        assert report.startswith("# My toy\n\n**Verdict:** a verdict\n\nbody text\n\n## How this was run")
        run_experiment(bare.name, out_dir=tmp_path / "b", config=config, progress=False)
        report = (tmp_path / "b" / "report" / "report.md").read_text()
        assert "| arm | final_loss | slope |" in report and "(n=2)" in report
    finally:
        del EXPERIMENTS["toy-titled"], EXPERIMENTS["toy-bare"]


def test_progress_bars_and_messages_on_stderr(tmp_path, capsys):
    run_experiment("toy", out_dir=tmp_path / "run", config=ToyConfig(epochs=1, seeds=(0,)), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "toy: data ready" in captured.err and "toy: heavy, seed 0 finished in" in captured.err
    assert "3/3" in captured.err  # the outer bar over arm x seed


def test_unknown_experiment_and_loading(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown experiment 'nope'; available: .*toy"):
        run_experiment("nope", out_dir="unused")
    import tunekit.experiments as package

    monkeypatch.setattr(package, "BUILTIN", ("tunekit.experiments.not_written_yet",))
    monkeypatch.setattr(runner_module, "UNAVAILABLE", {})
    monkeypatch.setenv("TUNEKIT_EXPERIMENTS", "no_such_module_xyz, test_runner")
    assert load_experiments()["toy"] is TOY
    assert list(runner_module.UNAVAILABLE) == ["no_such_module_xyz"]  # a missing built-in is skipped quietly
    with pytest.raises(ValueError, match="could not be loaded: importing no_such_module_xyz failed"):
        run_experiment("no_such_module_xyz", out_dir="unused")


def test_register_checks():
    with pytest.raises(ValueError, match="experiment name 'Bad Name'"):
        register(dataclasses.replace(TOY, name="Bad Name"))
    with pytest.raises(ValueError, match="is taken by test_runner"):
        register(dataclasses.replace(TOY, run_arm=print))


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("TUNEKIT_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "tunekit"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "tunekit"
    monkeypatch.setenv("TUNEKIT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


# --- report helpers ----------------------------------------------------------------------------------------


def test_markdown_table_and_mean_and_spread():
    table = markdown_table(["arm", "ASR", "note"], [["ce", 0.96789, "a|b"], ["dece", None, None]])
    assert table.splitlines() == [
        "| arm | ASR | note |",
        "|---|---:|---|",
        "| ce | 0.9679 | a\\|b |",
        "| dece |  |  |",
    ]
    with pytest.raises(ValueError, match="row 0 has 1 cells, the table has 2 columns"):
        markdown_table(["a", "b"], [[1]])
    # a line break in a cell becomes a space; a number written as text is text (left-aligned)
    assert markdown_table(["n", "text"], [["12", "a\nb"]]).splitlines() == [
        "| n | text |",
        "|---|---|",
        "| 12 | a b |",
    ]
    assert mean_and_spread([1.0, 2.0, 3.0]) == "2.00 ± 1.00 (n=3)"
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and math.isnan(mean_std([1.0, math.inf])[1])
    assert mean_and_spread([0.5], digits=3) == "0.500 (n=1)"
    with pytest.raises(ValueError, match="at least one value"):
        mean_and_spread([])


def test_write_json_is_atomic(tmp_path):
    import torch

    path = tmp_path / "deep" / "x.json"
    write_json(path, {"p": Path("a/b"), "t": (1, 2), "s": torch.tensor(0.5)})
    assert json.loads(path.read_text()) == {"p": "a/b", "t": [1, 2], "s": 0.5}
    with pytest.raises(TypeError, match="cannot write set"):
        write_json(path, {"bad": {1}})
    assert json.loads(path.read_text())["s"] == 0.5  # the earlier version is intact
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary file left


def test_plot_curves(tmp_path):
    path = plot_curves(
        {"ce": [(1, 0.9), (2, 0.95), (1, 0.8), (2, 0.97)], "dece": [(1, 0.0), (2, 0.01)]},
        tmp_path / "asr.png",
        title="ASR",
        xlabel="epoch",
        ylabel="exact ASR",
        ylim=(0, 1),
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no series"):
        plot_curves({}, tmp_path / "x.png", title="t", xlabel="x", ylabel="y")


def test_missing_extra_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r'Plotting the report needs .*pip install "tunekit\[cli\]"'):
        plot_curves({"a": [(1, 1.0)]}, tmp_path / "x.png", title="t", xlabel="x", ylabel="y")
