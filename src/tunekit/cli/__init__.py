"""The ``tunekit`` command line (``python -m tunekit`` too).

    tunekit run [NAME] ...      run an experiment (`tunekit.cli.run`)
    tunekit train ...           fine-tune a model on your own data (`tunekit.cli.train`)
    tunekit decode MODEL_DIR ... show how a saved generation model decodes (`tunekit.cli.decode`)

Each command is a module of this package with ``HELP`` (one line for ``tunekit --help``) and
``command(args) -> int``, imported only when it runs, so ``tunekit --help`` stays fast. User errors (a bad
option value, an unknown or malformed file) print ``tunekit: error: ...`` and exit with status 2; an
interruption (Ctrl-C) exits with 130 after saying what is kept. Set ``TUNEKIT_TRACEBACK=1`` to see the
traceback behind an error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from .. import __version__
from ._common import INTERRUPTED

__all__ = ["COMMANDS", "main"]

COMMANDS = {
    "run": "tunekit.cli.run",
    "train": "tunekit.cli.train",
    "decode": "tunekit.cli.decode",
}
"""Command -> the module that implements it."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in COMMANDS:
            return importlib.import_module(COMMANDS[argv[0]]).command(argv[1:])
        parser = _top_parser()
        parser.parse_args(argv)  # --help, --version and a bad command exit here
        parser.error("choose a command: `tunekit run` runs the backdoor experiment, --help shows more")
    except SystemExit as exit_:  # argparse's --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except KeyboardInterrupt:  # before a command started its work (a run says what it keeps)
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
    for name, module in COMMANDS.items():
        # each command parses its own arguments; the module is imported for its one-line help only
        commands.add_parser(name, add_help=False, help=importlib.import_module(module).HELP)
    return parser
