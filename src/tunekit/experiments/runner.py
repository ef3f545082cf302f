"""The experiment runner behind ``tunekit run``: a registry of experiments, each run as arms x seeds into an
output folder that survives interruption, then reported.

An `Experiment` supplies a typed config class and five functions; the runner does the rest::

    out_dir/config.json                      the experiment's name and config (checked when resuming)
    out_dir/arms/<arm>/seed-<k>.json         one finished arm x seed: {"arm", "seed", "seconds", "result"}
    out_dir/work/<arm>/seed-<k>/             the arm's own scratch folder (kept between attempts)
    out_dir/report/                          report.md, results.json and the experiment's plots and samples

Each arm x seed result is written atomically the moment it finishes, so an interrupted or failed run loses
at most the arm x seed in progress, and running it again with the same config reads the finished ones back
instead of recomputing them (the unit of resumption is one arm x seed). A different config in the same
folder is refused, except for fields marked ``metadata={"changes_results": False}`` (say, the seeds to run:
adding a seed then runs only the new one). Execution order is seed-major (every arm of the first seed, then
the second seed, ...), so a cut-short run already compares all arms; the results are handed to the report
arm-major, in the order of ``experiment.arms(config)``.

Experiments register themselves when their module is imported; `load_experiments` imports the built-in
modules (``tunekit.experiments.BUILTIN``) and those named in the ``TUNEKIT_EXPERIMENTS`` environment
variable (comma-separated module names: a user's own experiments).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import os
import re
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .. import __version__
from ..runs import RunFolder, RunFolderError
from ..runs.config import config_diff, config_to_dict, format_value, validate_config
from ..runs.report import (
    format_duration,
    markdown_table,
    mean_and_spread,
    require,
    to_jsonable,
    write_json,
    write_text,
)

__all__ = [
    "EXPERIMENTS",
    "UNAVAILABLE",
    "ArmError",
    "ArmResult",
    "Experiment",
    "Progress",
    "RunFolderError",
    "RunSummary",
    "config_flags",
    "default_cache_dir",
    "get_experiment",
    "load_experiments",
    "register",
    "run_experiment",
]

logger = logging.getLogger("tunekit.experiments")

_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_ARM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")


@dataclass(frozen=True)
class ArmResult:
    """One finished arm x seed: the dict ``run_arm`` returned (as JSON gives it back) and its wall time."""

    arm: str
    seed: int
    result: dict
    seconds: float


@dataclass(frozen=True)
class Experiment:
    """An experiment ``tunekit run <name>`` can run.

    Attributes:
        name: the command-line name (lower case, digits, ``-`` and ``_``).
        summary: one line for ``tunekit run --list`` and the report's title.
        config_class: a dataclass of its options (see `tunekit.runs.config`).
        prepare: ``(config, cache_dir, progress) -> prepared``: the work all arms share (data, a tokenizer,
            a pre-trained model), cached by the experiment under ``cache_dir`` (shared by all experiments:
            use a subfolder). Called once per run, and not at all when every arm x seed is already finished.
        run_arm: ``(config, prepared, arm, seed, work_dir, progress) -> dict``: one arm with one seed. The
            result must be JSON-able (Paths, tuples and scalar tensors are converted) and must not depend on
            which other arms or seeds run. ``work_dir`` is this arm x seed's own folder; it survives a
            failed attempt, so an arm may keep checkpoints there (or must overwrite what it finds).
        report: ``(config, results, report_dir) -> verdict``: one honest line. It writes its plots, tables
            and samples into ``report_dir``; if it writes ``report.md`` there, the runner keeps that as the
            report's body between a title with the verdict and a section on how the run was made (otherwise
            a table of the results' numeric fields, mean ± sd over seeds, is the body).
        arms: config -> the arm names, in report order (letters, digits and ``._+=-``; they name folders);
            default the config's ``arms`` field.
        seeds: config -> the seeds (non-negative integers); every arm runs once per seed; default
            ``0 .. config.seeds - 1``.
        result_fields: the fields every arm's result has (not None) and the report reads: a saved result
            without one of them (written by another version, or edited) is set aside and its arm x seed
            runs again.
    """

    name: str
    summary: str
    config_class: type
    prepare: Callable[[Any, Path, Progress], Any]
    run_arm: Callable[[Any, Any, str, int, Path, Progress], dict]
    report: Callable[[Any, list[ArmResult], Path], str]
    arms: Callable[[Any], list[str]] = lambda config: list(config.arms)
    seeds: Callable[[Any], list[int]] = lambda config: list(range(config.seeds))
    result_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunSummary:
    """What `run_experiment` did: where the run and its report are, the verdict and all results."""

    out_dir: Path
    report_dir: Path
    verdict: str
    results: list[ArmResult]
    config: Any


class ArmError(RuntimeError):
    """An arm x seed raised; the arm x seed runs finished before it are saved (the cause is chained)."""

    def __init__(self, message: str, *, arm: str, seed: int) -> None:
        super().__init__(message)
        self.arm = arm
        self.seed = seed


EXPERIMENTS: dict[str, Experiment] = {}
"""The registered experiments by name (`register` adds one; `load_experiments` imports the built-in ones)."""
# experiment modules that failed to import -> why (shown by `tunekit run --list`), and their tracebacks
UNAVAILABLE: dict[str, str] = {}
IMPORT_TRACEBACKS: dict[str, str] = {}


def register(experiment: Experiment) -> Experiment:
    """Add ``experiment`` to `EXPERIMENTS` under its name (replacing an earlier registration of the same
    name from the same module, as a module reload does) and return it."""
    if not isinstance(experiment, Experiment):
        raise TypeError(f"register expects an Experiment, got {type(experiment).__name__}")
    if not _NAME.fullmatch(experiment.name):
        raise ValueError(
            f"experiment name {experiment.name!r} must be lower case letters, digits, '-' and '_', "
            "starting with a letter"
        )
    if not dataclasses.is_dataclass(experiment.config_class):
        raise TypeError(f"experiment {experiment.name!r}: config_class must be a dataclass")
    earlier = EXPERIMENTS.get(experiment.name)
    if earlier is not None and earlier.run_arm.__module__ != experiment.run_arm.__module__:
        raise ValueError(
            f"experiment name {experiment.name!r} is taken by {earlier.run_arm.__module__}; "
            f"{experiment.run_arm.__module__} must use another name"
        )
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def load_experiments(name: str | None = None) -> dict[str, Experiment]:
    """Import the built-in experiment modules and those in ``$TUNEKIT_EXPERIMENTS``; return `EXPERIMENTS`.

    With ``name``, stop as soon as an experiment of that name is registered, trying a module named like it
    first, then the user's modules, then the other built-in ones (each may import heavy libraries). A
    built-in module that does not exist is skipped; a module that fails to import is recorded in
    `UNAVAILABLE` with the reason, so listing the others still works.
    """
    from . import BUILTIN

    extra = [m.strip() for m in os.environ.get("TUNEKIT_EXPERIMENTS", "").split(",") if m.strip()]
    modules = list(dict.fromkeys([*BUILTIN, *extra]))
    if name is not None:
        modules.sort(key=lambda module: (module.rsplit(".", 1)[-1] != name, module in BUILTIN))
    for module in modules:
        if name is not None and name in EXPERIMENTS:
            break
        if module in sys.modules:
            continue
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if module in BUILTIN and error.name == module:
                continue  # not written yet
            UNAVAILABLE[module] = f"{type(error).__name__}: {error}"
            IMPORT_TRACEBACKS[module] = traceback.format_exc()
        except Exception as error:
            UNAVAILABLE[module] = f"{type(error).__name__}: {error}"
            IMPORT_TRACEBACKS[module] = traceback.format_exc()
        else:
            UNAVAILABLE.pop(module, None)
            IMPORT_TRACEBACKS.pop(module, None)
    return EXPERIMENTS


def get_experiment(name: str) -> Experiment:
    """The registered experiment ``name`` (loading the experiment modules first if needed), or ValueError
    saying what is available or why it could not be loaded."""
    if name not in EXPERIMENTS:
        load_experiments(name)
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    for module, reason in UNAVAILABLE.items():
        if module.rsplit(".", 1)[-1] == name:
            raise ValueError(f"experiment {name!r} could not be loaded: importing {module} failed: {reason}")
    available = ", ".join(sorted(EXPERIMENTS)) or "none"
    raise ValueError(f"unknown experiment {name!r}; available: {available}")


def default_cache_dir() -> Path:
    """``$TUNEKIT_CACHE``, else ``$XDG_CACHE_HOME/tunekit``, else ``~/.cache/tunekit``."""
    if os.environ.get("TUNEKIT_CACHE"):
        return Path(os.environ["TUNEKIT_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "tunekit"
    return Path.home() / ".cache" / "tunekit"


class _NullBar:
    """Stands in for a tqdm bar when bars are off."""

    def __init__(self, total: int | None = None, initial: int = 0) -> None:
        self.total, self.n = total, initial

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_description(self, *args: Any, **kwargs: Any) -> None:
        pass


class Progress:
    """Nested progress bars on stderr and log lines that do not break them.

    ``with progress.bar(total, "epoch 1") as bar: ... bar.update()`` gives a tqdm bar (the outermost one
    stays on screen, nested ones vanish when done), or a stand-in with the same methods when ``bars`` is
    False. ``progress.write(msg)`` prints a line above the bars, or with ``log=False`` sends it to the
    ``tunekit.experiments`` logger at INFO level. Bars need tqdm (the "cli" extra).
    """

    def __init__(self, bars: bool = True, *, log: bool = True, file: TextIO | None = None) -> None:
        self.bars = bars
        self.log = log
        self._file = file
        self._depth = 0
        self._tqdm = require("tqdm.auto", "Progress bars").tqdm if bars else None

    @property
    def file(self) -> TextIO:
        return self._file if self._file is not None else sys.stderr

    @contextlib.contextmanager
    def bar(
        self,
        total: int | None = None,
        desc: str | None = None,
        *,
        unit: str = "it",
        initial: int = 0,
        leave: bool | None = None,
    ) -> Iterator[Any]:
        if self._tqdm is None:
            yield _NullBar(total, initial)
            return
        bar = self._tqdm(
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            leave=self._depth == 0 if leave is None else leave,
            file=self.file,
            dynamic_ncols=True,
        )
        self._depth += 1
        try:
            yield bar
        finally:
            self._depth -= 1
            bar.close()

    def write(self, message: str) -> None:
        if not self.log:
            logger.info(message)
        elif self._tqdm is not None:
            self._tqdm.write(message, file=self.file)
        else:
            print(message, file=self.file, flush=True)


def run_experiment(
    name: str,
    *,
    out_dir: str | os.PathLike,
    config: Any = None,
    cache_dir: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool | Progress = True,
) -> RunSummary:
    """Run the experiment ``name`` with ``config`` (its defaults when None) into ``out_dir``, then report.

    The folder is a `tunekit.runs.RunFolder`: with ``resume`` (the default) a folder holding a run of the
    same experiment and config is continued: its finished arm x seed results are read back, never
    recomputed. A different experiment or config there, a folder tunekit did not make (a saved model, the
    user's files) and a folder another process is running in raise `RunFolderError` (a ValueError);
    ``resume=False`` discards what the earlier run wrote and starts over, but only once the experiment's
    ``prepare`` has accepted the config and its data. ``cache_dir``
    defaults to `default_cache_dir`. ``progress`` is True (bars and messages on stderr), False (quiet:
    messages to the logger) or a `Progress`.

    An exception in an arm is raised as `ArmError` naming the arm and seed, the earlier results being saved.
    """
    experiment = get_experiment(name)
    if config is None:
        config = experiment.config_class()
    elif not isinstance(config, experiment.config_class):
        raise TypeError(
            f"experiment {name!r} takes a {experiment.config_class.__name__}, got {type(config).__name__}"
        )
    validate_config(config)
    if not isinstance(progress, Progress):
        progress = Progress(bars=bool(progress), log=bool(progress))
    out_dir = Path(out_dir)
    cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    arms, seeds = _arms_and_seeds(experiment, config)

    record = {"experiment": experiment.name, "tunekit_version": __version__, "config": config_to_dict(config)}
    folder = RunFolder(
        out_dir,
        kind=f"run {experiment.name}",
        outputs=("arms", "work", "report"),
        compare=lambda saved, new: _config_changes(experiment, saved, new),
    )
    folder.check(record, fresh=not resume)  # read-only, as everything up to the claim
    finished: dict[tuple[str, int], ArmResult] = {}
    rejected: list[tuple[Path, str]] = []
    for arm in arms:
        for seed in seeds:
            result = _read_arm(experiment, out_dir, arm, seed) if resume else None
            if isinstance(result, ArmResult):
                finished[(arm, seed)] = result
            elif result is not None:
                rejected.append((_arm_path(out_dir, arm, seed), result))
    total = len(arms) * len(seeds)
    pending = [(arm, seed) for seed in seeds for arm in arms if (arm, seed) not in finished]
    prepared = None
    if pending:  # the experiment checks its data and options here: before the folder is touched
        cache_dir.mkdir(parents=True, exist_ok=True)
        prepared = experiment.prepare(config, cache_dir, progress)
    with folder.claim(record, fresh=not resume) as discarded:
        if discarded:
            progress.write(f"{name}: discarded the earlier run in {out_dir} ({', '.join(discarded)})")
        for path, reason in rejected:
            progress.write(
                f"warning: {path} is not a usable result ({reason}); set aside as "
                f"{_set_aside(path).name}, and its arm x seed runs again"
            )
        if finished and pending:
            progress.write(
                f"{name}: resuming in {out_dir}: {len(finished)} of {total} arm x seed runs had finished"
            )
        elif finished:
            progress.write(
                f"{name}: all {total} arm x seed runs in {out_dir} had finished; writing the report"
            )
        if pending:
            with progress.bar(total, name, unit="arm", initial=len(finished)) as bar:
                for arm, seed in pending:
                    bar.set_postfix_str(f"{arm}, seed {seed}")
                    finished[(arm, seed)] = _run_arm(
                        experiment, config, prepared, arm, seed, out_dir, progress
                    )
                    bar.update()
        results = [finished[(arm, seed)] for arm in arms for seed in seeds]
        report_dir, verdict = _write_report(experiment, config, results, out_dir, arms, seeds)
    return RunSummary(out_dir=out_dir, report_dir=report_dir, verdict=verdict, results=results, config=config)


def config_flags(config: Any) -> list[str]:
    """The command-line options that set ``config``'s fields which differ from their defaults.

    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class C:
    ...     epochs: int = field(default=5, metadata={"help": "epochs"})
    ...     arms: tuple[str, ...] = field(default=("ce",), metadata={"help": "arms"})
    >>> config_flags(C(epochs=3, arms=("ce", "dece")))
    ['--epochs', '3', '--arms', 'ce,dece']
    """
    flags = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if default is dataclasses.MISSING or _plain(value) != _plain(default):
            flags += ["--" + f.name.replace("_", "-"), format_value(value)]
    return flags


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(to_jsonable(value)))


# ---------------------------------------------------------------------------------------------------------


def _arms_and_seeds(experiment: Experiment, config: Any) -> tuple[list[str], list[int]]:
    arms, seeds = list(experiment.arms(config)), list(experiment.seeds(config))
    if not arms:
        raise ValueError(f"{experiment.name}: the config selects no arms")
    if not seeds:
        raise ValueError(f"{experiment.name}: the config selects no seeds")
    for arm in arms:
        if not isinstance(arm, str) or not _ARM.fullmatch(arm):
            raise ValueError(
                f"{experiment.name}: arm name {arm!r} must be letters, digits and '._+=-' (it names a folder)"
            )
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"{experiment.name}: seeds must be non-negative integers, got {seed!r}")
    for kind, values in (("arm", arms), ("seed", seeds)):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{experiment.name}: {kind} {', '.join(repeated)} given more than once")
    return arms, seeds


def _config_changes(experiment: Experiment, saved: Mapping[str, Any], new: Mapping[str, Any]) -> dict:
    if not isinstance(saved.get("config"), Mapping):
        return {"config": ("unreadable", "this run's")}
    return config_diff(experiment.config_class, saved["config"], new["config"])


def _arm_path(out_dir: Path, arm: str, seed: int) -> Path:
    return out_dir / "arms" / arm / f"seed-{seed}.json"


def _read_arm(experiment: Experiment, out_dir: Path, arm: str, seed: int) -> ArmResult | str | None:
    """The finished result of ``arm`` x ``seed``; None when there is none; why the file there is not one."""
    path = _arm_path(out_dir, arm, seed)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        return f"unreadable: {error}"
    if not isinstance(data, Mapping) or (data.get("arm"), data.get("seed")) != (arm, seed):
        return f"not the result of arm {arm!r}, seed {seed}"
    seconds, result = data.get("seconds"), data.get("result")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return f"seconds is {seconds!r}, not a number"
    if not isinstance(result, Mapping) or not result:
        return f"result is {json.dumps(result)}, not the fields an arm returns"
    missing = [key for key in experiment.result_fields if result.get(key) is None]
    if missing:
        return f"result has no value for {', '.join(missing)}"
    return ArmResult(arm=arm, seed=seed, result=dict(result), seconds=float(seconds))


def _set_aside(path: Path) -> Path:
    """Rename a result file that cannot be used to ``<name>.rejected[-n].json`` beside it (kept for the
    user to read, never read back as a result)."""
    target, n = path.with_suffix(".rejected.json"), 1
    while target.exists():
        n += 1
        target = path.with_suffix(f".rejected-{n}.json")
    os.replace(path, target)
    return target


def _run_arm(
    experiment: Experiment, config: Any, prepared: Any, arm: str, seed: int, out_dir: Path, progress: Progress
) -> ArmResult:
    work_dir = out_dir / "work" / arm / f"seed-{seed}"
    work_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        result = experiment.run_arm(config, prepared, arm, seed, work_dir, progress)
        if not isinstance(result, Mapping):
            raise TypeError(f"run_arm returned a {type(result).__name__}, not a dict")
        result = to_jsonable(result)
    except Exception as error:
        saved = len(list((out_dir / "arms").glob("*/seed-*.json")))
        raise ArmError(
            f"{experiment.name}: arm {arm!r}, seed {seed} failed: {type(error).__name__}: {error} "
            f"({saved} finished arm x seed result{'s are' if saved != 1 else ' is'} saved in "
            f"{out_dir / 'arms'}; running the same command again resumes)",
            arm=arm,
            seed=seed,
        ) from error
    seconds = round(time.perf_counter() - start, 3)
    write_json(
        _arm_path(out_dir, arm, seed), {"arm": arm, "seed": seed, "seconds": seconds, "result": result}
    )
    progress.write(f"{experiment.name}: {arm}, seed {seed} finished in {format_duration(seconds)}")
    return ArmResult(arm=arm, seed=seed, result=result, seconds=seconds)


def _write_report(
    experiment: Experiment,
    config: Any,
    results: list[ArmResult],
    out_dir: Path,
    arms: list[str],
    seeds: list[int],
) -> tuple[Path, str]:
    report_dir = out_dir / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)  # a stale plot from an earlier report must not survive
    report_dir.mkdir(parents=True)
    verdict = experiment.report(config, results, report_dir)
    if not isinstance(verdict, str) or not verdict.strip():
        raise TypeError(
            f"{experiment.name}: report must return the verdict, a non-empty string; got {verdict!r}"
        )
    verdict = " ".join(verdict.split())
    body_path = report_dir / "report.md"
    body = body_path.read_text(encoding="utf-8").strip() if body_path.is_file() else _numeric_table(results)
    plots = sorted(p.name for p in report_dir.glob("*.png") if p.name not in body)
    if plots:
        body += "\n\n## Plots\n\n" + "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)
    write_text(body_path, _report_markdown(experiment, config, results, out_dir, arms, seeds, verdict, body))
    write_json(
        report_dir / "results.json",
        {
            "experiment": experiment.name,
            "summary": experiment.summary,
            "verdict": verdict,
            "config": config_to_dict(config),
            "arms": arms,
            "seeds": seeds,
            "results": [dataclasses.asdict(r) for r in results],
            "tunekit_version": __version__,
        },
    )
    return report_dir, verdict


def _numeric_table(results: list[ArmResult]) -> str:
    """Mean ± sd over seeds of each top-level numeric field of the results, per arm."""
    keys = list(
        dict.fromkeys(
            k
            for r in results
            for k, v in r.result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
    )
    if not keys:
        return "## Results\n\nThe arms returned no numeric fields; see results.json."
    rows = []
    for arm in dict.fromkeys(r.arm for r in results):
        row: list[object] = [arm]
        for key in keys:
            values = [
                r.result[key] for r in results if r.arm == arm and isinstance(r.result.get(key), (int, float))
            ]
            row.append(mean_and_spread(values, digits=3) if values else None)
        rows.append(row)
    return "## Results\n\nMean ± standard deviation over seeds.\n\n" + markdown_table(["arm", *keys], rows)


def _report_markdown(
    experiment: Experiment,
    config: Any,
    results: list[ArmResult],
    out_dir: Path,
    arms: list[str],
    seeds: list[int],
    verdict: str,
    body: str,
) -> str:
    command = shlex.join(["tunekit", "run", experiment.name, "--out", str(out_dir), *config_flags(config)])
    times = [[arm, mean_and_spread([r.seconds for r in results if r.arm == arm], digits=1)] for arm in arms]
    config_rows = [[f"`{k}`", f"`{format_value(v)}`"] for k, v in config_to_dict(config).items()]
    total = format_duration(sum(r.seconds for r in results))
    verdict_line = f"**Verdict:** {verdict}"
    if body.startswith("# "):  # the experiment wrote its own title: keep it, add the verdict if it did not
        if verdict not in body:
            title, _, rest = body.partition("\n")
            body = f"{title}\n\n{verdict_line}\n\n{rest.strip()}"
    else:
        body = f"# {experiment.name}: {experiment.summary}\n\n{verdict_line}\n\n{body}"
    run = [
        "## How this was run",
        "",
        f"{len(arms)} arms x {len(seeds)} seeds ({', '.join(map(str, seeds))}), {total} of arm time in all, "
        f"tunekit {__version__}. To run it again (finished arms are read back, not recomputed):",
        "",
        f"```\n{command}\n```",
        "",
        "Seconds per arm and seed:",
        "",
        markdown_table(["arm", "seconds"], times),
        "",
        "Config:",
        "",
        markdown_table(["field", "value"], config_rows),
        "",
        "All results, the config and the verdict are in `results.json`.",
    ]
    return body.rstrip() + "\n\n" + "\n".join(run) + "\n"
