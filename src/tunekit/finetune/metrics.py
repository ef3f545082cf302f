"""Evaluation metrics per epoch, as the Trainer's ``preprocess_logits_for_metrics`` and ``compute_metrics``.

- classification (sequence or token): ``accuracy`` and ``macro_f1`` over the labelled items (tokens with a
  tag for token classification: a word's first token), the F1 averaged over the classes present in the gold
  labels or the predictions (`tunekit.workbench.metrics.macro_f1`: scikit-learn's ``f1_score(average=
  "macro")``);
- multi-label sequence classification: a class is predicted where its sigmoid is above 0.5 (logit > 0);
  ``micro_f1`` = 2 TP / (2 TP + FP + FN) over all (example, class) cells, ``macro_f1`` the per-class F1
  averaged over the classes present in the gold labels or the predictions, ``exact_match`` the share of
  examples whose predicted set is exactly the gold set (subset accuracy);
- regression: ``mse`` = mean (prediction - target)^2 and ``pearson``, the correlation of predictions and
  targets over the evaluation examples (NaN when either is constant);
- generation: teacher-forced ``token_accuracy`` (argmax = target) and ``cross_entropy`` (mean negative
  log-likelihood per target token, whatever the training objective) with its ``perplexity`` = exp of it.

The logits are reduced per batch (argmax, and the per-token NLL for generation) before the Trainer gathers
them, so evaluation never holds (examples x length x vocabulary) values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch.nn.functional as F
from torch import Tensor

from .._dtypes import upcast
from ..losses.registry import GENERATION_TASKS, SINGLE_LABEL
from ..workbench.metrics import macro_f1
from .encode import IGNORE_INDEX

__all__ = [
    "compute_metrics_for",
    "metric_names",
    "multi_label_metrics",
    "preprocess_for",
    "regression_metrics",
]

CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
MULTI_LABEL_METRICS = ("micro_f1", "macro_f1", "exact_match")
REGRESSION_METRICS = ("mse", "pearson")
GENERATION_METRICS = ("token_accuracy", "cross_entropy", "perplexity")


def metric_names(task: str, problem_type: str = SINGLE_LABEL) -> tuple[str, ...]:
    """The evaluation metrics of a task (and, for sequence classification, its problem type)."""
    if task in GENERATION_TASKS:
        return GENERATION_METRICS
    if task == "sequence_classification" and problem_type == "multi_label_classification":
        return MULTI_LABEL_METRICS
    if task == "sequence_classification" and problem_type == "regression":
        return REGRESSION_METRICS
    return CLASSIFICATION_METRICS


def preprocess_for(
    task: str, problem_type: str = SINGLE_LABEL
) -> Callable[[Tensor, Tensor], Tensor | tuple[Tensor, ...]]:
    """``preprocess_logits_for_metrics(logits, labels)``: the argmax (B, N) / (B,) for classification; the
    logits (B, C) for multi-label and the predictions (B,) for regression (both small, kept in fp32, fp64
    if the model computes in it);
    (predictions, per-token NLL, targets), each (B, N) and aligned, for generation (a causal LM's position
    i predicts label i + 1)."""

    def multi_label(logits: Tensor | tuple, labels: Tensor) -> Tensor:
        return upcast(_logits(logits))

    def regression(logits: Tensor | tuple, labels: Tensor) -> Tensor:
        return upcast(_logits(logits)).reshape(-1)  # the head's one output (B, 1) -> (B,)

    def classification(logits: Tensor | tuple, labels: Tensor) -> Tensor:
        return _logits(logits).argmax(-1)

    def generation(logits: Tensor | tuple, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = _logits(logits)
        target = labels
        if task == "causal_lm":
            target = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]
        nll = F.cross_entropy(
            upcast(logits).flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(target)
        return logits.argmax(-1), nll, target

    if task == "sequence_classification" and problem_type != SINGLE_LABEL:
        return multi_label if problem_type == "multi_label_classification" else regression
    return generation if task in GENERATION_TASKS else classification


def compute_metrics_for(task: str, problem_type: str = SINGLE_LABEL) -> Callable[[object], dict[str, float]]:
    """``compute_metrics(EvalPrediction)`` of the task (see the module docstring)."""
    if task == "sequence_classification" and problem_type == "multi_label_classification":
        return lambda prediction: multi_label_metrics(prediction.predictions, prediction.label_ids)
    if task == "sequence_classification" and problem_type == "regression":
        return lambda prediction: regression_metrics(prediction.predictions, prediction.label_ids)

    def classification(prediction) -> dict[str, float]:
        predicted = np.asarray(prediction.predictions).reshape(-1)
        gold = np.asarray(prediction.label_ids).reshape(-1)
        keep = gold != IGNORE_INDEX
        predicted, gold = predicted[keep], gold[keep]
        return {
            "accuracy": float((predicted == gold).mean()) if len(gold) else math.nan,
            "macro_f1": macro_f1(predicted, gold),
        }

    def generation(prediction) -> dict[str, float]:
        predicted, nll, target = (np.asarray(array) for array in prediction.predictions)
        keep = target != IGNORE_INDEX
        if not keep.any():
            return {"token_accuracy": math.nan, "cross_entropy": math.nan, "perplexity": math.nan}
        cross_entropy = float(nll[keep].astype(np.float64).mean())
        return {
            "token_accuracy": float((predicted[keep] == target[keep]).mean()),
            "cross_entropy": cross_entropy,
            "perplexity": math.exp(min(cross_entropy, 700.0)),
        }

    return generation if task in GENERATION_TASKS else classification


def multi_label_metrics(logits: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """``micro_f1``, ``macro_f1`` and ``exact_match`` of (B, C) logits against (B, C) 0/1 labels, a class
    predicted where its logit is > 0 (sigmoid > 0.5); an F1 without any positive (predicted or gold) is NaN.

    >>> multi_label_metrics(np.array([[1.0, -1.0], [2.0, 3.0]]), np.array([[1.0, 0.0], [1.0, 0.0]]))
    {'micro_f1': 0.8, 'macro_f1': 0.5, 'exact_match': 0.5}
    """
    predicted = np.asarray(logits) > 0
    gold = np.asarray(gold) > 0.5
    if predicted.shape != gold.shape or predicted.ndim != 2:
        raise ValueError(f"multi-label logits {predicted.shape} and labels {gold.shape} must be (B, C)")
    if len(gold) == 0:
        return {"micro_f1": math.nan, "macro_f1": math.nan, "exact_match": math.nan}
    tp = (predicted & gold).sum(0)
    fp = (predicted & ~gold).sum(0)
    fn = (~predicted & gold).sum(0)
    errors_and_hits = 2 * tp + fp + fn
    present = errors_and_hits > 0
    micro = 2 * tp.sum() / errors_and_hits.sum() if errors_and_hits.sum() else math.nan
    macro = float(np.mean(2 * tp[present] / errors_and_hits[present])) if present.any() else math.nan
    return {
        "micro_f1": float(micro),
        "macro_f1": macro,
        "exact_match": float((predicted == gold).all(1).mean()),
    }


def regression_metrics(predicted: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``mse`` = mean (predicted - target)^2 and ``pearson`` = cov(p, t) / (std(p) std(t)) over the examples
    (NaN when either side is constant), computed in float64.

    >>> scores = regression_metrics(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 5.0]))
    >>> {name: round(value, 4) for name, value in scores.items()}
    {'mse': 0.6667, 'pearson': 0.982}
    """
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    t = np.asarray(target, dtype=np.float64).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"regression predictions {p.shape} and targets {t.shape} differ in size")
    if len(t) == 0:
        return {"mse": math.nan, "pearson": math.nan}
    a, b = p - p.mean(), t - t.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    pearson = float((a * b).sum() / denominator) if denominator > 0 else math.nan
    return {"mse": float(((p - t) ** 2).mean()), "pearson": pearson}


def _logits(logits: Tensor | tuple) -> Tensor:
    """The logits among a model's outputs (T5 returns them first, with its caches)."""
    return logits[0] if isinstance(logits, (tuple, list)) else logits
