"""The output layer's input, read during the model's own forward, so that a fused-linear loss scores the last
hidden states and the (tokens x vocabulary) logits are never produced.

``with OutputLayerCapture(model) as captured: outputs = model(**inputs)`` runs the model's own forward (so
DDP, FSDP2 and PEFT wrappers stay in the path) with two forward hooks on its output layer
(``get_output_embeddings()``): one keeps the layer's input, what the layer multiplies by ``weight.T``, with
the weight and bias it is about to use; the other hands the layer an empty slice of that input, so it returns
(B, 0, V) logits. This works whether or not the model takes ``logits_to_keep``, and whatever it does to the
hidden states before the layer (T5 scales them by ``d_model ** -0.5`` when its embeddings are tied).

The fused loss equals the logits path's only when the logits *are* ``hidden @ weight.T + bias``. So the
layer must be a plain `nn.Linear` (a PEFT ``modules_to_save`` copy of one is fine; a LoRA adapter on it is
refused: the adapter would never train), and the model must not change the logits after the layer: configs
that do (soft-capping, logit scales) are refused, and the first captured forward of each model is a probe
that lets one position per row through and checks that the model's logits are exactly ``hidden @ weight.T +
bias`` there (which also catches a forward hook that changes the layer's output).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tricks.models import unwrap

# config attributes under which architectures change the logits after the output layer (soft-capping, scales)
LOGIT_POSTPROCESSING = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


@dataclass
class OutputLayerInput:
    """What the output layer was about to compute: ``logits = hidden @ weight.T + bias``.

    hidden: (..., N, H), the layer's input; weight: (V, H); bias: (V,) or None.
    """

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None


def output_layer(model: nn.Module) -> nn.Module:
    """The module that produces ``model``'s logits (`get_output_embeddings()`), checked to compute exactly
    ``x @ weight.T + bias`` with its ``weight`` and ``bias``: an `nn.Linear`, or PEFT's ``modules_to_save``
    wrapper around one (whose ``weight`` is the active trainable copy's).

    Raises ValueError (saying what to do instead) for a model without output embeddings, a LoRA adapter on
    the output layer, an output layer that is not a plain `nn.Linear`, and a config that post-processes the
    logits.
    """
    inner = unwrap(model)
    layer = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if layer is None:
        raise ValueError(
            f"{type(inner).__name__} has no output embeddings (get_output_embeddings() is None): there is no "
            "output layer to fuse with the loss; use fused=False"
        )
    computing = _computing_module(layer)
    if _is_peft_adapter(computing):
        raise ValueError(
            "a PEFT adapter is on the output layer: the fused loss multiplies by the layer's base weight, so "
            "the adapter would never train. Remove the output layer (e.g. 'lm_head') from target_modules, "
            "train it fully with modules_to_save=['lm_head'], or use fused=False"
        )
    if not isinstance(computing, nn.Linear) or type(computing).forward is not nn.Linear.forward:
        raise ValueError(
            f"the output layer is a {type(computing).__name__}, not a plain torch.nn.Linear: its output is "
            "not known to be hidden @ weight.T + bias, so the fused loss could differ; use fused=False"
        )
    config = getattr(inner, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in LOGIT_POSTPROCESSING:
        value = getattr(text_config, name, None)
        if value is not None and value != 1:  # 1 (Granite's default logits_scaling, say) changes nothing
            raise ValueError(
                f"the model's config sets {name}={value!r}: it changes the logits after the output layer, "
                "which the fused loss does not reproduce; use fused=False"
            )
    return layer


class OutputLayerCapture:
    """Context manager: while open, the forward passes of ``model`` keep the output layer's input (see the
    module docstring) and produce no logits. ``captured`` is the last forward's `OutputLayerInput`.

    probe: let one position per row through and have `check` compare the model's logits with the layer's
    output (done once per model by `TrainerLoss`).
    """

    def __init__(self, model: nn.Module, *, probe: bool = False) -> None:
        self.model = model
        self.layer = output_layer(model)
        self.probe = probe
        self.captured: OutputLayerInput | None = None
        self._calls = 0
        self._probe_output: Tensor | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> OutputLayerCapture:
        self._handles = [
            self.layer.register_forward_pre_hook(self._keep_input),
            self.layer.register_forward_hook(self._keep_output),
        ]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _keep_input(self, layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        (hidden,) = args
        if hidden.dim() < 2:
            raise ValueError(
                f"the output layer's input has shape {tuple(hidden.shape)}, expected (..., N, H)"
            )
        self._calls += 1
        self.captured = OutputLayerInput(hidden, layer.weight, layer.bias)
        return (hidden[..., : 1 if self.probe else 0, :],)

    def _keep_output(self, layer: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
        if self.probe:  # what the fused loss computes, under the forward's own autocast state
            weight, bias = self.captured.weight, self.captured.bias
            self._probe_output = F.linear(args[0], weight, bias).detach()

    def result(self, outputs: Any) -> OutputLayerInput:
        """The captured input of the forward that returned ``outputs``; checks the probe if one ran."""
        if self._calls == 0 and _compiled(self.model):
            raise ValueError(
                "the torch.compile'd model ran a graph compiled without tunekit's hooks on its output layer "
                "(by an earlier call through the logits, of this model or another of its class: "
                "torch.compile does not recompile for hooks added later): compile the model after its "
                "first fused step, call torch._dynamo.reset() first, or use fused=False"
            )
        if self._calls != 1 or self.captured is None:
            raise ValueError(
                f"the output layer ran {self._calls} times in one forward, expected once: the model does not "
                "compute its logits with its output embeddings alone; use fused=False"
            )
        self._calls = 0
        if self.probe:
            self._check_probe(outputs)
        return self.captured

    def _check_probe(self, outputs: Any) -> None:
        logits = outputs.get("logits") if hasattr(outputs, "get") else None
        expected = self._probe_output
        if (
            not isinstance(logits, Tensor)
            or logits.shape != expected.shape
            or not torch.equal(logits.detach().to(expected.dtype), expected)
        ):
            raise ValueError(
                "the model's logits are not hidden @ weight.T + bias of its output layer's input (a "
                "soft-cap, a scale, a bias such as final_logits_bias, a forward hook on the layer): the "
                "fused loss would differ from the logits path; use fused=False"
            )


def _compiled(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_orig_mod", None), nn.Module)


def _computing_module(layer: nn.Module) -> nn.Module:
    """The module that runs when ``layer`` is called: for PEFT's ``modules_to_save`` wrapper, the active copy
    (or the original module when adapters are disabled)."""
    try:
        from peft.utils.other import ModulesToSaveWrapper
    except ImportError:
        return layer
    if not isinstance(layer, ModulesToSaveWrapper):
        return layer
    if layer.disable_adapters or not layer.active_adapters:
        return layer.original_module
    return layer.modules_to_save[layer.active_adapters[0]]


def _is_peft_adapter(layer: nn.Module) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # without peft no layer can be an adapter
        return False
    return isinstance(layer, BaseTunerLayer)
