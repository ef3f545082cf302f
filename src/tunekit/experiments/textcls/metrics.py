"""The binary classification metrics of the classification experiments: F1 of one class, accuracy, average
precision (PR-AUC) and the decision threshold that maximises F1 (macro-F1 is
`tunekit.workbench.metrics.macro_f1`).

Scores and labels are plain sequences or 1-D tensors; a positive is ``label == 1`` for the binary metrics.

>>> average_precision([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
0.8333333333333333
>>> f1_score([1, 1, 0, 0], [1, 0, 1, 0])
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...workbench.metrics import macro_f1

__all__ = ["accuracy", "average_precision", "best_threshold", "f1_score", "precision_recall_curve"]


def _list(values: Sequence[float] | torch.Tensor) -> list:
    return values.tolist() if isinstance(values, torch.Tensor) else list(values)


def _check_lengths(a: list, b: list) -> None:
    if len(a) != len(b):
        raise ValueError(f"predictions and labels differ in length: {len(a)} vs {len(b)}")
    if not a:
        raise ValueError("no predictions to score")


def f1_score(
    predicted: Sequence[int] | torch.Tensor, labels: Sequence[int] | torch.Tensor, positive: int = 1
) -> float:
    """``2 tp / (2 tp + fp + fn)`` of class `positive` (macro-F1 over that class alone); 0 when it is
    neither predicted nor present."""
    predicted, labels = _list(predicted), _list(labels)
    _check_lengths(predicted, labels)
    return macro_f1(predicted, labels, classes=[positive])


def accuracy(predicted: Sequence[int] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """The share of predictions equal to their label."""
    predicted, labels = _list(predicted), _list(labels)
    _check_lengths(predicted, labels)
    return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)


def precision_recall_curve(
    scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor
) -> list[tuple[float, float, float]]:
    """(threshold, precision, recall) of the rule ``score >= threshold`` for each distinct score, from the
    highest threshold down. Tied scores are one threshold, so the result does not depend on their order.

    Raises ValueError when there is no positive label (recall is undefined)."""
    scores, labels = _list(scores), _list(labels)
    _check_lengths(scores, labels)
    positives = sum(y == 1 for y in labels)
    if positives == 0:
        raise ValueError("the labels hold no positive (1): precision-recall is undefined")
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    curve, tp = [], 0
    for rank, i in enumerate(order):
        tp += labels[i] == 1
        last_of_tie = rank + 1 == len(order) or scores[order[rank + 1]] != scores[i]
        if last_of_tie:  # rank + 1 items score >= scores[i]
            curve.append((float(scores[i]), tp / (rank + 1), tp / positives))
    return curve


def average_precision(scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor) -> float:
    """PR-AUC as average precision, ``sum_n (R_n - R_{n-1}) P_n`` over the thresholds of
    `precision_recall_curve` (scikit-learn's ``average_precision_score``: a step function, no
    interpolation). A random scorer scores the positive rate."""
    ap, previous_recall = 0.0, 0.0
    for _, precision, recall in precision_recall_curve(scores, labels):
        ap += (recall - previous_recall) * precision
        previous_recall = recall
    return ap


def best_threshold(
    scores: Sequence[float] | torch.Tensor, labels: Sequence[int] | torch.Tensor
) -> tuple[float, float]:
    """(threshold, F1) maximising the F1 of the rule ``score >= threshold`` over the distinct scores; of
    equal F1s the highest threshold. Tune it on validation data, never on the data you report."""
    best = (0.0, -1.0)
    for threshold, precision, recall in precision_recall_curve(scores, labels):
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if f1 > best[1]:
            best = (threshold, f1)
    return best
