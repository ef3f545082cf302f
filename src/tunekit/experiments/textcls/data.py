"""Offline text-classification data from the standard library: a function's first docstring line, labelled
with the package family its module belongs to.

Each `LabeledText` is the description of one function or method (parsed with `ast` by
`tunekit.experiments.codegen.data.corpus_pairs`) and its family, the first component of its module's path
(``asyncio/base_events.py`` -> ``asyncio``, ``json/decoder.py`` -> ``json``, ``tarfile.py`` -> ``tarfile``).
Telling a family from one line of prose is a real text-classification problem: ``"Close the transport."``
is asyncio, ``"Return the file's contents."`` could be anything. Two tasks are built from it:

- `binary_task`: one family against all the others, a minority of 1-5% (asyncio: 4.5% on Python 3.11);
- `families_task`: the `count` largest families, one class each (balanced-ish: the largest is about 3x the
  smallest).

The split is by text: a text's split is fixed by a hash of it, so the same description never appears in two
splits (the standard library repeats lines such as ``"Return a copy of the set."``), and both tasks share
one assignment, so a model pre-trained on the train split never saw a validation or test text of either.

Standard library only.

>>> family_of("asyncio/base_events.py"), family_of("tarfile.py")
('asyncio', 'tarfile')
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..codegen.data import Pair, corpus_pairs, stdlib_root

__all__ = [
    "DATA_VERSION",
    "SPLITS",
    "LabeledText",
    "Task",
    "binary_task",
    "families_task",
    "family_of",
    "labeled_texts",
    "split_of",
]

SPLITS = ("train", "validation", "test")
DATA_VERSION = 1  # bump when the texts, labels or splits change: cached texts are keyed by it


@dataclass(frozen=True)
class LabeledText:
    """One function's description, its family and its split."""

    text: str
    family: str
    split: str


@dataclass(frozen=True)
class Task:
    """A classification task: `label_names[k]` names class k; `splits[name]` is a list of (text, label)."""

    name: str
    label_names: tuple[str, ...]
    splits: Mapping[str, list[tuple[str, int]]]

    def counts(self) -> dict[str, list[int]]:
        """Examples per class in each split."""
        out = {}
        for split, rows in self.splits.items():
            per_class = Counter(label for _, label in rows)
            out[split] = [per_class[k] for k in range(len(self.label_names))]
        return out


def family_of(module: str) -> str:
    """The first component of a module's path relative to the library root, without ``.py``."""
    return Path(module).parts[0].removesuffix(".py")


def split_of(text: str, fractions: tuple[float, float] = (0.6, 0.2)) -> str:
    """ "train", "validation" or "test" for `text`, from a hash of it: the first `fractions[0]` of the hash
    range is train, the next `fractions[1]` validation, the rest test. Stable across runs and machines."""
    train, validation = fractions
    if not (train > 0 and validation > 0 and train + validation < 1):
        raise ValueError(f"split fractions must be positive and sum below 1, got {fractions!r}")
    position = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64
    return "train" if position < train else "validation" if position < train + validation else "test"


def labeled_texts(
    pairs_by_module: Mapping[str, Sequence[Pair]] | None = None, *, root: Path | None = None
) -> list[LabeledText]:
    """Every function's description with its family and split, in module order.

    `pairs_by_module` defaults to `corpus_pairs` of `root` (default: the running Python's standard library).
    A text that occurs in several families is kept once per family (it is a genuinely ambiguous example).
    """
    if pairs_by_module is None:
        pairs_by_module = corpus_pairs(
            Path(root) if root is not None else stdlib_root(), max_code_chars=10**6
        )
    seen: set[tuple[str, str]] = set()
    out = []
    for module in sorted(pairs_by_module):
        family = family_of(module)
        for pair in pairs_by_module[module]:
            if (pair.nl, family) not in seen:
                seen.add((pair.nl, family))
                out.append(LabeledText(pair.nl, family, split_of(pair.nl)))
    return out


def binary_task(texts: Iterable[LabeledText], minority: str) -> Task:
    """`minority`'s descriptions (label 1) against every other family's (label 0).

    Raises ValueError when the family has no text, naming the largest ones."""
    texts = list(texts)
    families = Counter(t.family for t in texts)
    if minority not in families:
        largest = ", ".join(f"{name} ({n})" for name, n in families.most_common(8))
        raise ValueError(f"no function of the family {minority!r} in the corpus; the largest are: {largest}")
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    for t in texts:
        splits[t.split].append((t.text, int(t.family == minority)))
    return Task(f"{minority} vs rest", ("rest", minority), splits)


def families_task(texts: Iterable[LabeledText], count: int) -> Task:
    """The `count` largest families (ties by name), one class each, in decreasing size."""
    texts = list(texts)
    families = Counter(t.family for t in texts)
    if isinstance(count, bool) or not isinstance(count, int) or not 2 <= count <= len(families):
        raise ValueError(
            f"count must be an integer in [2, {len(families)}] (families in the corpus), got {count!r}"
        )
    names = tuple(name for name, _ in sorted(families.items(), key=lambda item: (-item[1], item[0]))[:count])
    index = {name: k for k, name in enumerate(names)}
    splits: dict[str, list[tuple[str, int]]] = {split: [] for split in SPLITS}
    for t in texts:
        if t.family in index:
            splits[t.split].append((t.text, index[t.family]))
    return Task(f"{count} largest families", names, splits)
