"""What the reports of ``tunekit train`` and the experiments are written with: markdown tables, a mean
with its spread over seeds, curves as PNG plots, and files written atomically (a reader never sees half a
file, an interrupted write leaves the previous version in place).

Plotting needs matplotlib (the "cli" extra), imported only when a plot is drawn.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from types import ModuleType
from typing import Any

__all__ = [
    "epoch_line",
    "format_duration",
    "markdown_table",
    "mean_and_spread",
    "mean_std",
    "plot_curves",
    "require",
    "to_jsonable",
    "write_json",
    "write_text",
]


def require(module: str, purpose: str, extra: str = "cli") -> ModuleType:
    """Import an optional dependency, or raise an ImportError that says which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f'{purpose} needs the Python package {module.split(".")[0]!r}: pip install "tunekit[{extra}]"'
        ) from error


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically: to a temporary file in the same folder, then
    ``os.replace``. Parent folders are created."""
    return _write_atomic(Path(path), text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically (see `write_text`).

    Paths are written as strings, tuples as lists, and numbers with an ``item()`` method (numpy and torch
    scalars) as plain numbers; anything else JSON cannot hold raises TypeError.
    """
    return write_text(path, json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False) + "\n")


def to_jsonable(obj: Any) -> Any:
    """``obj`` with paths turned into strings, tuples into lists and scalar tensors / numpy numbers into
    Python numbers; raises TypeError naming the first value JSON cannot hold.

    >>> from pathlib import Path
    >>> to_jsonable({"dir": Path("runs/x"), "seeds": (0, 1)})
    {'dir': 'runs/x', 'seeds': [0, 1]}
    """
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(value) for value in obj]
    item = getattr(obj, "item", None)
    if callable(item) and getattr(obj, "ndim", None) == 0:  # torch / numpy scalars
        return to_jsonable(item())
    raise TypeError(f"cannot write {type(obj).__name__} {obj!r} as JSON")


def _write_atomic(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return path


def markdown_table(headers: Sequence[object], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table. Floats are shown with 4 significant digits, ``None`` as an
    empty cell; columns whose cells are all numbers are right-aligned; ``|`` in a cell is escaped and a line
    break becomes a space.

    >>> print(markdown_table(["arm", "ASR"], [["ce", 0.9712], ["dece", 0.0]]))
    | arm | ASR |
    |---|---:|
    | ce | 0.9712 |
    | dece | 0 |
    """
    headers = [_cell(h) for h in headers]
    rows = [list(row) for row in rows]
    for i, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {i} has {len(row)} cells, the table has {len(headers)} columns: {row!r}")
    numeric = [
        bool(rows) and all(_is_number(row[j]) or row[j] is None for row in rows) for j in range(len(headers))
    ]
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of ``values``: ``fmean`` and ``stdev``; the deviation of a single
    value is 0, and NaN when a value is not finite.

    >>> mean_std([1.0, 3.0, 5.0]), mean_std([0.5])
    ((3.0, 2.0), (0.5, 0.0))
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_std needs at least one value")
    if len(values) == 1:
        return values[0], 0.0
    spread = statistics.stdev(values) if all(math.isfinite(v) for v in values) else math.nan
    return statistics.fmean(values), spread


def mean_and_spread(values: Iterable[float], digits: int = 2) -> str:
    """`mean_std` as text, with the count: ``"0.97 ± 0.01 (n=3)"``. One value has no spread and says so:
    ``"0.97 (n=1)"``.

    >>> mean_and_spread([0.96, 0.97, 0.98])
    '0.97 ± 0.01 (n=3)'
    >>> mean_and_spread([0.5])
    '0.50 (n=1)'
    """
    values = list(values)
    if not values:
        raise ValueError("mean_and_spread needs at least one value")
    mean, spread = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {spread:.{digits}f} (n={len(values)})"


def epoch_line(arm: str, seed: int, row: dict[str, float]) -> str:
    """The progress line of one evaluated epoch: ``arm seed S epoch E: metric value, ...``.

    Example::

        >>> epoch_line("dece", 0, {"epoch": 2, "asr": 0.0, "bleu": 12.3456})
        'dece seed 0 epoch 2: asr 0.000, bleu 12.346'
    """
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "epoch")
    return f"{arm} seed {seed} epoch {row['epoch']}: {metrics}"


def format_duration(seconds: float) -> str:
    """``"42 s"``, ``"3 min 05 s"``, ``"1 h 02 min"``.

    >>> format_duration(185.2)
    '3 min 05 s'
    """
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def plot_curves(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> Path:
    """Plot one line per label from its ``(x, y)`` points and save a PNG at ``path``.

    Points of a label that share an x (one per seed) are drawn as their mean, with a band from their minimum
    to their maximum, so a curve over several seeds shows its spread. Needs matplotlib ("cli" extra); uses
    its Agg canvas directly, so no pyplot state or display is involved.
    """
    if not series:
        raise ValueError(f"plot_curves got no series for {title!r}")
    require("matplotlib", "Plotting the report")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    integer_x = all(float(x).is_integer() for points in series.values() for x, _ in points)
    if integer_x:  # epochs, steps: no tick at 1.5
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for label, points in series.items():
        by_x: dict[float, list[float]] = {}
        for x, y in points:
            by_x.setdefault(float(x), []).append(float(y))
        if not by_x:
            raise ValueError(f"plot_curves: series {label!r} of {title!r} has no points")
        xs = sorted(by_x)
        means = [statistics.fmean(by_x[x]) for x in xs]
        (line,) = axes.plot(xs, means, marker="o" if len(xs) <= 30 else None, label=str(label))
        if any(len(by_x[x]) > 1 for x in xs):
            lows, highs = [min(by_x[x]) for x in xs], [max(by_x[x]) for x in xs]
            axes.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if ylim is not None:
        axes.set_ylim(*ylim)
    axes.grid(True, alpha=0.3)
    axes.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    figure.savefig(temp, format="png", dpi=120)
    os.replace(temp, path)
    return path
