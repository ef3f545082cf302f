"""The user's data for ``tunekit train``: JSON Lines, CSV / TSV or a local `datasets` folder, read into
`Example`s with errors that name the file and the line.

One record per example; the field names are configurable (`TrainConfig.text_field` and friends):

- sequence classification: ``{"text": "...", "label": "positive"}`` (the labels of a file are all strings or
  all integers, which keep their numeric order);
  multi-label (``problem_type="multi_label_classification"``): ``{"text": "...", "label": ["sports",
  "politics"]}``, or the labels joined by `TrainConfig.label_separator` (``"sports|politics"``, the only
  form a CSV cell holds); an empty list or cell is an example with none of the labels; regression:
  ``{"text": "...", "label": 0.7}`` (a number, or a text that is one in CSV);
- token classification: ``{"text": ["Ada", "Lovelace", "wrote"], "label": ["B-PER", "I-PER", "O"]}``, or
  both as space-separated strings (the only form a CSV cell holds); one tag per word;
- generation: ``{"text": "prompt", "target": "output"}``; for a causal LM without a target field the whole
  text is trained on.

A `datasets` folder (``Dataset.save_to_disk``) needs the ``datasets`` package, imported only then.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import TrainConfig

__all__ = [
    "Example",
    "check_labels",
    "label_set",
    "load_examples",
    "read_records",
    "split_off",
]

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_INTEGER = re.compile(r"[+-]?[0-9]+")
CSV_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@dataclass(frozen=True)
class Example:
    """One example: `text` (a string, or the words of a token-classification example), `label` (a class, the
    classes of a multi-label example or one tag per word, both tuples; a float for regression; None for
    generation), `target` (the output text of generation, or None) and `where` it came from
    ("data.jsonl, line 3")."""

    text: str | tuple[str, ...]
    label: str | tuple[str, ...] | float | None
    target: str | None
    where: str


def read_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(where, record)`` for every record of a data file or `datasets` folder, in order; ``where`` names
    the file and line ("data.csv, line 4") or the row of a dataset.

    Raises FileNotFoundError for a missing path and ValueError naming the file and line for a file that is
    not what its extension says (invalid JSON in a .jsonl, JSON in a .csv, bytes that are not UTF-8), a CSV
    row with more values than columns, and an extension that is none of .jsonl / .json / .ndjson / .csv /
    .tsv.
    """
    path = Path(path)
    if path.is_dir():
        yield from _dataset_records(path)
        return
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {str(path)!r}")
    suffix = path.suffix.lower()
    if suffix in JSON_SUFFIXES:
        yield from _json_records(path)
    elif suffix in CSV_SUFFIXES:
        yield from _csv_records(path, CSV_SUFFIXES[suffix])
    else:
        raise ValueError(
            f"{path}: unknown data format {suffix or '(no extension)'!r}; use .jsonl (one JSON object per "
            "line), .csv, .tsv or a `datasets` folder saved with save_to_disk"
        )


def load_examples(path: Path, config: TrainConfig) -> list[Example]:
    """The examples of one data file for `config.task`, with its field names.

    Raises ValueError naming the file and the line for a missing field, an empty text, target or label, a
    value of the wrong kind, class labels or tags that mix numbers and text (``"pos"``, ``"neg"`` and one
    stray ``1``), words and tags of different counts, and a file without records.
    """
    kinds = None
    if config.task == "token_classification" or (
        config.task == "sequence_classification" and config.problem_type != "regression"
    ):
        kinds = _LabelKinds(config.label_field)
    examples = []
    for where, record in read_records(path):
        examples.append(_example(where, record, config))
        if kinds is not None:
            kinds.check(record[config.label_field], where)
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty)")
    return examples


def label_set(examples: Sequence[Example], given: Sequence[str] = ()) -> tuple[str, ...]:
    """The labels in order: `given` when set (every example's labels must be among them), else the sorted
    labels of `examples`; integer labels (``0`` ... ``11``, numbers in JSON or digits in CSV) in numeric
    order, so that class id ``k`` is label ``k`` when they count from 0."""
    if given:
        check_labels(examples, given, "the label set given by --labels")
        return tuple(given)
    found = set()
    for example in examples:
        found.update(_labels_of(example))
    if found and all(_INTEGER.fullmatch(label) for label in found):
        return tuple(sorted(found, key=lambda label: (int(label), label)))
    return tuple(sorted(found))


