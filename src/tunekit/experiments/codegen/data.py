"""The corpus of the code-generation experiments: (description, code) pairs and their splits.

A pair is a function's first docstring line and the function's source without its docstring, parsed with
`ast` from a tree of ``.py`` files (by default the running Python's standard library), or read from the
user's own JSONL file. `split_by_module` cuts a corpus into a pre-training and a fine-tuning half that share
no module, `train_test_split` holds pairs out.

Standard library only: nothing here needs torch, transformers or a tokenizer.

>>> pairs = extract_pairs(stdlib_root() / "json" / "__init__.py")
>>> all(pair.code.lstrip().startswith("def ") for pair in pairs)
True
"""

from __future__ import annotations

import ast
import fnmatch
import json
import logging
import os
import random
import re
import sysconfig
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..._checks import check_fraction

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXCLUDE",
    "Pair",
    "check_corpus_root",
    "check_halves",
    "corpus_pairs",
    "extract_pairs",
    "load_jsonl_pairs",
    "split_by_module",
    "stdlib_root",
    "train_test_split",
]

# Path components (directories or file names, fnmatch patterns) that `corpus_pairs` skips: the standard
# library's test suites, IDLE, lib2to3 and its fixers, installed packages, demos, caches, the bundled pip
# wheel, frozen-module samples and build configuration, and hidden directories (.git, .venv, .tox).
DEFAULT_EXCLUDE = (
    "test",
    "tests",
    "test_*.py",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "turtledemo",
    "__pycache__",
    "ensurepip",
    "__phello__",
    "config-*",
    ".*",
)

_MAX_NL_CHARS = 200
_MIN_NL_WORDS = 3
_NEWLINES = re.compile(r"\r\n?")
# a description's first word: a plain word, maybe with a closing ':' ',' '.'; not a signature such as
# "send_fds(sock, buffers) -> integer", a dotted name, an identifier with '_' or a doctest
_PROSE_WORD = re.compile(r"[^\W\d_][^\W_]*(?:['-][^\W_]+)*[:,.]?")


@dataclass(frozen=True)
class Pair:
    """A natural-language description and the code it describes; `source` is the module or file."""

    nl: str
    code: str
    source: str = ""


# ----------------------------------------------------------------------------------------------------------
# Pairs from Python source


def stdlib_root() -> Path:
    """The running Python's standard-library directory (``sysconfig``'s ``stdlib`` path)."""
    return Path(sysconfig.get_paths()["stdlib"])


def extract_pairs(path: Path, source: str = "", max_code_chars: int = 600) -> list[Pair]:
    """(first docstring line, source without the docstring) for every function and method in one file.

    Functions nested in functions, classes and ``if`` blocks count, ``async def`` too, in source order. The
    description is the docstring's first non-empty line, stripped, runs of spaces made one; it is skipped
    unless it reads as prose: its first word is a plain word (not ``send_fds(sock,``, ``os.path``, ``>>>``),
    and it has at least 3 words with letters (not ``a / b``) and at most 200 characters. The code runs from
    the ``def`` line (decorators excluded) to the function's last line, without its docstring and the blank
    lines right after it, dedented by the ``def`` line's indentation; functions whose code is longer than
    `max_code_chars`, whose body is nothing but the docstring (or ``pass`` / ``...``), or whose docstring
    shares a line with other code are skipped. Every kept code parses on its own.

    Files that are not UTF-8 (a BOM is allowed) or do not parse are skipped (an empty list, logged at debug
    level). `source` names the pairs' origin (default: the path).
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        logger.debug("skipping %s: %s", path, error)
        return []
    if "def " not in text:
        return []
    text = _NEWLINES.sub("\n", text)
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences in old code
            warnings.simplefilter("ignore")
            tree = ast.parse(text, filename=str(path))
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        logger.debug("skipping %s: %s", path, error)
        return []
    lines = text.split("\n")
    source = source or str(path)
    pairs = []
    for node in _functions(tree.body):
        nl = _description(node)
        if nl is None:
            continue
        code = _code_without_docstring(node, lines)
        if code is not None and len(code) <= max_code_chars and _parses(code):
            pairs.append(Pair(nl=nl, code=code, source=source))
    return pairs


def _functions(statements: list[ast.stmt]) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """The function definitions among `statements` and in their blocks, recursively, in source order.

    Only statement blocks are searched (a def cannot sit inside an expression): a quarter of the time
    `extract_pairs` took with `ast.walk` over every node.
    """
    for statement in statements:
        if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield statement
        for name in ("body", "orelse", "finalbody", "handlers", "cases"):
            block = getattr(statement, name, None)
            if isinstance(block, list):
                yield from _functions(block)


def _description(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The docstring's first non-empty line when it reads as prose, else None."""
    docstring = ast.get_docstring(node, clean=True)
    if not docstring:
        return None
    first = next((line.strip() for line in docstring.splitlines() if line.strip()), "")
    first = " ".join(first.split())  # tabs and runs of spaces inside the line
    words = first.split()
    with_letters = sum(any(char.isalpha() for char in word) for word in words)
    if len(first) > _MAX_NL_CHARS or with_letters < _MIN_NL_WORDS or not _PROSE_WORD.fullmatch(words[0]):
        return None
    return first


