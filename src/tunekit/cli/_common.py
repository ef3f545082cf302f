"""What every ``tunekit`` command shares: exit statuses and how a user error is printed."""

from __future__ import annotations

import os
import sys
import traceback

USAGE_ERROR, INTERRUPTED = 2, 130
USER_ERRORS = (ValueError, FileNotFoundError)  # a bad option, file or value: a message, not a traceback


def show_traceback() -> bool:
    """Whether TUNEKIT_TRACEBACK asks for the traceback behind an error."""
    return os.environ.get("TUNEKIT_TRACEBACK", "") not in ("", "0")


def user_error(message: str, *, status: int = USAGE_ERROR, with_hint: bool = False) -> int:
    """Print ``tunekit: error: message`` (called in an ``except`` block) and return ``status``."""
    if show_traceback():
        traceback.print_exc()
    elif with_hint:
        message += " [TUNEKIT_TRACEBACK=1 shows the traceback]"
    print(f"tunekit: error: {message}", file=sys.stderr)
    return status
