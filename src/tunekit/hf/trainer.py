"""The tricks inside the Hugging Face Trainer: EMA, FGM / PGD, R-Drop, layer-wise LR decay, DeCE's epoch.

``TunekitTrainer(model, args, ..., compute_loss_func=TrainerLoss(...), tricks=TrainerTricks(...))`` is a
`transformers.Trainer`; `TunekitTrainerMixin` adds the same to any Trainer subclass (``Seq2SeqTrainer``,
TRL's trainers)::

    class MyTrainer(TunekitTrainerMixin, SomeTrainer): ...

Where each trick hooks in:

- EMA: averaged after every optimizer step (a callback's ``on_step_end``); ``evaluate`` / ``predict`` run on
  the averages with ``ema_evaluate``; with ``ema_save`` the saved models (checkpoints and `save_model`) hold
  the averages, and each checkpoint also keeps the training weights and the EMA state, so that
  ``train(resume_from_checkpoint=...)`` continues exactly.
- FGM / PGD: ``training_step`` runs the clean pass, then the attack's passes on the same micro-batch.
- R-Drop: the micro-batch is repeated in one forward pass and `TrainerLoss.compute` adds the KL.
- layer-wise LR decay: ``create_optimizer`` builds `layer_decay_param_groups` for the configured optimizer.
- BAdam: ``create_optimizer`` wraps the optimizer the Trainer builds (layer decay's included) in
  `tunekit.tricks.BlockOptimizer`; its schedule is in the checkpoint's ``optimizer.pt``, so a resume continues
  mid-block. Under DDP the active block's gradients are averaged by it after the last micro-batch's backward,
  before clipping; DDP needs ``find_unused_parameters`` (the default without activation checkpointing, else
  set ``ddp_find_unused_parameters=True``): the frozen blocks get no gradient. Not with FSDP or DeepSpeed
  (refused), nor with FGM / PGD unless the embeddings are trained at every step
  (``outside_layers="trainable"``): the attack follows the embeddings' gradient.
- DeCE: the objective's epoch (counted from 1) follows the Trainer's before every step.

With a `TrainerLoss` the mixin runs the model itself (`TrainerLoss.compute`): the fused path when the loss is
``fused=True``, except in an evaluation that needs the logits as predictions (``compute_metrics``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
import transformers
from accelerate.utils import DistributedType
from torch import Tensor, nn

from ..tricks import EMA, BlockOptimizer, layer_decay_param_groups
from ..tricks.adversarial import FGM, PGD
from ..tricks.models import unwrap
from .loss_func import ModelLoss, TrainerLoss
from .trainer_tricks import TrainerTricks

# next to the model in every checkpoint: the EMA state, and the training weights when the model files hold
# the averages
STATE_FILE = "tunekit_trainer_state.pt"


class TunekitTrainerMixin:
    """Adds `TrainerTricks` to a `transformers.Trainer` subclass; put it first among the bases."""

    # TRL's SFTTrainer deprecates compute_loss_func and runs a second forward for it: it does not get it
    _hands_loss_func_to_parent = True
    # a trainer that logs the entropy and top-1 accuracy of each batch (`_record_batch`) has them recorded
    _records_token_statistics = False

    def __init__(
        self,
        *args: Any,
        tricks: TrainerTricks | None = None,
        compute_loss_func: Callable[..., Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        if self._hands_loss_func_to_parent:
            kwargs["compute_loss_func"] = compute_loss_func
        super().__init__(*args, **kwargs)
        self.compute_loss_func = compute_loss_func
        self.tricks = TrainerTricks() if tricks is None else tricks
        if not isinstance(self.tricks, TrainerTricks):
            raise ValueError(f"tricks must be a TrainerTricks, got {type(self.tricks).__name__}")
        if self.tricks.rdrop_weight > 0 and not isinstance(self.compute_loss_func, TrainerLoss):
            raise ValueError(
                "R-Drop needs compute_loss_func=TrainerLoss(objective, task=...) to score both passes, "
                f"got compute_loss_func={self.compute_loss_func!r}"
            )
        self.ema: EMA | None = None
        self.adversarial: FGM | PGD | None = None
        self._pending_ema_state: dict[str, Any] | None = None
        self._logits_wanted = False  # an evaluation step that returns predictions
        if self.tricks.ema_decay is not None:
            self.add_callback(_EMACallback(self))

    # ---- training ----

    def training_step(
        self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch: Tensor | int | None = None
    ) -> Tensor:
        if hasattr(self.compute_loss_func, "set_epoch"):  # DeCE's epoch, counted from 1
            self.compute_loss_func.set_epoch(math.floor(self.state.epoch or 0) + 1)
        if self.tricks.adversarial is None:
            loss = super().training_step(model, inputs, num_items_in_batch)
            self._after_backward()
            return loss
        if self.adversarial is None:
            self.adversarial = self._make_adversarial(model)
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)

        def scaled_loss() -> Tensor:  # compute_loss pops the labels: each pass gets its own dict
            with self.compute_loss_context_manager():
                loss = self.compute_loss(model, dict(inputs), num_items_in_batch=num_items_in_batch)
            return self._scale_for_accumulation(loss, num_items_in_batch)

        def attack_loss() -> Tensor:  # the attack's passes: the same micro-batch, logged once
            with self._extra_pass():
                return scaled_loss()

        loss = scaled_loss()
        self.adversarial.step(loss, attack_loss, backward=self._backward)
        self._after_backward()
        return loss.detach()

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        loss_func = self.compute_loss_func
        if not isinstance(loss_func, TrainerLoss):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        result = loss_func.compute(
            model,
            inputs,
            num_items_in_batch,
            # both dropout passes in one forward over the batch repeated, as the paper does
            rdrop_weight=self.tricks.rdrop_weight if model.training else 0.0,
            logits=self._logits_wanted,
            token_statistics=self._records_token_statistics,
        )
        self._record_batch(result, inputs)
        loss = result.loss
        # as Trainer.compute_loss: the loss is divided by the global item count and DDP averages gradients
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            tp_size = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            loss = loss * (
                self.accelerator.num_processes // tp_size if self.args.n_gpu <= 1 else self.args.n_gpu
            )
        return (loss, result.outputs) if return_outputs else loss

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        self._logits_wanted = not prediction_loss_only  # predictions are the logits: no fused path
        try:
            return super().prediction_step(
                model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **kwargs
            )
        finally:
            self._logits_wanted = False

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        optimizer = self._create_base_optimizer(model)
        # a second train() finds its own optimizer, inside accelerate's wrapper
        if not self.tricks.badam or isinstance(getattr(optimizer, "optimizer", optimizer), BlockOptimizer):
            return optimizer
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError(
                "BAdam (badam=True) trains on one process or under DDP; FSDP and DeepSpeed shard the "
                "parameters it freezes and unfreezes"
            )
        self.optimizer = BlockOptimizer(
            self.model if model is None else model,
            optimizer,
            switch_every=self.tricks.switch_every,
            order=self.tricks.block_order,
            outside_layers=self.tricks.outside_layers,
            seed=self.args.seed,
        )
        return self.optimizer

    def _create_base_optimizer(self, model: nn.Module | None) -> torch.optim.Optimizer:
        """The Trainer's optimizer, over `layer_decay_param_groups` with layer decay."""
        if self.tricks.layer_decay is None or self.optimizer is not None:
            return super().create_optimizer(model)
        opt_model = self.model if model is None else model
        groups = layer_decay_param_groups(
            opt_model,
            self.args.learning_rate,
            self.tricks.layer_decay,
            weight_decay=self.args.weight_decay,
            head_lr=self.tricks.head_lr,
        )
        for group in groups:  # optimizers keep unknown keys; "layer" is only informative
            del group["layer"]
        if self.optimizer_cls_and_kwargs is not None:
            optimizer_cls, optimizer_kwargs = self.optimizer_cls_and_kwargs
        else:
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
        # each group's own lr overrides the default in optimizer_kwargs
        self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    # ---- evaluation and saving with the averages ----

    def evaluate(self, *args: Any, **kwargs: Any) -> dict[str, float]:
        with self.averaged_weights(self.tricks.ema_evaluate):
            return super().evaluate(*args, **kwargs)

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        with self.averaged_weights(self.tricks.ema_evaluate):
            return super().predict(*args, **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        output_dir = self.args.output_dir if output_dir is None else output_dir
        with self.averaged_weights(self.tricks.ema_save):
            super().save_model(output_dir, _internal_call)
        if _internal_call and self.ema is not None and self.args.should_save:  # a checkpoint
            state = {"ema": self.ema.state_dict()}
            if self.tricks.ema_save:
                state["training_weights"] = unwrap(self.model).state_dict()
            torch.save(state, os.path.join(output_dir, STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if self.tricks.ema_decay is None or not os.path.isfile(path):
            return
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "training_weights" in state:  # the model files hold the averages
            unwrap(self.model if model is None else model).load_state_dict(state["training_weights"])
        self._pending_ema_state = state["ema"]

    # ---- helpers ----

    def _after_backward(self) -> None:
        """After each micro-batch's backward: with BAdam, the last one's gradients averaged over the processes
        (DDP registered only the first block's parameters), before the Trainer clips them."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)  # inside accelerate's wrapper
        if isinstance(optimizer, BlockOptimizer) and self.accelerator.sync_gradients:
            optimizer.average_gradients()

    def _record_batch(self, result: ModelLoss, inputs: dict[str, Any]) -> None:
        """Called with each micro-batch's `TrainerLoss` result (not the attack's extra passes): a trainer
        that logs metrics of its own (`TunekitSFTTrainer`) computes them here."""

    @contextlib.contextmanager
    def _extra_pass(self) -> Iterator[None]:
        """Around a pass over a micro-batch already seen (FGM / PGD): metrics it records are dropped."""
        yield

    @contextlib.contextmanager
    def averaged_weights(self, wanted: bool = True) -> Iterator[None]:
        """Inside, the model holds the EMA averages (when there is an EMA and ``wanted``); its training
        weights are back afterwards."""
        if not wanted or self.ema is None:
            yield
            return
        with self.ema.average_parameters(self.model):
            yield

    def _start_ema(self) -> None:
        if self.ema is None:
            self.ema = EMA(
                self.model,
                self.tricks.ema_decay,
                warmup=self.tricks.ema_warmup,
                update_after_step=self.tricks.ema_update_after_step,
            )
        if self._pending_ema_state is not None:
            self.ema.load_state_dict(self._pending_ema_state)
            self._pending_ema_state = None

    def _make_adversarial(self, model: nn.Module) -> FGM | PGD:
        names = self.tricks.adversarial_param_names
        if self.tricks.adversarial == "fgm":
            return FGM(model, self.tricks.adversarial_epsilon, param_names=names)
        return PGD(
            model,
            self.tricks.adversarial_epsilon,
            self.tricks.pgd_step_size,
            self.tricks.pgd_steps,
            param_names=names,
        )

    def _scale_for_accumulation(self, loss: Tensor, num_items_in_batch: Tensor | int | None) -> Tensor:
        """The scaling `Trainer.training_step` applies before backward (one place for the attack's passes)."""
        if self.args.n_gpu > 1:
            loss = loss.mean()
        scaled = getattr(self, "loss_is_scaled_for_ga", None)  # transformers >= 5
        if scaled is None:
            scaled = (
                self.model_accepts_loss_kwargs and num_items_in_batch is not None
            ) or self.compute_loss_func is not None
        steps = getattr(self, "current_gradient_accumulation_steps", self.args.gradient_accumulation_steps)
        return loss if scaled else loss / steps

    def _backward(self, loss: Tensor) -> None:
        kwargs = {}
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            kwargs["scale_wrt_gas"] = False
        self.accelerator.backward(loss, **kwargs)


class TunekitTrainer(TunekitTrainerMixin, transformers.Trainer):
    """`transformers.Trainer` with `TrainerTricks` (see the module docstring)."""


class TunekitSeq2SeqTrainer(TunekitTrainerMixin, transformers.Seq2SeqTrainer):
    """`transformers.Seq2SeqTrainer` with `TrainerTricks`.

    With ``predict_with_generate`` the Seq2SeqTrainer scores the evaluation batch with the model's own loss;
    with a `TrainerLoss` its loss is used instead (one more forward pass, beside the generation).
    """

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> Any:
        loss, tokens, labels = super().prediction_step(
            model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs
        )
        generated = self.args.predict_with_generate and not prediction_loss_only
        if generated and loss is not None and isinstance(self.compute_loss_func, TrainerLoss):
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, self._prepare_inputs(inputs)).detach().mean()
        return loss, tokens, labels


class _EMACallback(transformers.TrainerCallback):
    """Starts the EMA once the model is in place (after a resumed checkpoint is loaded) and updates it after
    every optimizer step."""

    def __init__(self, trainer: TunekitTrainerMixin) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        self.trainer._start_ema()

    def on_step_end(self, args, state, control, **kwargs):
        self.trainer.ema.update(self.trainer.model)
