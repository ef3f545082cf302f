"""`tunekit run tricks`: which fine-tuning trick helps a small text classifier, and by how much.

The task (`tunekit.experiments.textcls.data.families_task`): from a standard-library function's first
docstring line, tell which of the `families` largest package families it comes from (tkinter, asyncio,
email, logging...). The same tiny BERT as `tunekit run imbalanced` (pre-trained with masked-language
modelling on the training texts, cached) is fine-tuned per arm and seed through `TunekitTrainer` with
cross-entropy; each arm adds one trick (`TrainerTricks`) or changes the pooling. Measured on the test split:
accuracy and macro-F1, mean ± standard deviation over seeds, and each arm's difference to the baseline
against that spread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from ...runs.config import check_arms, check_at_least, option
from ...runs.report import epoch_line
from ..runner import Experiment, register
from ..textcls.config import ClassifierConfig
from .arms import ARMS

if TYPE_CHECKING:  # at run time only inside prepare: importing textcls.prepare imports torch
    from ..textcls.prepare import Prepared

__all__ = ["TRICKS", "TricksConfig"]


@dataclass
class TricksConfig(ClassifierConfig):
    arms: tuple[str, ...] = option(tuple(ARMS), f"arms, of {tuple(ARMS)}", changes_results=False)
    families: int = option(8, "classes: the largest package families")
    # fewer training texts than `tunekit run imbalanced` (fewer steps per epoch): a higher rate and more
    # epochs, so that the baseline has converged and a trick is not judged on an under-trained model
    epochs: int = option(10, "fine-tuning epochs per arm")
    learning_rate: float = option(1e-3, "AdamW peak learning rate of the fine-tuning (linear decay)")
    ema_decay: float = option(0.99, "the ema arm's decay (timm's warm-up applies)")
    # TrainerTricks' defaults (1.0, 0.3) are sized for BERT-base's embeddings; on this 64-wide one they kept
    # the model at the majority class (measured: accuracy 0.29-0.32 with FGM, 0.27 with PGD)
    fgm_epsilon: float = option(0.1, "the fgm arm's perturbation norm on the input embeddings")
    pgd_epsilon: float = option(0.1, "the pgd arm's radius")
    pgd_step_size: float = option(0.03, "the pgd arm's step size")
    pgd_steps: int = option(3, "the pgd arm's steps")
    rdrop_weight: float = option(1.0, "the rdrop arm's KL weight")
    layer_decay: float = option(0.75, "the layer_decay arm's factor per layer (the head keeps the full rate)")

    QUICK: ClassVar[dict[str, Any]] = {**ClassifierConfig.QUICK, "families": 4, "pgd_steps": 2}

    def validate(self) -> None:
        super().validate()
        check_arms(self.arms, ARMS)
        check_at_least(self, ("families",), minimum=2)
        from ..._checks import check_fields, check_non_negative
        from ...tricks import EMA, FGM, PGD, check_layer_decay_options  # torch: only when validating

        # each arm's options in the trick's own ranges (its check_options), named as this config names them
        check_fields(EMA.check_options, self, {"ema_decay": "decay"})
        check_fields(FGM.check_options, self, {"fgm_epsilon": "epsilon"})
        pgd = {"pgd_epsilon": "epsilon", "pgd_step_size": "step_size", "pgd_steps": "steps"}
        check_fields(PGD.check_options, self, pgd)
        check_fields(check_layer_decay_options, self, {"layer_decay": "layer_decay"})
        check_non_negative("rdrop_weight", self.rdrop_weight)


def prepare(config: TricksConfig, cache_dir: Path, progress: Any) -> Prepared:
    from ..textcls.data import families_task
    from ..textcls.prepare import Prepared, prepare_encoder

    encoder = prepare_encoder(config, cache_dir, progress)
    return Prepared(encoder, families_task(encoder.texts, config.families))


def run_arm(
    config: TricksConfig, prepared: Prepared, arm: str, seed: int, work_dir: Path, progress: Any
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
    classes = len(task.label_names)
    tricks, pooling = ARMS[arm](config)
    validation_texts, validation_labels = zip(*task.splits["validation"], strict=True)
    test_texts, test_labels = zip(*task.splits["test"], strict=True)
    model = build_classifier(
        encoder.tokenizer, config, classes, pretrained=encoder.pretrained, pooling=pooling, seed=seed
    ).to(config.device)
    epochs: list[dict] = []

    def evaluate(epoch: int, predict: Any) -> None:
        predicted = predict(validation_texts).argmax(-1)
        epochs.append(
            {
                "epoch": epoch,
                "validation_accuracy": M.accuracy(predicted, validation_labels),
                "validation_macro_f1": macro_f1(predicted, validation_labels, classes=range(classes)),
            }
        )
        progress.write(epoch_line(arm, seed, epochs[-1]))

    predict = fine_tune(
        model,
        encoder.tokenizer,
        task.splits["train"],
        objective="cross_entropy",
        options={},
        tricks=TrainerTricks(**tricks),
        config=config,
        seed=seed,
        output_dir=work_dir / "trainer",
        on_epoch_end=evaluate,
    )
    predicted = predict(test_texts).argmax(-1)
    return {
        "tricks": tricks,
        "pooling": pooling,
        "classes": list(task.label_names),
        "counts": task.counts(),
        "accuracy": M.accuracy(predicted, test_labels),
        "macro_f1": macro_f1(predicted, test_labels, classes=range(classes)),
        "epochs": epochs,
    }


def _report(config: TricksConfig, results: list, report_dir: Path) -> str:
    from .report import write_report

    return write_report(config, results, report_dir)


TRICKS = register(
    Experiment(
        name="tricks",
        summary="EMA, FGM, PGD, R-Drop, layer-wise LR decay and mean pooling against a baseline classifier",
        config_class=TricksConfig,
        prepare=prepare,
        run_arm=run_arm,
        report=_report,
        result_fields=("tricks", "classes", "counts", "accuracy", "macro_f1", "epochs"),
    )
)
