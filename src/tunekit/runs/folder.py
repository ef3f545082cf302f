"""`RunFolder`: the output folder of a ``tunekit train`` or ``tunekit run`` run, and the promises both keep.

    <out>/tunekit-run.json   the marker: whose run this is and the names tunekit wrote here
    <out>/.tunekit.lock      locked by the process running there; it holds that process's PID
    <out>/config.json        the run's identity (options, data fingerprints) that a rerun must share

A folder is taken in two steps, so that nothing is written or deleted before the caller has checked every
option and input::

    folder = RunFolder(out_dir, kind="train", outputs=("checkpoints", "model"), compare=diff)
    folder.check(identity, fresh=fresh)          # read-only: refuses what this run may not take
    ...                                          # read the data, load the model: every check that can fail
    with folder.claim(identity, fresh=fresh):    # lock, check again, discard the earlier run, record this one
        ...                                      # folder.record("loss.png") for names known only later

A folder tunekit did not make (a saved model, a folder of the user's files) is never written into and never
emptied; ``fresh`` discards only the names the marker says tunekit wrote, leaving the user's own files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .. import __version__
from .config import format_value
from .report import write_json

__all__ = [
    "IDENTITY_FILE",
    "LOCK_FILE",
    "MARKER_FILE",
    "RunFolder",
    "RunFolderError",
    "describe_os_error",
    "free_space",
]

MARKER_FILE, LOCK_FILE, IDENTITY_FILE = "tunekit-run.json", ".tunekit.lock", "config.json"
_BOOKKEEPING = (MARKER_FILE, LOCK_FILE)
_MODEL_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "tokenizer.json")

Changes = Mapping[str, tuple[Any, Any]]


class RunFolderError(ValueError):
    """The folder cannot take this run (another command's or other options' run, files tunekit did not
    write, another process running there, a place that cannot be written). Nothing was changed there."""


class RunFolder:
    """The output folder of one run of ``tunekit <kind>``.

    Args:
        path: the folder (created by `claim` when missing).
        kind: the command whose run this is, as the user types it after ``tunekit``: ``"train"``,
            ``"run backdoor"``; a folder holding another kind's run is refused.
        outputs: the names this kind of run writes at the folder's top level (all of them are tunekit's and
            are discarded by ``fresh``); names decided during the run are added with `record`.
        compare: ``(saved identity, new identity) -> {name: (saved value, new value)}``, empty when a rerun
            may continue the saved run.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        kind: str,
        outputs: Iterable[str],
        compare: Callable[[Mapping[str, Any], Mapping[str, Any]], Changes],
    ) -> None:
        self.path = Path(path)
        self.kind = kind
        self.outputs = (IDENTITY_FILE, *outputs)
        self.compare = compare
        self._lock_fd: int | None = None

    # ---- read-only ----

    def check(self, identity: Mapping[str, Any], *, fresh: bool = False) -> None:
        """Raise `RunFolderError` unless this run may take the folder: it does not exist yet (and can be
        created), is empty, or holds a run of the same kind that this one continues (the same identity) or,
        with ``fresh``, replaces. Reads only."""
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunFolderError(f"--out {path} is a file, not a folder; choose a folder with --out DIR")
        if not path.exists():
            _check_creatable(path)
            return
        marker = self._marker()
        kind = marker["kind"] if marker is not None else self._unmarked_kind()
        if kind is not None and kind != self.kind:
            raise RunFolderError(
                f"{path} holds a run of `tunekit {kind}`, not of `tunekit {self.kind}`; "
                "choose another folder with --out DIR"
            )
        if fresh:
            return
        saved = self._saved_identity()
        if saved is None:
            present = [name for name in self.outputs[1:] if (path / name).exists()]
            if present:
                raise RunFolderError(
                    f"{path} holds {', '.join(present)} of a run whose options were not recorded; "
                    "start over with --fresh, or choose another folder with --out DIR"
                )
            return
        changes = self.compare(saved, identity)
        if changes:
            shown = "; ".join(
                f"{name}: {_show(old)} there, {_show(new)} now" for name, (old, new) in changes.items()
            )
            raise RunFolderError(
                f"{path} holds a `tunekit {self.kind}` run with other options ({shown}); continuing it would "
                "mix or replace its results: discard it with --fresh, or choose another folder with --out DIR"
            )

    def has_run(self) -> bool:
        """Whether the folder holds a recorded run (its identity file)."""
        return (self.path / IDENTITY_FILE).is_file()

    # ---- taking the folder ----

    @contextlib.contextmanager
    def claim(self, identity: Mapping[str, Any], *, fresh: bool = False) -> Iterator[list[str]]:
        """Lock the folder for this process, check it again under the lock, discard the earlier run's
        outputs when ``fresh``, and record this run (marker and identity); the lock is released on exit.

        Yields the names discarded (empty unless ``fresh`` found an earlier run). Raises `RunFolderError`
        when another process holds the folder or it cannot be written (one line: the path and the cause).
        """
        self.check(identity, fresh=fresh)  # before the lock file: a folder that is not ours gets nothing
        with write_errors(self.path):
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock()
        try:
            with write_errors(self.path):
                self.check(identity, fresh=fresh)  # again: another process may have written here meanwhile
                marker = self._marker() or {
                    "written": [name for name in self.outputs if (self.path / name).exists()]
                }
                discarded = []
                if fresh:
                    # the identity first: a folder left half-discarded is never taken for the earlier run
                    for name in dict.fromkeys([IDENTITY_FILE, *marker.get("written", [])]):
                        if _remove(self.path / name):
                            discarded.append(name)
                    marker["written"] = []
                self._write_marker(sorted({*marker.get("written", []), *self.outputs}))
                write_json(self.path / IDENTITY_FILE, identity)
            with write_errors(self.path):  # and the run's own writes
                yield [name for name in discarded if name != IDENTITY_FILE]
        finally:
            self._unlock()

    def record(self, *names: str) -> None:
        """Add top-level names this run wrote (a plot named after a metric) to those ``fresh`` may discard."""
        marker = self._marker() or {}
        written = set(marker.get("written", []))
        if not written.issuperset(names):
            self._write_marker(sorted(written.union(names)))

    # ---- helpers ----

    def _marker(self) -> dict | None:
        path = self.path / MARKER_FILE
        if not path.is_file():
            return None
        try:
            marker = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(marker, dict) or not isinstance(marker.get("kind"), str):
                raise ValueError("not a tunekit marker")
        except (OSError, ValueError) as error:
            raise RunFolderError(
                f"{path} is unreadable ({error}); delete it if {self.path} is a tunekit run folder, "
                "or choose another folder with --out DIR"
            ) from None
        return marker

    def _write_marker(self, written: list[str]) -> None:
        write_json(
            self.path / MARKER_FILE, {"kind": self.kind, "tunekit_version": __version__, "written": written}
        )

    def _saved_identity(self) -> Mapping[str, Any] | None:
        path = self.path / IDENTITY_FILE
        if not path.is_file():
            return None
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            raise RunFolderError(
                f"{path} is unreadable ({error}); start over with --fresh, or choose another folder "
                "with --out DIR"
            ) from None
        return saved

    def _unmarked_kind(self) -> str | None:
        """The kind of run in a folder without a marker: None when it is empty, the kind of a run written
        before markers existed (adopted); a folder of anything else is refused, whatever ``fresh`` says."""
        entries = sorted(p.name for p in self.path.iterdir() if p.name not in _BOOKKEEPING)
        if not entries:
            return None
        try:
            saved = self._saved_identity()
        except RunFolderError:
            saved = None
        kind = _legacy_kind(saved) if saved is not None else None
        if kind is not None:
            return kind
        what = (
            "a saved model"
            if any(name in entries for name in _MODEL_FILES)
            else "files tunekit did not write"
        )
        shown = ", ".join(entries[:5]) + (f" and {len(entries) - 5} more" if len(entries) > 5 else "")
        raise RunFolderError(
            f"{self.path} holds {what} ({shown}), not a tunekit run; tunekit never writes into or empties "
            "such a folder: choose a new or empty folder with --out DIR"
        )

    def _lock(self) -> None:
        path = self.path / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _try_lock(fd):
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderError(
                f"{self.path} is in use by another tunekit process (PID {holder}); wait for it to finish, "
                "or choose another folder with --out DIR"
            )
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None


