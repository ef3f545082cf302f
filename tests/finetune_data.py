"""Small learnable data sets for the `tunekit train` tests, written as JSONL or CSV (built offline, seeded),
and the tiny options every test run shares."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunekit.finetune import TrainConfig
from tunekit.runs.config import config_from_sources

POSITIVE = ["good", "great", "fine", "lovely", "nice", "superb"]
NEGATIVE = ["bad", "awful", "poor", "sad", "ugly", "terrible"]
NEUTRAL = ["okay", "plain", "usual", "average"]
FILLER = ["the", "a", "movie", "film", "plot", "was", "is", "very", "quite", "and", "but", "it"]
COLORS = ["red", "green", "blue", "yellow"]
ANIMALS = ["cat", "dog", "bird", "fish"]

# tiny sizes: a run of 2 epochs over ~40 examples takes a few seconds
TINY = {
    "vocab_size": "300",
    "tiny_hidden_size": "32",
    "max_length": "32",
    "batch_size": "8",
    "learning_rate": "0.005",
    "epochs": "2",
    "lr_scheduler": "constant",
}


def classification_records(count: int, seed: int = 0, labels: Sequence[str] = ("neg", "pos")) -> list[dict]:
    """Texts of filler words and one sentiment word, labelled by that word's class."""
    rng = random.Random(seed)
    words = {"pos": POSITIVE, "neg": NEGATIVE, "neutral": NEUTRAL}
    records = []
    for _ in range(count):
        label = rng.choice(list(labels))
        text = [rng.choice(FILLER) for _ in range(4)] + [rng.choice(words[label])]
        rng.shuffle(text)
        records.append({"text": " ".join(text), "label": label})
    return records


def multi_label_records(count: int, seed: int = 0) -> list[dict]:
    """Filler texts with a colour word (label "color"), an animal word ("animal"), both or neither."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        words, labels = [rng.choice(FILLER) for _ in range(3)], []
        if rng.random() < 0.5:
            words.append(rng.choice(COLORS))
            labels.append("color")
        if rng.random() < 0.5:
            words.append(rng.choice(ANIMALS))
            labels.append("animal")
        rng.shuffle(words)
        records.append({"text": " ".join(words), "label": labels})
    return records


def regression_records(count: int, seed: int = 0) -> list[dict]:
    """Filler texts with 0 to 3 colour words; the label is their count / 3."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        colors = rng.randint(0, 3)
        words = [rng.choice(FILLER) for _ in range(3)] + [rng.choice(COLORS) for _ in range(colors)]
        rng.shuffle(words)
        records.append({"text": " ".join(words), "label": colors / 3})
    return records


def token_records(count: int, seed: int = 0) -> list[dict]:
    """Word lists tagged COLOR / ANIMAL / O."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        words = [rng.choice(FILLER + COLORS + ANIMALS) for _ in range(rng.randint(3, 7))]
        tags = ["COLOR" if w in COLORS else "ANIMAL" if w in ANIMALS else "O" for w in words]
        records.append({"tokens": words, "tags": tags})
    return records


def generation_records(count: int, seed: int = 0) -> list[dict]:
    """``{"prompt": "copy: red cat", "answer": "red cat"}``: the answer repeats the prompt's words."""
    rng = random.Random(seed)
    records = []
    for _ in range(count):
        words = " ".join(rng.choice(COLORS + ANIMALS) for _ in range(rng.randint(1, 3)))
        records.append({"prompt": f"copy: {words}", "answer": words})
    return records


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_csv(path: Path, records: Sequence[dict], separator: str = " ") -> Path:
    """A CSV with a header row; a list value is written joined by `separator`."""
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(records[0]))
        writer.writeheader()
        for record in records:
            writer.writerow({k: separator.join(v) if isinstance(v, list) else v for k, v in record.items()})
    return path


def tiny_config(train_file: Path, **overrides: Any) -> TrainConfig:
    """A `TrainConfig` of the tiny sizes for `train_file`, with `overrides` (strings or values)."""
    values = {**TINY, "train_file": str(train_file), **overrides}
    return config_from_sources(TrainConfig, overrides=values)
