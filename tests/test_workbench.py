"""What the command-line applications share (`tunekit.workbench`): the WordPiece built by counting, whose
vocabulary must not depend on the process, the thread count or the order of the texts; macro-F1 with both
conventions for absent classes; the epoch-end callback."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from tunekit.workbench.metrics import macro_f1
from tunekit.workbench.tokenizers import train_wordpiece, wordpiece_vocab
from tunekit.workbench.training import EpochEndCallback

# ---------------------------------------------------------------------------------------------------------
# The WordPiece


def tied_texts(count: int = 400) -> list[str]:
    """Texts over 120 made-up words drawn uniformly: many words share a count, so any order that leaked
    into the vocabulary (hash order, thread scheduling) would show; accents and CJK characters too."""
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "su", "te", "ré", "nü", "po", "ba", "di"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(400)})[
        :120
    ]
    return [
        " ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + rng.choice([".", "!", " 語"])
        for _ in range(count)
    ]


def digest(vocab: dict[str, int]) -> str:
    return hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()


VOCAB_DIGESTS = """
import hashlib, json, sys
from tunekit.workbench.tokenizers import train_wordpiece
texts = json.load(open(sys.argv[1], encoding="utf-8"))
for size in sys.argv[2:]:
    vocab = train_wordpiece(texts, int(size)).get_vocab()
    print(hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest())
"""
SIZES = (150, 400)  # room for a few words; room for every word


def test_the_wordpiece_is_the_same_in_every_process_thread_count_and_text_order(tmp_path):
    """What `tunekit train` (resumed runs, one tokenizer per process) and the cached encoder of the
    classification experiments rely on; tokenizers' own WordPieceTrainer fails this (see
    `wordpiece_vocab`)."""
    texts = tied_texts()
    here = [digest(train_wordpiece(texts, size).get_vocab()) for size in SIZES]
    assert [digest(train_wordpiece(texts, size).get_vocab()) for size in SIZES] == here
    shuffled = random.Random(1).sample(texts, len(texts))
    assert [digest(train_wordpiece(shuffled, size).get_vocab()) for size in SIZES] == here
    path = tmp_path / "texts.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    for hash_seed, threads in (("1", "1"), ("2", "4")):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "RAYON_NUM_THREADS": threads}
        out = subprocess.run(
            [sys.executable, "-c", VOCAB_DIGESTS, str(path), *map(str, SIZES)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        assert out.stdout.split() == here


def test_the_vocabulary_is_specials_characters_then_words_by_count():
    texts = ["Beta alpha beta", "gamma, beta ALPHA", "delta"]
    vocab = wordpiece_vocab(texts, 5 + 2 * 11 + 3)
    characters = sorted(set("betaalphagammadelta,"))
    expected = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        *characters,
        *(f"##{c}" for c in characters),
        "beta",  # 3 times
        "alpha",  # 2 times
        "delta",  # once, ties in alphabetical order: delta before gamma, which has no room
    ]
    assert list(vocab) == expected and list(vocab.values()) == list(range(len(expected)))


def test_the_wordpiece_encodes_like_bert():
    tokenizer = train_wordpiece(
        ["Return the values.", "return a copy of the values"], 100, model_max_length=12
    )
    encoded = tokenizer("Return the value")  # not a word of the vocabulary: its characters
    tokens = ["[CLS]", "return", "the", "v", "##a", "##l", "##u", "##e", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"]) == tokens
    assert tokenizer.pad_token_id == 0 and tokenizer.model_max_length == 12
    assert tokenizer.convert_ids_to_tokens(tokenizer("a", "copy")["input_ids"]) == [
        "[CLS]",
        "a",
        "[SEP]",
        "copy",
        "[SEP]",
    ]


@pytest.mark.parametrize(
    "vocab_size, message", [(10, "vocab_size 10 is below the 25 tokens"), (True, "integer")]
)
def test_a_wordpiece_without_room_for_its_characters_is_refused(vocab_size, message):
    with pytest.raises(ValueError, match=message):
        wordpiece_vocab(["abc def, ghi"], vocab_size)  # 10 characters: 5 + 2 * 10 = 25


# ---------------------------------------------------------------------------------------------------------
# Macro-F1


def naive_f1(predicted: list[int], gold: list[int], c: int) -> float | None:
    """F1 of class c from its counts; None when c is neither predicted nor gold."""
    tp = sum(p == y == c for p, y in zip(predicted, gold, strict=True))
    fp = sum(p == c != y for p, y in zip(predicted, gold, strict=True))
    fn = sum(y == c != p for p, y in zip(predicted, gold, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None


@pytest.mark.parametrize("seed", range(3))
def test_macro_f1_over_the_present_classes_or_all_given_ones(seed):
    rng = random.Random(seed)
    gold = [rng.randrange(4) for _ in range(40)]  # class 4 may be predicted, never gold; 5 is neither
    predicted = [y if rng.random() < 0.6 else rng.randrange(5) for y in gold]
    scores = [naive_f1(predicted, gold, c) for c in range(6)]
    present = [s for s in scores if s is not None]
    assert macro_f1(predicted, gold) == pytest.approx(sum(present) / len(present))
    assert macro_f1(np.array(predicted), torch.tensor(gold)) == pytest.approx(sum(present) / len(present))
    every = [0.0 if s is None else s for s in scores]  # a given class absent from both scores 0
    assert macro_f1(predicted, gold, classes=range(6)) == pytest.approx(sum(every) / 6)


def test_macro_f1_edge_cases():
    assert macro_f1([0, 0], [0, 0]) == 1.0 and macro_f1([0, 0], [0, 0], classes=range(2)) == 0.5
    assert macro_f1([1, 0], [0, 1]) == 0.0
    assert math.isnan(macro_f1([], []))


# ---------------------------------------------------------------------------------------------------------
# The epoch-end callback


class _State:
    epoch = 2.0000001  # the Trainer's float epoch at an epoch's end


def test_the_epoch_end_callback_evaluates_in_eval_mode_without_gradients_and_restores_the_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    seen = []

    def evaluate(epoch: int, model: nn.Module) -> None:
        seen.append((epoch, model.training, torch.is_grad_enabled()))

    model.train()
    EpochEndCallback(evaluate).on_epoch_end(None, _State(), None, model=model)
    assert seen == [(2, False, False)] and model.training
    model.eval()
    EpochEndCallback(evaluate).on_epoch_end(None, _State(), None, model=model)
    assert not model.training