_FULL = (errno.ENOSPC, errno.EDQUOT)
_REFUSED = (errno.EACCES, errno.EPERM, errno.EROFS)


@contextlib.contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn a full disk or a refused write under ``path`` into a `RunFolderError` of one line (the path and
    the cause); other errors pass unchanged."""
    try:
        yield
    except OSError as error:
        if error.errno not in (*_FULL, *_REFUSED):
            raise
        raise RunFolderError(describe_os_error(error, path)) from error


def describe_os_error(error: OSError, path: Path) -> str:
    """One line for a failed write: the path and the cause (a full disk says how much space is left)."""
    where = error.filename or path
    cause = os.strerror(error.errno) if error.errno else str(error)
    line = f"cannot write {where}: {cause}"
    if error.errno in _FULL:
        line += f" ({free_space(Path(where))} free there); free some space and run the same command again"
    elif error.errno in _REFUSED:
        line += "; choose a folder you can write with --out DIR"
    return line


def free_space(path: Path) -> str:
    """The space left on the disk that holds ``path`` (or its nearest existing parent), as ``"12 MiB"``."""
    for folder in (path, *path.parents):
        with contextlib.suppress(OSError):
            free = os.statvfs(folder)
            return f"{free.f_bavail * free.f_frsize / 2**20:.0f} MiB"
    return "unknown"


def _try_lock(fd: int) -> bool:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _check_creatable(path: Path) -> None:
    """The nearest existing folder above ``path`` must be a folder this process may write."""
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise RunFolderError(f"cannot create --out {path}: {parent} is a file")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise RunFolderError(
                    f"cannot create --out {path}: {parent} is not writable; choose a folder you can write"
                )
            return


def _legacy_kind(identity: Mapping[str, Any]) -> str | None:
    """The kind of a run written before markers existed, from its config.json."""
    if isinstance(identity.get("experiment"), str) and "config" in identity:
        return f"run {identity['experiment']}"
    if {"train_file", "task", "objective"} <= identity.keys():
        return "train"
    return None


def _remove(path: Path) -> bool:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    else:
        return False
    return True


def _show(value: Any) -> str:
    return value if value == "(absent)" else format_value(value)
