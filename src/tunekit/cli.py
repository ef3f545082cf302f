"""The ``tunekit`` command line (``python -m tunekit`` too).

    tunekit run [NAME] [--config FILE.yaml] [--out DIR] [--cache DIR] [--quick] [--fresh] [--no-progress]
                [--<field> VALUE ...]
    tunekit run --list
    tunekit run NAME --help

``tunekit run`` without a name runs ``backdoor``. The experiment's config fields become options, so the
parser is built in two stages: the name first (it comes right after ``run``), then that experiment's
options. User errors (a bad option value, an unknown or malformed file) print ``tunekit: error: ...`` and
exit with status 2; an interruption (Ctrl-C) exits with 130 after saying which results are kept. Set
``TUNEKIT_DEBUG=1`` to see the traceback behind an error.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__

__all__ = ["DEFAULT_EXPERIMENT", "main"]

DEFAULT_EXPERIMENT = "backdoor"  # what `tunekit run` runs without a name

USAGE_ERROR, INTERRUPTED = 2, 130
_USER_ERRORS = (ValueError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "run":
            return _run_command(argv[1:])
        # `train` and `decode` (issue 6) will be dispatched here like `run`.
        parser = _top_parser()
        parser.parse_args(argv)  # --help, --version and a bad command exit here
        parser.error("choose a command: `tunekit run` runs the backdoor experiment, --help shows more")
    except SystemExit as exit_:  # argparse's --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:  # before a run started (a run says what it keeps)
        print("\ntunekit: interrupted", file=sys.stderr)
        return INTERRUPTED


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunekit",
        description="Fine-tuning objectives and tricks for transformer models, and experiments that show "
        "what they do.",
        epilog="Start with `tunekit run` (the backdoor experiment: DeCE against poisoned fine-tuning data) "
        "or `tunekit run --list`.",
    )
    parser.add_argument("--version", action="version", version=f"tunekit {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    commands.add_parser(
        "run",
        add_help=False,  # `tunekit run` has its own two-stage parser
        help=f"run an experiment (default: {DEFAULT_EXPERIMENT}); `tunekit run --list` lists them, "
        "`tunekit run NAME --help` shows an experiment's options",
    )
    return parser


def _run_parser(name: str | None) -> argparse.ArgumentParser:
    """The parser of `tunekit run`, with the config options of experiment ``name`` if it is registered."""
    from .experiments.config import add_config_arguments
    from .experiments.runner import EXPERIMENTS, UNAVAILABLE, default_cache_dir

    experiment = EXPERIMENTS.get(name) if name else None
    listing = "\n".join(f"  {n:<12} {e.summary}" for n, e in sorted(EXPERIMENTS.items())) or "  (none)"
    if UNAVAILABLE:
        listing += "\ncould not be loaded:\n" + "\n".join(f"  {m}: {why}" for m, why in UNAVAILABLE.items())
    parser = argparse.ArgumentParser(
        prog="tunekit run",
        usage="tunekit run [NAME] [options] [experiment options]",
        description=(
            f"Run the experiment {name}: {experiment.summary}"
            if experiment
            else "Run an experiment: its arms x seeds, then write a report with a one-line verdict."
        ),
        epilog=f"experiments:\n{listing}\n\nResults are saved as each arm x seed finishes; running the same "
        "command again resumes where it stopped. Set TUNEKIT_DEBUG=1 to see the traceback behind an error.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name", nargs="?", metavar="NAME", help=f"the experiment, first (default: {DEFAULT_EXPERIMENT})"
    )
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="read options from a YAML mapping")
    parser.add_argument("--out", type=Path, metavar="DIR", help="output folder (default: runs/NAME)")
    parser.add_argument(
        "--cache",
        type=Path,
        metavar="DIR",
        help=f"cache of work shared between runs (default: {default_cache_dir()}; "
        "$TUNEKIT_CACHE or $XDG_CACHE_HOME change it)",
    )
    parser.add_argument("--quick", action="store_true", help="the experiment's tiny setting (under a minute)")
    parser.add_argument("--fresh", action="store_true", help="discard an earlier run in the output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    if experiment is not None:
        add_config_arguments(parser, experiment.config_class, title=f"options of {name}")
    return parser


def _run_command(args: list[str]) -> int:
    from .experiments.config import config_from_sources, config_overrides
    from .experiments.runner import (
        _IMPORT_TRACEBACKS,
        ArmError,
        Progress,
        RunFolderError,
        get_experiment,
        load_experiments,
        run_experiment,
    )

    first = args[0] if args and not args[0].startswith("-") else None
    listing = any(arg in ("--list", "-h", "--help") for arg in args)
    load_experiments(None if listing else first or DEFAULT_EXPERIMENT)  # all of them only to list them
    parser = _run_parser(first or DEFAULT_EXPERIMENT)
    namespace, _ = parser.parse_known_args(args)
    if namespace.list:
        _print_list()
        return 0
    name = namespace.name or DEFAULT_EXPERIMENT
    try:
        experiment = get_experiment(name)
    except ValueError as error:
        if _debug():
            for text in _IMPORT_TRACEBACKS.values():
                print(text, file=sys.stderr)
        hint = "" if namespace.name else f" (`tunekit run` without a name runs {DEFAULT_EXPERIMENT})"
        print(f"tunekit: error: {error}{hint}", file=sys.stderr)
        return USAGE_ERROR
    if name != (first or DEFAULT_EXPERIMENT):  # the name came after an option: parse again with its options
        parser = _run_parser(name)
    namespace = parser.parse_args(args)  # strict: unknown options are usage errors (exit 2)

    try:
        config = config_from_sources(
            experiment.config_class,
            yaml_path=namespace.config,
            overrides=config_overrides(namespace, experiment.config_class),
            quick=namespace.quick,
        )
    except _USER_ERRORS as error:
        return _user_error(str(error))
    except ImportError as error:
        return _user_error(str(error), status=1)

    out_dir = namespace.out if namespace.out is not None else Path("runs") / name
    try:
        summary = run_experiment(
            name,
            out_dir=out_dir,
            config=config,
            cache_dir=namespace.cache,
            resume=not namespace.fresh,
            progress=Progress(bars=not namespace.no_progress),
        )
    except KeyboardInterrupt:
        print(f"\ntunekit: interrupted; {_kept(out_dir)}", file=sys.stderr)
        return INTERRUPTED
    except RunFolderError as error:
        return _user_error(str(error))
    except ArmError as error:
        user = isinstance(error.__cause__, _USER_ERRORS)
        if not user and not _debug():  # likely a bug: show where (with TUNEKIT_DEBUG, _user_error does)
            traceback.print_exception(error.__cause__)
        return _user_error(str(error), status=USAGE_ERROR if user else 1, with_hint=user)
    except _USER_ERRORS as error:
        return _user_error(f"{error}{_kept_note(out_dir)}", with_hint=True)
    except ImportError as error:
        return _user_error(f"{error}{_kept_note(out_dir)}", status=1, with_hint=True)
    except Exception as error:
        traceback.print_exc()
        return _user_error(f"{type(error).__name__}: {error}{_kept_note(out_dir)}", status=1)
    print(f"verdict: {summary.verdict}")
    print(f"report: {summary.report_dir / 'report.md'}")
    return 0


def _print_list() -> None:
    from .experiments.runner import EXPERIMENTS, UNAVAILABLE

    print("experiments (`tunekit run NAME`, `tunekit run NAME --help` for its options):")
    if not EXPERIMENTS:
        print("  (none)")
    width = max((len(n) for n in EXPERIMENTS), default=0)
    for name, experiment in sorted(EXPERIMENTS.items()):
        default = " (default)" if name == DEFAULT_EXPERIMENT else ""
        print(f"  {name:<{width}}  {experiment.summary}{default}")
    if UNAVAILABLE:
        print("could not be loaded:")
        for module, reason in UNAVAILABLE.items():
            print(f"  {module}: {reason}")


def _kept(out_dir: Path) -> str:
    saved = len(list((out_dir / "arms").glob("*/seed-*.json")))
    if not saved:
        return "no arm x seed had finished"
    return (
        f"{saved} finished arm x seed result{'s are' if saved != 1 else ' is'} kept in {out_dir / 'arms'}; "
        "the same command resumes from there"
    )


def _kept_note(out_dir: Path) -> str:
    """`` (... kept ...)`` when finished results are on disk, else nothing."""
    return f" ({_kept(out_dir)})" if list((out_dir / "arms").glob("*/seed-*.json")) else ""


def _debug() -> bool:
    return os.environ.get("TUNEKIT_DEBUG", "") not in ("", "0")


def _user_error(message: str, *, status: int = USAGE_ERROR, with_hint: bool = False) -> int:
    """Print ``tunekit: error: message`` (called in an ``except`` block) and return ``status``."""
    if _debug():
        traceback.print_exc()
    elif with_hint:
        message += " [TUNEKIT_DEBUG=1 shows the traceback]"
    print(f"tunekit: error: {message}", file=sys.stderr)
    return status