def check_labels(examples: Sequence[Example], labels: Sequence[str], source: str) -> None:
    """Raise ValueError naming the file and line of the first example with a label outside `labels`."""
    known = set(labels)
    for example in examples:
        for label in _labels_of(example):
            if label not in known:
                shown = ", ".join(labels) if len(labels) <= 20 else ", ".join(labels[:20]) + ", ..."
                raise ValueError(f"{example.where}: label {label!r} is not in {source} ({shown})")


def split_off(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, held out): a seeded random `fraction` of the examples held out, at least one of each side
    when there are two or more examples and `fraction` > 0."""
    if fraction <= 0 or len(examples) < 2:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    count = min(max(1, round(fraction * len(examples))), len(examples) - 1)
    held = set(order[:count])
    return (
        [e for i, e in enumerate(examples) if i not in held],
        [e for i, e in enumerate(examples) if i in held],
    )


# ---------------------------------------------------------------------------------------------------------
# records


def _json_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            where = f"{path}, line {number}"
            line = _decode(raw, where, "JSON Lines", first=number == 1)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                hint = ""
                if number == 1 and line.lstrip().startswith("["):
                    hint = "; a JSON array is not JSON Lines: write one object per line"
                elif "{" not in line:
                    hint = f"; the extension {path.suffix} says JSON Lines (one object per line): is it CSV?"
                raise ValueError(f"{where}: invalid JSON ({error.msg}, column {error.colno}){hint}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            yield where, record


def _csv_records(path: Path, delimiter: str) -> Iterator[tuple[str, dict[str, Any]]]:
    raw = path.read_bytes()
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: a NUL byte: this is not a text {path.suffix} file")
    for number, raw_line in enumerate(raw.split(b"\n"), start=1):
        _decode(raw_line, f"{path}, line {number}", "CSV", first=number == 1)
    text = raw.decode("utf-8-sig")
    first = next((line for line in text.splitlines() if line.strip()), "")
    if first.lstrip().startswith(("{", "[")):
        raise ValueError(
            f"{path}, line 1: this looks like JSON, not {path.suffix[1:].upper()}: rename it .jsonl"
        )
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    try:
        for record in reader:
            # the record's first line: its last one less the line breaks inside its quoted values
            breaks = sum(str(v).count("\n") for v in record.values() if isinstance(v, str))
            where = f"{path}, line {reader.line_num - breaks}"
            if None in record:  # more values than columns
                raise ValueError(
                    f"{where}: {len(reader.fieldnames) + len(record[None])} values for "
                    f"{len(reader.fieldnames)} columns ({', '.join(reader.fieldnames)})"
                )
            if all(value in (None, "") for value in record.values()):
                continue  # a blank line
            yield where, {key: value for key, value in record.items() if value is not None}
    except csv.Error as error:
        raise ValueError(f"{path}, line {reader.line_num}: malformed CSV ({error})") from None


def _dataset_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"{path} is a folder: reading a `datasets` folder needs the datasets package "
            "(pip install datasets)"
        ) from None
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as error:
        raise ValueError(f"{path}: not a `datasets` folder saved with save_to_disk ({error})") from None
    if isinstance(dataset, datasets.DatasetDict):
        raise ValueError(
            f"{path}: a DatasetDict with splits {sorted(dataset)}; pass the split's own folder "
            f"({path / sorted(dataset)[0]})"
        )
    for index, record in enumerate(dataset):
        yield f"{path}, row {index}", dict(record)


def _decode(raw: bytes, where: str, kind: str, *, first: bool) -> str:
    try:
        return raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{where}: not UTF-8 text ({error.reason}): is this really {kind}?") from None


# ---------------------------------------------------------------------------------------------------------
# examples


def _example(where: str, record: dict[str, Any], config: TrainConfig) -> Example:
    if config.task == "sequence_classification":
        text = _text(record, config.text_field, where)
        if config.problem_type == "multi_label_classification":
            return Example(
                text, _label_list(record, config.label_field, config.label_separator, where), None, where
            )
        if config.problem_type == "regression":
            return Example(text, _number(record, config.label_field, where), None, where)
        return Example(text, _label(record, config.label_field, where), None, where)
    if config.task == "token_classification":
        words = _words(record, config.text_field, where)
        tags = _words(record, config.label_field, where)
        if len(words) != len(tags):
            raise ValueError(
                f"{where}: {len(words)} words in {config.text_field!r} but {len(tags)} tags in "
                f"{config.label_field!r}: give one tag per word"
            )
        return Example(words, tags, None, where)
    text = _text(record, config.text_field, where)
    target = None if config.target_field is None else _text(record, config.target_field, where)
    return Example(text, None, target, where)


def _field(record: dict[str, Any], name: str, where: str) -> Any:
    if name not in record:
        raise ValueError(f"{where}: missing field {name!r} (fields: {', '.join(map(str, record))})")
    return record[name]


def _text(record: dict[str, Any], name: str, where: str) -> str:
    value = _field(record, name, where)
    if not isinstance(value, str):
        raise ValueError(f"{where}: field {name!r} must be text, got {type(value).__name__} {value!r}")
    if not value.strip():
        raise ValueError(f"{where}: field {name!r} is empty")
    return value


def _label(record: dict[str, Any], name: str, where: str) -> str:
    value = _field(record, name, where)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: field {name!r} must be a label (text or an integer), got {value!r}")
    label = str(value).strip()
    if not label:
        raise ValueError(f"{where}: field {name!r} (the label) is empty")
    return label


def _label_list(record: dict[str, Any], name: str, separator: str, where: str) -> tuple[str, ...]:
    """A multi-label example's classes: a list, or a text split at `separator`; duplicates dropped."""
    value = _field(record, name, where)
    if isinstance(value, str):
        items = [item.strip() for item in value.split(separator)] if value.strip() else []
    elif isinstance(value, list) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        items = [str(v).strip() for v in value]
    else:
        raise ValueError(
            f"{where}: field {name!r} must be a list of labels or labels joined by {separator!r}, "
            f"got {value!r}"
        )
    if any(not item for item in items):
        raise ValueError(f"{where}: field {name!r} has an empty label in {value!r}")
    return tuple(dict.fromkeys(items))


