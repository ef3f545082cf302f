"""`TrainerTricks`: which tricks `TunekitTrainerMixin` applies, one typed field each.

It imports neither the Trainer (the heavy part of transformers) nor TRL or PEFT, so a command line can read
its fields (their types, defaults and ``metadata["help"]``, as Hugging Face's ``TrainingArguments`` does)
cheaply: ``tunekit train`` turns each field into a flag. Each trick checks its own options
(`EMA.check_options`, `PGD.check_options`, ...): this class only names them after its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from .._checks import check_choice, check_fields, check_flag, check_non_negative
from ..tricks.adversarial import FGM, PGD
from ..tricks.block_optimizer import ORDERS, OUTSIDE_LAYERS, BlockOptimizer
from ..tricks.ema import EMA
from ..tricks.layer_decay import check_layer_decay_options

__all__ = ["TrainerTricks"]


def _option(default: Any, help: str, *, of: str | None = None) -> Any:
    """A field with its help text; ``of``: the switch it belongs to (`TrainerTricks.switches`)."""
    return field(default=default, metadata={"help": help, "of": of})


@dataclass
class TrainerTricks:
    """Which tricks `TunekitTrainerMixin` applies; the defaults apply none. Every field's help is in its
    ``metadata["help"]``; an option of a trick that is off is refused (it would change nothing)."""

    ema_decay: float | None = _option(None, "EMA of the weights with this decay, e.g. 0.999; none: no EMA")
    ema_warmup: bool = _option(True, "the EMA's decay warms up from 0 (tunekit.tricks.EMA)", of="ema_decay")
    ema_update_after_step: int = _option(0, "optimizer steps before averaging starts", of="ema_decay")
    ema_evaluate: bool = _option(True, "evaluate and predict with the averaged weights", of="ema_decay")
    ema_save: bool = _option(True, "checkpoints and save_model hold the averaged weights", of="ema_decay")
    adversarial: Literal["fgm", "pgd"] | None = _option(
        None, "adversarial training on the input embeddings: fgm or pgd; none: off"
    )
    adversarial_epsilon: float = _option(1.0, "FGM's perturbation norm / PGD's radius", of="adversarial")
    pgd_step_size: float = _option(0.3, "the size of each PGD step", of="adversarial")
    pgd_steps: int = _option(3, "PGD's number of steps", of="adversarial")
    adversarial_param_names: tuple[str, ...] | None = _option(
        None, "the embedding parameters to perturb, by name; none: get_input_embeddings()", of="adversarial"
    )
    rdrop_weight: float = _option(0.0, "weight of R-Drop's KL term between two dropout passes; 0: off")
    layer_decay: float | None = _option(None, "layer-wise learning-rate decay factor in (0, 1]; none: off")
    head_lr: float | None = _option(
        None, "the head's learning rate with layer decay; none: the Trainer's learning_rate", of="layer_decay"
    )
    badam: bool = _option(
        False,
        "BAdam: train one transformer layer at a time (tunekit.tricks.BlockOptimizer around the Trainer's "
        "optimizer), for the gradients and optimizer state of one layer",
    )
    switch_every: int = _option(50, "BAdam's optimizer steps per block", of="badam")
    block_order: Literal[ORDERS] = _option(
        "random",
        "BAdam's order of the blocks (random: a new permutation each round, seeded by the Trainer's seed)",
        of="badam",
    )
    outside_layers: Literal[OUTSIDE_LAYERS] = _option(
        "frozen",
        "BAdam's parameters outside the layers (embeddings, final norm, head)",
        of="badam",
    )

    def __post_init__(self) -> None:
        self._refuse_options_of_tricks_that_are_off()
        if self.ema_decay is not None:
            ema = {"ema_decay": "decay", "ema_warmup": "warmup", "ema_update_after_step": "update_after_step"}
            check_fields(EMA.check_options, self, ema)
        check_flag("ema_evaluate", self.ema_evaluate)
        check_flag("ema_save", self.ema_save)
        check_choice("adversarial", self.adversarial, (None, "fgm", "pgd"))
        if self.adversarial == "fgm":
            check_fields(FGM.check_options, self, {"adversarial_epsilon": "epsilon"})
        elif self.adversarial == "pgd":
            pgd = {"adversarial_epsilon": "epsilon", "pgd_step_size": "step_size", "pgd_steps": "steps"}
            check_fields(PGD.check_options, self, pgd)
        check_non_negative("rdrop_weight", self.rdrop_weight)
        if self.layer_decay is not None:
            check_fields(
                check_layer_decay_options, self, {"layer_decay": "layer_decay", "head_lr": "head_lr"}
            )
        check_flag("badam", self.badam)
        badam = {"switch_every": "switch_every", "block_order": "order", "outside_layers": "outside_layers"}
        check_fields(BlockOptimizer.check_options, self, badam)
        if self.badam and self.adversarial is not None and self.outside_layers != "trainable":
            raise ValueError(
                f"adversarial={self.adversarial!r} perturbs the input embeddings along their gradient, and "
                f"BAdam does not train them at every step (outside_layers={self.outside_layers!r}); set "
                "outside_layers='trainable', or train without the attack"
            )

    def _refuse_options_of_tricks_that_are_off(self) -> None:
        for f in fields(self):
            switch = f.metadata.get("of")
            if switch is None or getattr(self, switch) not in (None, False):
                continue
            if getattr(self, f.name) != f.default:
                raise ValueError(f"{f.name} is an option of {switch}, which is off: set {switch} too")
