"""Exponential moving average of a model's weights (Polyak averaging), for evaluation and saving.

After every optimizer step, ``ema.update(model)`` moves each average towards the current weights::

    average = decay_t * average + (1 - decay_t) * weight          # torch._foreach_lerp_, per dtype group
    decay_t = min(decay, max(min_decay, 1 - (1 + k / warmup_gamma) ** -warmup_power))   # with warm-up
    decay_t = decay                                                                      # without

where k counts the updates since ``update_after_step`` (timm's ModelEmaV3 and ema-pytorch use this warm-up:
early averages follow the fast-moving weights closely, later ones average over ~1 / (1 - decay) steps).
Floating-point parameters and buffers (batch-norm statistics) are averaged, integer buffers
(``num_batches_tracked``) copied. Averages of fp16/bf16 weights are kept in fp32: in bf16 a 1e-4 step is
below the rounding of the average and would be lost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_count, check_flag, check_fraction, check_non_negative
from .models import unwrap


class EMA:
    """Moving averages of a model's floating-point parameters and buffers.

    Args:
        model: the model being trained (DDP / DataParallel wrappers are looked through). Its tensors at
            construction are the first averages.
        decay: the largest decay, in [0, 1).
        warmup: use the warm-up schedule above; False applies ``decay`` from the first update.
        warmup_gamma: the schedule's gamma > 0 (timm's default, 1).
        warmup_power: the schedule's power > 0 (timm's default, 2/3; ema-pytorch suggests 3/4 for short
            runs).
        min_decay: the smallest decay, in [0, decay].
        update_after_step: for the first this many updates the averages copy the weights.
        update_every: average only every this many calls to `update` (fewer passes over the weights).
        trainable_only: track only the parameters that require grad at construction (and the buffers): no
            copy of a frozen base. Freezing a tracked parameter later keeps it tracked.

    Example::

        >>> import torch
        >>> model = torch.nn.Linear(2, 1)
        >>> ema = EMA(model, decay=0.9, warmup=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.add_(1.0)
        >>> ema.update(model)
        >>> with ema.average_parameters(model):
        ...     averaged = model.weight.clone()   # weights at construction + 0.1
        >>> torch.allclose(averaged, model.weight - 0.9)
        True
    """

    @staticmethod
    def check_options(
        *,
        decay: float = 0.9999,
        warmup: bool = True,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
        min_decay: float = 0.0,
        update_after_step: int = 0,
        update_every: int = 1,
        trainable_only: bool = False,
    ) -> None:
        """ValueError naming the first option the constructor would refuse (`tunekit.hf.TrainerTricks`
        checks its EMA options here, before there is a model)."""
        check_fraction("decay", decay, zero_ok=True, one_ok=False)
        check_fraction("min_decay", min_decay, zero_ok=True, one_ok=False)
        if min_decay > decay:
            raise ValueError(f"min_decay must be <= decay={decay}, got {min_decay!r}")
        check_non_negative("warmup_gamma", warmup_gamma, positive=True)
        check_non_negative("warmup_power", warmup_power, positive=True)
        check_count("update_after_step", update_after_step, minimum=0)
        check_count("update_every", update_every, minimum=1)
        check_flag("warmup", warmup)
        check_flag("trainable_only", trainable_only)

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        *,
        warmup: bool = True,
        warmup_gamma: float = 1.0,
        warmup_power: float = 2 / 3,
        min_decay: float = 0.0,
        update_after_step: int = 0,
        update_every: int = 1,
        trainable_only: bool = False,
    ) -> None:
        self.check_options(
            decay=decay,
            warmup=warmup,
            warmup_gamma=warmup_gamma,
            warmup_power=warmup_power,
            min_decay=min_decay,
            update_after_step=update_after_step,
            update_every=update_every,
            trainable_only=trainable_only,
        )
        self.decay = decay
        self.warmup = warmup
        self.warmup_gamma = warmup_gamma
        self.warmup_power = warmup_power
        self.min_decay = min_decay
        self.update_after_step = update_after_step
        self.update_every = update_every
        self.trainable_only = trainable_only
        self.num_updates = 0  # calls to `update`
        self.averages: dict[str, Tensor] = {
            name: _average_storage(tensor) for name, tensor in self._tracked(model).items()
        }

    def current_decay(self) -> float:
        """The decay the latest call to `update` used, or would have used had `update_every` not skipped it
        (0 while the averages copy the weights)."""
        k = self.num_updates - self.update_after_step
        if k <= 0:
            return 0.0
        if not self.warmup:
            return self.decay
        value = 1 - (1 + k / self.warmup_gamma) ** -self.warmup_power
        return min(self.decay, max(self.min_decay, value))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Count one optimizer step and, every `update_every` steps, move the averages towards `model`."""
        self.num_updates += 1
        if self.num_updates % self.update_every != 0 and self.num_updates > self.update_after_step:
            return
        tracked = self._tracked(model)
        decay = self.current_decay()
        groups: dict[torch.dtype, tuple[list[Tensor], list[Tensor]]] = {}
        for name, average in self.averages.items():
            current = tracked[name]
            if not average.is_floating_point():
                average.copy_(current)
                continue
            averages, currents = groups.setdefault(average.dtype, ([], []))
            averages.append(average)
            currents.append(current.to(average.dtype))
        for averages, currents in groups.values():
            if decay == 0.0:  # the copy phase: exact, where lerp with weight 1 may round
                torch._foreach_copy_(averages, currents)
            else:  # lerp(a, w, 1 - decay) = decay * a + (1 - decay) * w
                torch._foreach_lerp_(averages, currents, 1.0 - decay)

    @contextlib.contextmanager
    def average_parameters(self, model: nn.Module) -> Iterator[nn.Module]:
        """Put the averages into `model` in place (the same Parameter objects, so optimizers, DDP and hooks
        stay valid) and restore the training weights on exit, bit for bit, exceptions included."""
        tracked = self._tracked(model)
        backup = {name: tracked[name].detach().clone() for name in self.averages}
        try:
            self.copy_to(model)
            yield model
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    tracked[name].copy_(saved)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite `model`'s weights with the averages for good (e.g. before `save_pretrained`)."""
        tracked = self._tracked(model)
        for name, average in self.averages.items():
            tracked[name].copy_(average)

    def state_dict(self) -> dict[str, Any]:
        """The averages and the update count: `load_state_dict` resumes the schedule exactly.

        Like `nn.Module.state_dict`, it holds the live averages, not copies: save it (or clone it) before
        the next `update`."""
        return {"num_updates": self.num_updates, "averages": dict(self.averages)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Load a `state_dict`; a state that does not match this EMA's tensors raises and changes nothing."""
        if not isinstance(state, dict) or not {"averages", "num_updates"} <= set(state):
            keys = list(state)[:5] if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"an EMA state is a dict with 'averages' and 'num_updates', got {keys}")
        averages = state["averages"]
        missing, unexpected = set(self.averages) - set(averages), set(averages) - set(self.averages)
        if missing or unexpected:
            raise ValueError(
                f"EMA state does not match the model: missing {sorted(missing)}, "
                f"unexpected {sorted(unexpected)}"
            )
        for name, average in averages.items():
            if average.shape != self.averages[name].shape:
                raise ValueError(
                    f"EMA state for {name!r} has shape {tuple(average.shape)}, "
                    f"the model's is {tuple(self.averages[name].shape)}"
                )
        for name, average in averages.items():
            self.averages[name].copy_(average)
        self.num_updates = int(state["num_updates"])

    def _tracked(self, model: nn.Module) -> dict[str, Tensor]:
        """Name -> the model's own tensor, for every averaged parameter and buffer (which ones is decided at
        construction: `trainable_only` filters then, so a parameter frozen later stays averaged)."""
        model = unwrap(model)
        choosing = not hasattr(self, "averages")
        tensors = {
            name: param.data
            for name, param in model.named_parameters()
            if param.is_floating_point() and (param.requires_grad or not (choosing and self.trainable_only))
        }
        tensors.update(dict(model.named_buffers()))
        if hasattr(self, "averages") and set(self.averages) - set(tensors):
            raise ValueError(
                "the model lacks tensors this EMA averages: "
                f"{sorted(set(self.averages) - set(tensors))[:5]}; is it the model the EMA was built from?"
            )
        return tensors


def _average_storage(tensor: Tensor) -> Tensor:
    """A detached copy that accumulates the average: fp32 for low-precision floats, same dtype otherwise."""
    if tensor.is_floating_point() and torch.finfo(tensor.dtype).bits < 32:
        return tensor.detach().to(torch.float32, copy=True)
    return tensor.detach().clone()