def _code_without_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """The function's lines without its docstring, dedented; None if nothing but the docstring is left."""
    doc, rest = node.body[0], node.body[1:]
    if not rest or all(_is_placeholder(statement) for statement in rest):
        return None
    # the docstring must own its lines: nothing before it on its first line, nothing but a comment after it
    before = lines[doc.lineno - 1].encode()[: doc.col_offset]
    after = lines[doc.end_lineno - 1].encode()[doc.end_col_offset :].strip()
    if before.strip() or (after and not after.startswith(b"#")) or doc.lineno == node.lineno:
        return None
    first_kept = doc.end_lineno  # 0-based index of the line after the docstring
    while first_kept < rest[0].lineno - 1 and not lines[first_kept].strip():
        first_kept += 1  # blank lines between the docstring and the code
    kept = lines[node.lineno - 1 : doc.lineno - 1] + lines[first_kept : node.end_lineno]
    indent = lines[node.lineno - 1][: node.col_offset]
    if indent:  # lines inside a less indented multi-line string keep their text
        kept = [line[len(indent) :] if line.startswith(indent) else line for line in kept]
    return "\n".join(line.rstrip() for line in kept)


def _is_placeholder(statement: ast.stmt) -> bool:
    return isinstance(statement, ast.Pass) or (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and statement.value.value is Ellipsis
    )


