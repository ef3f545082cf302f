"""MkDocs hooks: the pages quote measured results and command-line help from their sources, never by hand.

A page writes a marker (an HTML comment, so the source still reads on its own) and the build replaces it:

    <!-- report: backdoor verdict -->    the verdict line of docs/backdoor/report.md
    <!-- report: backdoor table -->      the first table of that report (the last epoch, mean ± spread)
    <!-- report: backdoor line Clean quality -->  the report's line that starts with "Clean quality"
    <!-- tunekit: run backdoor --help -->  what `tunekit run backdoor --help` prints (only for commands that
                                          print and exit: --help, run --list)
    <!-- benchmark-summary: benchmarks/measured/cpu-2cores.md -->  per objective, the range of each ratio
                                          column of that table over the sizes it measured

The reports are the ones the experiments wrote (`docs/<name>/report.md`), so a rerun that changes a number
changes the site with it. Benchmark tables come in whole through pymdownx.snippets (`--8<--`) from
`benchmarks/measured/`. A marker whose source is missing stops the build.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from itertools import dropwhile, takewhile
from pathlib import Path
from unittest import mock

from mkdocs.exceptions import PluginError

# a marker stands on a line of its own; what replaces it keeps its indentation (inside an admonition)
MARKER = re.compile(
    r"^([ \t]*)<!-- (report|tunekit|benchmark-summary):[ \t]*([^>]*?)[ \t]*-->[ \t]*$", re.MULTILINE
)
COLUMNS = "88"  # argparse wraps help to the terminal's width; this fits a code block


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs = Path(config["docs_dir"])

    def replace(match: re.Match) -> str:
        indent, kind, argument = match.group(1), match.group(2), match.group(3).split()
        where = f"{page.file.src_path}: <!-- {kind}: {match.group(3)} -->"
        if kind == "report":
            text = report_part(docs, *argument, where=where)
        elif kind == "benchmark-summary":
            text = benchmark_summary(Path(config["config_file_path"]).parent / argument[0], where=where)
        else:
            text = command_output(argument, where=where)
        return "\n".join(indent + line if line else line for line in text.splitlines())

    return MARKER.sub(replace, markdown)


def report_part(docs: Path, name: str, part: str, *prefix: str, where: str) -> str:
    path = docs / name / "report.md"
    if not path.is_file():
        raise PluginError(f"{where}: no report at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    if part == "verdict":
        found = [line for line in lines if line.startswith("**Verdict:**")]
    elif part == "line" and prefix:
        found = [line for line in lines if line.startswith(" ".join(prefix))]
    elif part == "table":  # the first run of lines that start with "|"
        rest = list(dropwhile(lambda line: not line.startswith("|"), lines))
        found = list(takewhile(lambda line: line.startswith("|"), rest))
    else:
        raise PluginError(f"{where}: the part must be 'verdict', 'table' or 'line PREFIX', got {part!r}")
    if not found:
        raise PluginError(f"{where}: {path} has no {part}")
    return "\n".join(found if part == "table" else found[:1])


def benchmark_summary(path: Path, *, where: str) -> str:
    """The ratio columns of a `bench_token_losses.py` table, as each objective's range over the sizes."""
    if not path.is_file():
        raise PluginError(f"{where}: no benchmark table at {path}")
    rows = [line.strip("|").split("|") for line in path.read_text(encoding="utf-8").splitlines()]
    header = next((row for row in rows if row[0].strip() == "T"), None)
    if header is None:
        raise PluginError(f"{where}: {path} has no table with a T column")
    columns = [i for i, name in enumerate(header) if name.strip().startswith(("time vs", "memory vs"))]
    ranges: dict[str, dict[int, list[float]]] = {}
    for row in rows:
        if len(row) != len(header) or not row[0].strip().isdigit():
            continue
        cells = {i: row[i].strip() for i in columns if row[i].strip().endswith("x")}
        if set(cells.values()) <= {"1.00x"}:  # a baseline's own row (or a case that did not run)
            continue
        for i, cell in cells.items():
            ranges.setdefault(row[2].strip(), {}).setdefault(i, []).append(float(cell[:-1]))
    if not ranges:
        raise PluginError(f"{where}: {path} has no ratios")
    lines = [
        "| objective | " + " | ".join(header[i].strip() for i in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, values in ranges.items():
        cells = [_span(values.get(i, [])) for i in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _span(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    return f"{low:.2f}x" if low == high else f"{low:.2f}x - {high:.2f}x"


def command_output(argv: list[str], *, where: str) -> str:
    """What ``tunekit ARGV`` prints, as a code block; only for commands that print and exit."""
    from tunekit.cli import main

    if not {"--help", "--list"} & set(argv):
        raise PluginError(f"{where}: only --help and --list commands run while the site builds")
    out = io.StringIO()
    with mock.patch.dict(os.environ, {"COLUMNS": COLUMNS}), contextlib.redirect_stdout(out):
        status = main(argv)
    if status != 0:
        raise PluginError(f"{where}: `tunekit {' '.join(argv)}` exited with {status}")
    return f"```text\n$ tunekit {' '.join(argv)}\n{out.getvalue().rstrip()}\n```"
