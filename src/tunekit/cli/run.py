"""``tunekit run [NAME]``: run a registered experiment (see `tunekit.experiments`).

    tunekit run [NAME] [--config FILE.yaml] [--out DIR] [--cache DIR] [--quick] [--fresh] [--no-progress]
                [--<field> VALUE ...]
    tunekit run --list
    tunekit run NAME --help

``tunekit run`` without a name runs ``backdoor``. The experiment's config fields become options, so the
parser is built in two stages: the name first (it comes right after ``run``), then that experiment's
options.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from ._common import INTERRUPTED, USAGE_ERROR, USER_ERRORS, show_traceback, user_error

DEFAULT_EXPERIMENT = "backdoor"  # what `tunekit run` runs without a name
HELP = (
    f"run an experiment (default: {DEFAULT_EXPERIMENT}); `tunekit run --list` lists them, "
    "`tunekit run NAME --help` shows an experiment's options"
)


def _run_parser(name: str | None) -> argparse.ArgumentParser:
    """The parser of `tunekit run`, with the config options of experiment ``name`` if it is registered."""
    from ..experiments.runner import EXPERIMENTS, UNAVAILABLE, default_cache_dir
    from ..runs.config import add_config_arguments

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
        "command again resumes where it stopped. Set TUNEKIT_TRACEBACK=1 to see the traceback behind an "
        "error.",
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


def command(args: list[str]) -> int:
    """Run ``tunekit run ARGS``; return the exit status."""
    from ..experiments.runner import (
        IMPORT_TRACEBACKS,
        ArmError,
        Progress,
        RunFolderError,
        get_experiment,
        load_experiments,
        run_experiment,
    )
    from ..runs.config import config_from_sources, config_overrides

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
        if show_traceback():
            for text in IMPORT_TRACEBACKS.values():
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
    except USER_ERRORS as error:
        return user_error(str(error))
    except ImportError as error:
        return user_error(str(error), status=1)

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
        return user_error(str(error))
    except ArmError as error:
        user = isinstance(error.__cause__, USER_ERRORS)
        if not user and not show_traceback():  # likely a bug: show where (user_error does with the variable)
            traceback.print_exception(error.__cause__)
        return user_error(str(error), status=USAGE_ERROR if user else 1, with_hint=user)
    except USER_ERRORS as error:
        return user_error(f"{error}{_kept_note(out_dir)}", with_hint=True)
    except ImportError as error:
        return user_error(f"{error}{_kept_note(out_dir)}", status=1, with_hint=True)
    except Exception as error:
        traceback.print_exc()
        return user_error(f"{type(error).__name__}: {error}{_kept_note(out_dir)}", status=1)
    print(f"verdict: {summary.verdict}")
    print(f"report: {summary.report_dir / 'report.md'}")
    return 0


def _print_list() -> None:
    from ..experiments.runner import EXPERIMENTS, UNAVAILABLE

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