def _parses(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def corpus_pairs(
    root: Path, *, exclude: tuple[str, ...] = DEFAULT_EXCLUDE, max_code_chars: int = 600
) -> dict[str, list[Pair]]:
    """`extract_pairs` of every ``.py`` file under `root`, keyed by its path relative to `root` (posix).

    Files are read in the sorted order of those paths, so the result is deterministic for a given tree. A
    directory or file whose name matches a pattern of `exclude` (``fnmatch``) is skipped with everything under
    it; the default leaves out the standard library's test suites, IDLE, lib2to3, installed packages and the
    like (see `DEFAULT_EXCLUDE`). A function whose code already occurred in an earlier file (or earlier in the
    same file) is dropped, so no code appears twice; modules left without pairs are omitted. Symbolic links to
    directories are not followed.

    Raises ValueError when `root` is not a directory, holds no ``.py`` file (`check_corpus_root`) or yields no
    pair, saying what a usable function looks like.
    """
    root = Path(root)
    check_corpus_root(root, exclude=exclude)
    modules = [path.relative_to(root).as_posix() for path in _module_paths(root, exclude)]
    by_module: dict[str, list[Pair]] = {}
    seen: set[str] = set()
    for module in sorted(modules):
        pairs = []
        for pair in extract_pairs(root / module, source=module, max_code_chars=max_code_chars):
            if pair.code not in seen:
                seen.add(pair.code)
                pairs.append(pair)
        if pairs:
            by_module[module] = pairs
    if not by_module:
        raise ValueError(
            f"corpus {root} yielded no usable (docstring, code) pairs from its {len(modules)} .py file(s): "
            "expected functions whose docstring starts with a sentence of 3 or more words and that have "
            f"code besides it, at most {max_code_chars} characters"
        )
    return by_module


def check_corpus_root(root: Path, *, exclude: tuple[str, ...] = DEFAULT_EXCLUDE) -> None:
    """ValueError unless `root` is a directory holding a ``.py`` file that `corpus_pairs` reads (not under an
    `exclude`d name); it stops at the first one, so a config's validation can afford it."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"corpus {str(root)!r} is not a directory")
    if next(_module_paths(root, exclude), None) is None:
        skipped = " (test folders and files, __pycache__ and hidden folders are skipped)" if exclude else ""
        raise ValueError(f"corpus {root} has no .py files{skipped}: expected a tree of Python sources")


def _module_paths(root: Path, exclude: tuple[str, ...]) -> Iterator[Path]:
    """The ``.py`` files under `root` whose path has no `exclude`d name, in walk order."""

    def excluded(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude)

    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not excluded(name)]
        for filename in filenames:
            if filename.endswith(".py") and not excluded(filename):
                yield Path(directory, filename)


def load_jsonl_pairs(path: Path, nl_field: str = "nl", code_field: str = "code") -> list[Pair]:
    """The user's own pairs: one JSON object per line with string fields `nl_field` and `code_field`.

    Blank lines are skipped. Raises ValueError naming the file and the line for invalid JSON or UTF-8, a line
    that is not an object, a missing, non-string or blank field, and for a file without pairs;
    FileNotFoundError naming the path when there is no such file. The pairs' `source` is the file name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {str(path)!r}")
    pairs = []
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            where = f"{path}, line {number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as error:
                raise ValueError(f"{where}: not UTF-8 ({error.reason})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON ({error.msg}, column {error.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            for name in (nl_field, code_field):
                if name not in record:
                    raise ValueError(f"{where}: missing field {name!r} (fields: {sorted(record)})")
                value = record[name]
                if not isinstance(value, str):
                    raise ValueError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
                if not value.strip():
                    raise ValueError(f"{where}: field {name!r} is empty")
            pairs.append(Pair(nl=record[nl_field], code=record[code_field], source=path.name))
    if not pairs:
        raise ValueError(f"{path}: no pairs (the file is empty)")
    return pairs


# ----------------------------------------------------------------------------------------------------------
# Splits


def split_by_module(
    pairs_by_module: Mapping[str, Sequence[Pair]], *, pretrain_fraction: float, seed: int
) -> tuple[list[Pair], list[Pair]]:
    """(pre-training pairs, fine-tuning pairs) from whole modules: no module is in both.

    The modules (sorted by name, then shuffled with `seed`) go to pre-training in that order up to the prefix
    whose pair count is closest to `pretrain_fraction` of all pairs; the rest are for fine-tuning, less any
    pair whose code also occurs in the pre-training part, so the two parts share no identical code either.
    """
    check_fraction("pretrain_fraction", pretrain_fraction, zero_ok=True, one_ok=True)
    modules = sorted(pairs_by_module)
    random.Random(seed).shuffle(modules)
    target = pretrain_fraction * sum(len(pairs_by_module[m]) for m in modules)
    count, best = 0, (target, 0)  # best: (distance to the target, number of modules)
    for size, module in enumerate(modules, start=1):
        count += len(pairs_by_module[module])
        best = min(best, (abs(count - target), size))
        if count >= target:
            break
    cut = best[1]
    pretrain = [pair for module in modules[:cut] for pair in pairs_by_module[module]]
    codes = {pair.code for pair in pretrain}
    finetune = [pair for module in modules[cut:] for pair in pairs_by_module[module]]
    finetune = [pair for pair in finetune if pair.code not in codes]
    return pretrain, finetune


def check_halves(
    pairs_by_module: Mapping[str, Sequence[Pair]],
    pretrain: Sequence[Pair],
    finetune: Sequence[Pair] | None,
    *,
    test_size: int,
    corpus: Path,
    pretraining: bool = True,
) -> None:
    """ValueError in one line when `split_by_module`'s halves of a corpus are too small: no pre-training pair
    (with `pretraining`: a corpus of one module), or not more fine-tuning pairs than `test_size` (unless
    `finetune` is None: the fine-tuning pairs come from elsewhere)."""
    total = sum(len(pairs) for pairs in pairs_by_module.values())
    found = f"corpus {corpus} yielded {total} (docstring, code) pairs in {len(pairs_by_module)} module(s)"
    if pretraining and not pretrain:
        raise ValueError(
            f"{found}, none for pre-training: each half takes whole modules; give a corpus with more modules"
        )
    if finetune is not None and len(finetune) <= test_size:
        raise ValueError(
            f"{found}, {len(finetune)} for fine-tuning (the modules not pre-trained on): too few to hold out "
            f"--test-size {test_size} pairs and train on the rest; lower --test-size or give a larger corpus"
        )


def train_test_split(pairs: Sequence[Pair], *, test_size: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, test): `test_size` pairs drawn with `seed`, and the rest in their original order.

    A training pair with the same code as a test pair is dropped, so the test set is truly held out.
    """
    if isinstance(test_size, bool) or not isinstance(test_size, int) or not 1 <= test_size < len(pairs):
        raise ValueError(
            f"test_size must be an integer in [1, {len(pairs) - 1}] for {len(pairs)} pairs, got {test_size!r}"
        )
    rows = sorted(random.Random(seed).sample(range(len(pairs)), test_size))
    test = [pairs[i] for i in rows]
    test_rows, test_codes = set(rows), {pair.code for pair in test}
    train = [pair for i, pair in enumerate(pairs) if i not in test_rows and pair.code not in test_codes]
    return train, test
