"""`tunekit run imbalanced`: cross-entropy vs class-weighted cross-entropy vs focal vs dice on a text
classification task with a 1-5% minority class, built offline from the standard library.

The task (`tunekit.experiments.textcls.data.binary_task`): from a function's first docstring line, tell
whether it belongs to one package family (default asyncio, 4.7% of the descriptions) or to any other. A
tiny BERT, pre-trained with masked-language modelling on the training texts (cached), is fine-tuned per arm
and seed through `TunekitTrainer` + `TrainerLoss`. Measured on the test split: the minority class's F1 at
the default threshold (argmax, i.e. p > 0.5), PR-AUC (average precision), macro-F1, and the minority F1 at
the threshold that maximises F1 on the validation split.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ...runs.config import check_arms, option
from ...runs.report import epoch_line
from ..runner import Experiment, register
from ..textcls.config import ClassifierConfig
from .arms import ARMS

if TYPE_CHECKING:  # at run time only inside prepare: importing textcls.prepare imports torch
    from ..textcls.prepare import Prepared

__all__ = ["IMBALANCED", "ImbalancedConfig"]

DEFAULT_ARMS = tuple(ARMS)
RECALL_GRID = [i / 50 for i in range(51)]
THRESHOLD_GRID = [i / 20 for i in range(1, 20)]


@dataclass
class ImbalancedConfig(ClassifierConfig):
    arms: tuple[str, ...] = option(DEFAULT_ARMS, f"arms, of {tuple(ARMS)}", changes_results=False)
    minority: str = option("asyncio", "the package family that is the minority class")
    focal_gamma: float = option(2.0, "the focal arm's gamma")
    pooling: Literal["cls", "mean"] = option("cls", "how the classifier pools the encoder's states")
    max_train: int = option(
        0, "training examples used at most, drawn at random keeping every minority one (0: all)"
    )

    QUICK: ClassVar[dict[str, Any]] = {**ClassifierConfig.QUICK, "max_train": 400}

    def validate(self) -> None:
        super().validate()
        check_arms(self.arms, ARMS)
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma!r}")
        if self.max_train < 0:
            raise ValueError(f"max_train must be >= 0, got {self.max_train!r}")


def prepare(config: ImbalancedConfig, cache_dir: Path, progress: Any) -> Prepared:
    from ..textcls.data import binary_task
    from ..textcls.prepare import Prepared, prepare_encoder

    encoder = prepare_encoder(config, cache_dir, progress)
    task = binary_task(encoder.texts, config.minority)
    if config.max_train:
        task = _limit_training(task, config.max_train)
    for split, (_, positives) in task.counts().items():
        if positives < 1:
            raise ValueError(
                f"the {split} split has no {config.minority!r} example; choose another --minority"
            )
    return Prepared(encoder, task)


def _limit_training(task: Any, size: int) -> Any:
    """At most `size` training rows: every minority row, and majority rows drawn with a fixed seed, in
    their original order."""
    train = task.splits["train"]
    minority = [i for i, (_, label) in enumerate(train) if label == 1]
    majority = [i for i, (_, label) in enumerate(train) if label == 0]
    drawn = random.Random(0).sample(majority, max(0, min(len(majority), size - len(minority))))
    kept = set(minority) | set(drawn)
    rows = [row for i, row in enumerate(train) if i in kept]
    return replace(task, splits={**task.splits, "train": rows})


def run_arm(
    config: ImbalancedConfig, prepared: Prepared, arm: str, seed: int, work_dir: Path, progress: Any
) -> dict:
    from ...hf import TrainerTricks
    from ...workbench.metrics import macro_f1
    from ...workbench.training import quiet_transformers
    from ..common import use_threads
    from ..textcls import metrics as M
    from ..textcls.model import build_classifier, fine_tune

    quiet_transformers()
    use_threads(config.threads)
    task, encoder = prepared.task, prepared.encoder
    counts = task.counts()
    objective, options = ARMS[arm]
    options = options(config, counts["train"])
    validation_texts, validation_labels = zip(*task.splits["validation"], strict=True)
    test_texts, test_labels = zip(*task.splits["test"], strict=True)
    model = build_classifier(
        encoder.tokenizer, config, 2, pretrained=encoder.pretrained, pooling=config.pooling, seed=seed
    ).to(config.device)
    epochs: list[dict] = []

    def evaluate(epoch: int, predict: Any) -> None:
        scores = predict(validation_texts)[:, 1]
        epochs.append(
            {
                "epoch": epoch,
                "validation_minority_f1": M.f1_score((scores > 0.5).long(), validation_labels),
                "validation_pr_auc": M.average_precision(scores, validation_labels),
            }
        )
        progress.write(epoch_line(arm, seed, epochs[-1]))

    predict = fine_tune(
        model,
        encoder.tokenizer,
        task.splits["train"],
        objective=objective,
        options=options,
        tricks=TrainerTricks(),
        config=config,
        seed=seed,
        output_dir=work_dir / "trainer",
        on_epoch_end=evaluate,
    )
    validation_scores = predict(validation_texts)[:, 1]
    test_probabilities = predict(test_texts)
    test_scores = test_probabilities[:, 1]
    default = (test_scores > 0.5).long()  # argmax of two classes (a tie goes to the majority)
    threshold, validation_tuned_f1 = M.best_threshold(validation_scores, validation_labels)
    tuned = (test_scores >= threshold).long()
    curve = M.precision_recall_curve(test_scores, test_labels)
    positives = sum(test_labels)
    return {
        "objective": objective,
        "options": options,
        # the per-class weights trained with ([] for none); results saved before weighted_ce was
        # cross_entropy(weight=) lack it, so they are run again rather than reported as this arm
        "class_weights": options.get("weight", []),
        "counts": counts,
        "minority_f1": M.f1_score(default, test_labels),
        "pr_auc": M.average_precision(test_scores, test_labels),
        "macro_f1": macro_f1(default, test_labels, classes=range(2)),
        "minority_f1_tuned": M.f1_score(tuned, test_labels),
        "tuned_threshold": threshold,
        "validation_f1_at_tuned_threshold": validation_tuned_f1,
        "precision": _precision(default, test_labels),
        "recall": sum(int(p) * y for p, y in zip(default.tolist(), test_labels, strict=True)) / positives,
        "predicted_positive_rate": float(default.float().mean()),
        "mean_minority_probability": float(test_scores.mean()),
        "pr_curve": [[r, _interpolated_precision(curve, r)] for r in RECALL_GRID],
        "f1_by_threshold": [[t, M.f1_score((test_scores >= t).long(), test_labels)] for t in THRESHOLD_GRID],
        "epochs": epochs,
    }


def _precision(predicted: Any, labels: Any) -> float:
    predicted = predicted.tolist()
    chosen = sum(predicted)
    return sum(p * y for p, y in zip(predicted, labels, strict=True)) / chosen if chosen else 0.0


def _interpolated_precision(curve: list[tuple[float, float, float]], recall: float) -> float:
    """The highest precision at a recall of at least `recall` (the usual interpolation for plotting)."""
    return max((p for _, p, r in curve if r >= recall - 1e-12), default=0.0)


def _report(config: ImbalancedConfig, results: list, report_dir: Path) -> str:
    from .report import write_report

    return write_report(config, results, report_dir)


IMBALANCED = register(
    Experiment(
        name="imbalanced",
        summary="cross-entropy vs class-weighted CE vs focal vs dice with a 1-5% minority class",
        config_class=ImbalancedConfig,
        prepare=prepare,
        run_arm=run_arm,
        report=_report,
        result_fields=(
            "objective",
            "class_weights",
            "counts",
            "minority_f1",
            "pr_auc",
            "macro_f1",
            "predicted_positive_rate",
        ),
    )
)