def _number(record: dict[str, Any], name: str, where: str) -> float:
    """A regression target: a finite number, or a text that is one (a CSV cell)."""
    value = _field(record, name, where)
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number is None or not math.isfinite(number):
        raise ValueError(f"{where}: field {name!r} must be a finite number (regression), got {value!r}")
    return number


def _words(record: dict[str, Any], name: str, where: str) -> tuple[str, ...]:
    value = _field(record, name, where)
    if isinstance(value, str):
        words = value.split()
    elif isinstance(value, list) and all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
    ):
        words = [str(v) for v in value]
        if any(not w.strip() for w in words):
            raise ValueError(f"{where}: field {name!r} has an empty item")
    else:
        raise ValueError(
            f"{where}: field {name!r} must be a list of strings or a space-separated string, got {value!r}"
        )
    if not words:
        raise ValueError(f"{where}: field {name!r} is empty")
    return tuple(words)


class _LabelKinds:
    """Whether a file's class labels are text or numbers: the first one decides, a label of the other kind
    is an error (one stray ``1`` among "pos" / "neg" would silently be a class of its own)."""

    def __init__(self, field: str) -> None:
        self.field = field
        self.first: tuple[str, Any, str] | None = None  # (kind, label, where)

    def check(self, value: Any, where: str) -> None:
        for label in value if isinstance(value, list) else [value]:
            kind = "text" if isinstance(label, str) else "a number"
            if self.first is None:
                self.first = (kind, label, where)
            elif kind != self.first[0]:
                first_kind, first_label, first_where = self.first
                raise ValueError(
                    f"{where}: label {label!r} of field {self.field!r} is {kind}, but label {first_label!r} "
                    f"({first_where}) is {first_kind}: a field's labels must be all text or all numbers"
                )


def _labels_of(example: Example) -> tuple[str, ...]:
    if example.label is None or isinstance(example.label, float):
        return ()
    return example.label if isinstance(example.label, tuple) else (example.label,)
