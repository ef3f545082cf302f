"""The classification experiments' hand-written metrics against naive references written from their
definitions, the class weights, the spread test, and the offline data (families, splits, tasks)."""

from __future__ import annotations

import random

import pytest
import torch

from tunekit.experiments.codegen.data import Pair
from tunekit.experiments.imbalanced.arms import balanced_weights
from tunekit.experiments.report_parts import exceeds_spread
from tunekit.experiments.textcls import data as D
from tunekit.experiments.textcls import metrics as M
from tunekit.runs.report import mean_std
from tunekit.workbench.metrics import macro_f1


def naive_average_precision(scores: list[float], labels: list[int]) -> float:
    """Mean over the positives of the precision of the rule ``score >= that positive's score``."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    precisions = []
    for threshold in positives:
        chosen = [y for s, y in zip(scores, labels, strict=True) if s >= threshold]
        precisions.append(sum(chosen) / len(chosen))
    return sum(precisions) / len(positives)


def naive_f1(predicted: list[int], labels: list[int], positive: int) -> float:
    tp = sum(1 for p, y in zip(predicted, labels, strict=True) if p == y == positive)
    precision_denominator = predicted.count(positive)
    recall_denominator = labels.count(positive)
    if not tp:
        return 0.0
    precision, recall = tp / precision_denominator, tp / recall_denominator
    return 2 * precision * recall / (precision + recall)


def random_case(seed: int, n: int, ties: bool) -> tuple[list[float], list[int]]:
    rng = random.Random(seed)
    labels = [int(rng.random() < 0.2) for _ in range(n)]
    labels[rng.randrange(n)] = 1  # at least one positive
    if ties:  # few distinct scores: many ties, positives and negatives among them
        scores = [rng.randrange(5) / 4 for _ in range(n)]
    else:
        scores = [rng.random() + 0.5 * y for y in labels]
    return scores, labels


def test_average_precision_of_a_known_case():
    # scikit-learn's documented example of average_precision_score
    assert M.average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.8333333333)
    assert M.average_precision([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert M.average_precision([0.1, 0.2, 0.9], [1, 1, 0]) == pytest.approx((1 / 2 + 2 / 3) / 2)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("n", [1, 7, 100, 333])
def test_average_precision_matches_the_naive_reference(n, ties):
    for seed in range(5):
        scores, labels = random_case(seed, n, ties)
        assert M.average_precision(scores, labels) == pytest.approx(naive_average_precision(scores, labels))
        # tensors give the same, and the order of tied items does not matter
        order = list(range(n))
        random.Random(seed).shuffle(order)
        shuffled = M.average_precision(torch.tensor([scores[i] for i in order]), [labels[i] for i in order])
        assert shuffled == pytest.approx(naive_average_precision(scores, labels))


def test_all_tied_scores_give_the_positive_rate():
    labels = [1, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert M.average_precision([0.5] * 10, labels) == pytest.approx(0.2)


def test_precision_recall_curve_points_match_counting():
    scores, labels = random_case(3, 60, ties=True)
    for threshold, precision, recall in M.precision_recall_curve(scores, labels):
        chosen = [y for s, y in zip(scores, labels, strict=True) if s >= threshold]
        assert precision == pytest.approx(sum(chosen) / len(chosen))
        assert recall == pytest.approx(sum(chosen) / sum(labels))
    assert M.precision_recall_curve(scores, labels)[-1][2] == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_f1_and_macro_f1_match_the_definition(seed):
    rng = random.Random(seed)
    labels = [rng.randrange(3) for _ in range(50)]
    predicted = [y if rng.random() < 0.6 else rng.randrange(3) for y in labels]
    for k in range(3):
        assert M.f1_score(predicted, labels, k) == pytest.approx(naive_f1(predicted, labels, k))
    expected = sum(naive_f1(predicted, labels, k) for k in range(3)) / 3
    assert macro_f1(torch.tensor(predicted), torch.tensor(labels), range(3)) == pytest.approx(expected)
    assert M.accuracy(predicted, labels) == pytest.approx(
        sum(p == y for p, y in zip(predicted, labels, strict=True)) / 50
    )


def test_f1_of_a_class_never_predicted_nor_present_is_zero():
    assert M.f1_score([0, 0], [0, 0], positive=1) == 0.0
    assert macro_f1([0, 0], [0, 0], range(2)) == 0.5


@pytest.mark.parametrize("ties", [False, True])
def test_best_threshold_maximises_f1_over_every_candidate(ties):
    for seed in range(5):
        scores, labels = random_case(seed, 80, ties)
        threshold, f1 = M.best_threshold(scores, labels)
        brute = max(naive_f1([int(s >= t) for s in scores], labels, 1) for t in set(scores))
        assert f1 == pytest.approx(brute)
        assert naive_f1([int(s >= threshold) for s in scores], labels, 1) == pytest.approx(brute)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: M.average_precision([0.1, 0.2], [0, 0]), "no positive"),
        (lambda: M.average_precision([0.1, 0.2], [0, 1, 1]), "differ in length: 2 vs 3"),
        (lambda: M.f1_score([], []), "no predictions"),
    ],
)
def test_metric_errors_name_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_balanced_weights_give_each_class_the_same_total_weight():
    counts = [950, 50]
    weights = balanced_weights(counts)
    assert weights[0] * counts[0] == pytest.approx(weights[1] * counts[1])
    assert sum(w * n for w, n in zip(weights, counts, strict=True)) / sum(counts) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"at least one training example, got counts \[10, 0\]"):
        balanced_weights([10, 0])


def test_spread_and_mean():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert exceeds_spread([0.9, 0.91], [0.8, 0.81])
    assert not exceeds_spread([0.9, 0.7], [0.8, 0.81])
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


# ---- the data ----


def pairs(module: str, *descriptions: str) -> list[Pair]:
    return [
        Pair(nl=text, code=f"def f{i}():\n    return {i}", source=module)
        for i, text in enumerate(descriptions)
    ]


def corpus() -> dict[str, list[Pair]]:
    return {
        "asyncio/events.py": pairs("asyncio/events.py", "Close the event loop now.", "Run until complete."),
        "email/parser.py": pairs(
            "email/parser.py", "Parse a message from a string.", "Close the event loop now."
        ),
        "json/decoder.py": pairs("json/decoder.py", "Decode a JSON document.", "Decode a JSON document."),
        "tarfile.py": pairs("tarfile.py", "Open a tar archive for reading.", "Add a file to the archive."),
    }


def test_families_splits_and_tasks():
    assert D.family_of("email/mime/text.py") == "email" and D.family_of("tarfile.py") == "tarfile"
    texts = D.labeled_texts(corpus())
    # a repeated description is kept once per family; the same text in two families twice
    assert [(t.family, t.text) for t in texts if t.family == "json"] == [("json", "Decode a JSON document.")]
    assert sum(t.text == "Close the event loop now." for t in texts) == 2
    assert all(t.split == D.split_of(t.text) for t in texts)
    binary = D.binary_task(texts, "asyncio")
    assert binary.label_names == ("rest", "asyncio")
    rows = [row for split in D.SPLITS for row in binary.splits[split]]
    assert sorted(rows) == sorted((t.text, int(t.family == "asyncio")) for t in texts)
    families = D.families_task(texts, 2)
    assert families.label_names == ("asyncio", "email")  # 2 texts each, as tarfile: ties go by name
    assert sum(map(sum, families.counts().values())) == 4


def test_split_is_stable_and_follows_the_fractions():
    texts = [f"Return item number {i}." for i in range(3000)]
    splits = [D.split_of(t) for t in texts]
    assert splits == [D.split_of(t) for t in texts]
    assert 0.56 < splits.count("train") / 3000 < 0.64
    assert 0.17 < splits.count("validation") / 3000 < 0.23
    with pytest.raises(ValueError, match=r"sum below 1, got \(0.8, 0.3\)"):
        D.split_of("x", (0.8, 0.3))


def test_task_errors_name_the_bad_value():
    texts = D.labeled_texts(corpus())
    with pytest.raises(ValueError, match=r"family 'nosuch'.*largest are: asyncio"):
        D.binary_task(texts, "nosuch")
    with pytest.raises(ValueError, match=r"count must be an integer in \[2, 4\].*got 9"):
        D.families_task(texts, 9)
