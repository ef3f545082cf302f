"""TRL's `SFTTrainer` with tunekit's objectives and tricks: `TunekitSFTTrainer`. Needs the ``trl`` extra.

``TunekitSFTTrainer(model, args=SFTConfig(...), train_dataset=..., compute_loss_func=TrainerLoss("dece",
task="causal_lm", fused=True), tricks=TrainerTricks(...))`` trains like `trl.SFTTrainer` (its datasets,
collators, completion-only and assistant-only losses, packing, padding-free batches) with the loss computed
by `TrainerLoss.compute` in one forward pass per micro-batch. SFTTrainer's own route for a
``compute_loss_func`` (deprecated in TRL) runs a second, no-grad forward for its metrics; here the metrics
come from the same pass:

- ``entropy`` and ``mean_token_accuracy``: of the model's distribution at the supervised positions,
  recorded by the objective during its own chunked pass (`tunekit.losses.recording_token_statistics`), so
  the fused path neither materialises the logits nor multiplies by the output layer a second time;
- ``num_tokens``: the batch's tokens, counted once per micro-batch: FGM / PGD's extra passes and R-Drop's
  repeated batch add nothing.

Without a `TrainerLoss` the trainer is SFTTrainer (its own fused loss) with the tricks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

try:
    import trl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("TunekitSFTTrainer needs TRL: pip install 'tunekit[trl]'") from error
from torch import Tensor

from .loss_func import ModelLoss, TrainerLoss
from .trainer import TunekitTrainerMixin


class TunekitSFTTrainer(TunekitTrainerMixin, trl.SFTTrainer):
    """`trl.SFTTrainer` with `TrainerTricks` and a `TrainerLoss` (see the module docstring).

    ``compute_loss_func`` must be a `TrainerLoss` with ``task="causal_lm"`` (or None for SFTTrainer's own
    loss); it is not handed to SFTTrainer, whose route for it is deprecated and runs two forward passes.
    """

    _hands_loss_func_to_parent = False
    _records_token_statistics = True

    def __init__(self, *args: Any, compute_loss_func: TrainerLoss | None = None, **kwargs: Any) -> None:
        if compute_loss_func is not None:
            if not isinstance(compute_loss_func, TrainerLoss):
                raise ValueError(
                    "TunekitSFTTrainer takes compute_loss_func=TrainerLoss(objective, task='causal_lm'), got "
                    f"{compute_loss_func!r}; for another loss, subclass SFTTrainer and override compute_loss"
                )
            if compute_loss_func.task != "causal_lm":
                raise ValueError(
                    f"SFTTrainer trains causal LMs: TrainerLoss(task='causal_lm'), got {compute_loss_func!r}"
                )
        super().__init__(*args, compute_loss_func=compute_loss_func, **kwargs)
        if compute_loss_func is not None and self.aux_loss_enabled:
            raise ValueError(
                "TrainerLoss does not add a mixture-of-experts router loss: set "
                "SFTConfig(router_aux_loss_coef=0) to train this model with it"
            )

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        if isinstance(self.compute_loss_func, TrainerLoss):
            inputs = {**inputs, "use_cache": False}  # as SFTTrainer: no cache in training forwards
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _record_batch(self, result: ModelLoss, inputs: dict[str, Any]) -> None:
        """SFTTrainer's metrics of this micro-batch, as its `compute_loss` records them."""
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        entropy, is_top1 = result.token_statistics(self.compute_loss_func.ignore_index)
        num_valid = gather((result.target != self.compute_loss_func.ignore_index).sum()).sum()
        entropy_sum = gather(entropy.sum()).sum()
        num_correct = gather(is_top1.sum()).sum()
        self._metrics[mode]["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append(
            (num_correct / num_valid).item() if num_valid > 0 else 0.0
        )
        if mode == "train":
            if "attention_mask" in inputs:
                num_tokens = gather(inputs["attention_mask"].sum()).sum().item()
            else:  # padding-free: one row of real tokens
                position_ids = inputs["position_ids"]
                num_tokens = gather(position_ids.new_tensor(position_ids.size(1))).sum().item()
            self._total_train_tokens += num_tokens // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    @contextlib.contextmanager
    def _extra_pass(self) -> Iterator[None]:
        mode = "train" if self.model.training else "eval"
        metrics = {key: list(values) for key, values in self._metrics[mode].items()}
        total = self._total_train_tokens
        try:
            yield
        finally:
            self._metrics[mode].clear()
            self._metrics[mode].update(metrics)
            self._total_train_tokens = total
