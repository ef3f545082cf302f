"""The loss of a Hugging Face model on a batch, from any tunekit objective: `TrainerLoss`.

``TunekitTrainer(..., compute_loss_func=TrainerLoss("dece", task="causal_lm", fused=True))`` scores each
micro-batch with a registered objective instead of the model's built-in loss. The Trainer passes
``num_items_in_batch``, the number of supervised labels (``!= -100``) in the whole accumulated batch, summed
over processes with ``average_tokens_across_devices``; objectives that are sums over items divide by it, so
micro-batches of uneven sizes, gradient accumulation and several processes give exactly the loss and the
gradients of one big batch.

With ``fused=True`` (token objectives, causal LMs and seq2seq models) the model runs without producing its
logits: its output layer's input, the last hidden states, goes with the layer's weight and bias into the
objective's fused-linear form, and the (tokens x vocabulary) logits never exist (`output_layer.py`).
"""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_choice, check_flag, check_non_negative
from ..losses import (
    TokenStatistics,
    linear_rdrop_kl,
    linear_token_statistics,
    rdrop_kl,
    recording_token_statistics,
    token_statistics,
)
from ..losses.registry import (
    CLASSIFICATION_LOSSES,
    GENERATION_TASKS,
    SINGLE_LABEL,
    TASKS,
    TOKEN_LOSSES,
    TokenLossSpec,
    find_objective,
)
from ..tricks.models import unwrap
from .output_layer import OutputLayerCapture, OutputLayerInput

# batch fields of packed sequences (flash attention's varlen API) that describe the flattened tokens rather
# than one value per row: R-Drop's repeated batch extends them instead of repeating them
_CUMULATIVE_LENGTHS = ("cu_seq_lens_q", "cu_seq_lens_k")
_MAX_LENGTHS = ("max_length_q", "max_length_k")


@dataclass
class ModelLoss:
    """What `TrainerLoss.compute` returns.

    loss: the scalar loss (R-Drop's KL included).
    outputs: the model's outputs; in a fused step their logits are (B, 0, V).
    target: (B, N) the labels aligned with the scored positions (shifted for a causal LM), of the batch as
        given (the first pass under R-Drop).
    logits: (B, N, V) the scored logits (logits path), or None.
    head: the output layer's input, weight and bias (fused path), or None.
    statistics: what the objective recorded during its pass (``compute(token_statistics=True)``), or None.
    """

    loss: Tensor
    outputs: Any
    target: Tensor
    logits: Tensor | None = None
    head: OutputLayerInput | None = None
    statistics: TokenStatistics | None = None

    def token_statistics(self, ignore_index: int = -100) -> tuple[Tensor, Tensor]:
        """(entropy, is_top1) of the model's distribution at each target position (0 / False where
        ignored): recorded during the objective's pass, or else computed chunk by chunk from what was scored
        (`tunekit.losses.token_statistics`)."""
        if self.statistics is not None:
            return self.statistics.entropy, self.statistics.is_top1
        if self.head is not None:
            hidden = self.head.hidden[: self.target.shape[0]]
            weight = self.head.weight
            return linear_token_statistics(
                hidden.to(weight.dtype), weight, self.target, bias=self.head.bias, ignore_index=ignore_index
            )
        return token_statistics(self.logits[: self.target.shape[0]], self.target, ignore_index=ignore_index)


class TrainerLoss:
    """The loss of a model on a batch with a tunekit objective; a Trainer ``compute_loss_func``.

    The target is aligned with the logits (B, N, V) / (B, C) by task:

    - "causal_lm": position i predicts label i + 1, so ``target = labels[:, 1:]`` padded with -100 at the
      end (nothing is copied); the Trainer counts ``n`` over ``labels[:, 1:]`` for causal LMs. A batch with
      ``shift_labels`` (context parallelism: labels already shifted, then sharded along the sequence) is
      scored against them as they are.
    - "seq2seq", "token_classification": ``target = labels`` (B, N).
    - "sequence_classification": ``target = labels`` of the objective's problem type: (B,) class ids,
      (B, C) 0/1 labels, or (B,) / (B, 1) regression targets.

    Objectives that are a statistic of the whole batch (dice, correlation; ``per_item=False`` in the
    registry) cannot be split over micro-batches exactly; each micro-batch's value is weighted by its share
    of the labels, ``loss * local_items / n``, so the accumulated loss is their label-weighted mean.

    Objectives that score whole sequences (SMILE; ``uses_position_ids`` in the registry) get the batch's
    ``position_ids``: in a packed or padding-free batch (several sequences per row, position ids restarting
    at 0) each packed sequence is scored apart, exactly as if it had a row of its own.

    Args:
        objective: a name in `TOKEN_LOSSES` or `CLASSIFICATION_LOSSES` (built with ``**kwargs``), a tunekit
            loss module, or any loss module / function ``(logits, target[, num_items_in_batch=])``.
        task: one of `tunekit.losses.registry.TASKS`.
        fused: score the output layer's input with the objective's fused-linear form, never producing the
            logits; token objectives and tasks "causal_lm" / "seq2seq" only. The output layer then runs in
            its weight's dtype, outside autocast. Needs `compute` (the tunekit trainers call it).
        per_item: for an objective that is not a tunekit one: True if it is a sum over items divided by
            ``num_items_in_batch`` (it takes that argument), False if it is a statistic of the batch.
        ignore_index: the label that marks positions without a target (the Hugging Face -100).
        **kwargs: the registered objective's options, e.g. ``label_smoothing=0.1`` or ``gamma=2``.

    Example::

        >>> loss_func = TrainerLoss("dece", task="causal_lm", fused=True, alpha_base=0.99)
        >>> loss_func.objective
        DeCELoss(alpha_base=0.99, label_smoothing=0.05, epoch=1, ignore_index=-100, reduction='mean')
    """

    def __init__(
        self,
        objective: str | nn.Module | Callable[..., Tensor],
        task: str,
        *,
        fused: bool = False,
        per_item: bool | None = None,
        ignore_index: int = -100,
        **kwargs: Any,
    ) -> None:
        check_choice("task", task, TASKS)
        check_flag("fused", fused)
        self.task = task
        self.fused = fused
        self.ignore_index = ignore_index
        self.problem_type = SINGLE_LABEL
        self.uses_position_ids = False
        if isinstance(objective, str):
            self.objective, spec = _build(objective, task, ignore_index, kwargs)
        elif callable(objective):
            if kwargs:
                raise ValueError(f"options {sorted(kwargs)} are only for a registered objective's name")
            self.objective, spec = objective, _spec_of(objective)
        else:
            raise ValueError(f"objective must be a registered name or a callable, got {objective!r}")
        if spec is not None:
            self.per_item = spec.per_item
            self.problem_type = spec.problem_type
            self.uses_position_ids = getattr(spec, "uses_position_ids", False)
        elif per_item is None:
            raise ValueError(
                f"say how {objective!r} reduces: per_item=True if it is a sum over items divided by "
                "num_items_in_batch (it takes that argument), per_item=False if it is a batch statistic"
            )
        if per_item is not None:
            check_flag("per_item", per_item)
            if spec is not None and per_item != spec.per_item:
                raise ValueError(f"per_item={per_item} contradicts the registry's per_item={spec.per_item}")
            self.per_item = per_item
        if fused:
            if task not in GENERATION_TASKS:
                raise ValueError(
                    f"fused=True scores a language-model head (task in {GENERATION_TASKS}), got task={task!r}"
                )
            if not hasattr(self.objective, "linear"):
                known = sorted(TOKEN_LOSSES)
                raise ValueError(
                    f"fused=True needs a token objective with a fused-linear form ({known}), "
                    f"got {self.objective!r}"
                )
        self._probed: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # models whose logits were checked

    # ---- the compute_loss_func protocol: the Trainer passes the model's outputs ----

    def __call__(
        self, outputs: Any, labels: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        if self.fused:
            raise ValueError(
                "TrainerLoss(fused=True) needs the model's hidden states, which transformers.Trainer does "
                "not pass to compute_loss_func (it has already computed the logits): use TunekitTrainer, "
                "TunekitSeq2SeqTrainer or TunekitSFTTrainer, call TrainerLoss.compute(model, batch) in your "
                "own loop, or pass fused=False"
            )
        return self.from_logits(_logits_of(outputs), labels, num_items_in_batch)

    def from_logits(
        self,
        logits: Tensor,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        *,
        position_ids: Tensor | None = None,
    ) -> Tensor:
        """The loss of logits against the batch's labels, as `__call__` computes it from model outputs."""
        if labels is None:
            raise ValueError("TrainerLoss needs labels: the batch has no 'labels' field")
        return self._score(logits, self.target(labels), num_items_in_batch, position_ids)

    # ---- the whole step: run the model and score it ----

    def compute(
        self,
        model: nn.Module,
        inputs: Mapping[str, Any],
        num_items_in_batch: int | Tensor | None = None,
        *,
        rdrop_weight: float = 0.0,
        logits: bool = False,
        token_statistics: bool = False,
    ) -> ModelLoss:
        """Run ``model`` on a batch and score it: the fused path when ``fused`` (unless ``logits``).

        Args:
            model: the model as the training loop calls it (DDP / FSDP2 / PEFT wrappers included).
            inputs: the batch, with "labels" (B, N) / (B, ...) or "shift_labels"; not modified.
            num_items_in_batch: supervised labels in the whole accumulated (and global) batch.
            rdrop_weight: R-Drop: the batch runs twice in one forward (rows [0, B) and [B, 2B), their own
                dropout masks) and the loss is ``(task(a) + task(b)) / 2 + rdrop_weight * KL_sym(a, b)``, the
                KL summed over supervised positions and divided like the task loss (by ``num_items_in_batch``
                when given, else by their count). Fused, the KL is `linear_rdrop_kl`.
            logits: score the logits even when ``fused`` (an evaluation that needs predictions).
            token_statistics: record the entropy and top-1 of the model's distribution at each target
                during the objective's own pass (`ModelLoss.statistics`; the first pass under R-Drop).
        """
        check_non_negative("rdrop_weight", rdrop_weight)
        if rdrop_weight and self.problem_type != SINGLE_LABEL:
            raise ValueError(
                f"rdrop_weight applies to single-label objectives (a KL between two softmaxes), not to "
                f"{self.objective!r}, which scores {self.problem_type} labels"
            )
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        target = self._aligned_target(labels, inputs.pop("shift_labels", None))
        position_ids = self._position_ids(inputs)
        if self.task == "seq2seq":
            inputs = _with_decoder_inputs(model, inputs, labels)
        if rdrop_weight:
            inputs = repeat_batch(inputs)
        if self.fused and not logits:
            head, outputs = self._fused_forward(model, inputs)
            scored = ModelLoss(None, outputs, target, head=head)
        else:
            outputs = model(**inputs)
            scored = ModelLoss(None, outputs, target, logits=_logits_of(outputs))
        with recording_token_statistics() if token_statistics else contextlib.nullcontext() as recorded:
            if rdrop_weight:
                scored.loss = self._rdrop(scored, num_items_in_batch, position_ids, rdrop_weight)
            else:
                scored.loss = self._score(
                    scored.head or scored.logits, target, num_items_in_batch, position_ids
                )
        if recorded:  # a tunekit token objective recorded them; the first call scored the batch as given
            scored.statistics = recorded[0]
        return scored

    def target(self, labels: Tensor) -> Tensor:
        """The labels aligned with the logits: shifted one position left for a causal LM."""
        if self.task == "causal_lm":
            return F.pad(labels, (0, 1), value=self.ignore_index)[..., 1:]
        return labels

    def set_epoch(self, epoch: float) -> None:
        """Forwarded to objectives with an epoch schedule (DeCE); the Trainer mixin calls it every step."""
        if hasattr(self.objective, "set_epoch"):
            self.objective.set_epoch(epoch)

    def __repr__(self) -> str:
        fused = ", fused=True" if self.fused else ""
        return f"TrainerLoss({self.objective!r}, task={self.task!r}{fused})"

    # ---- helpers ----

    def _aligned_target(self, labels: Tensor | None, shift_labels: Tensor | None) -> Tensor:
        if shift_labels is not None:
            if self.task != "causal_lm":
                raise ValueError(
                    f"the batch has shift_labels, which only a causal LM takes; task={self.task!r}"
                )
            if self.uses_position_ids:
                raise ValueError(
                    f"{self.objective!r} scores whole sequences, and shift_labels (context parallelism) "
                    "split each sequence across processes; train it without context parallelism"
                )
            return shift_labels
        if labels is None:
            raise ValueError("TrainerLoss needs labels: the batch has no 'labels' field")
        return self.target(labels)

    def _position_ids(self, inputs: Mapping[str, Any]) -> Tensor | None:
        if not self.uses_position_ids:
            return None
        position_ids = inputs.get("position_ids")
        if position_ids is None and any(key in inputs for key in _CUMULATIVE_LENGTHS):
            raise ValueError(
                f"{self.objective!r} scores whole sequences, and this padding-free batch has cu_seq_lens but "
                "no position_ids to tell its sequences apart; have the collator return position_ids"
            )
        return position_ids

    def _fused_forward(self, model: nn.Module, inputs: dict[str, Any]) -> tuple[OutputLayerInput, Any]:
        owner = unwrap(model)
        capture = OutputLayerCapture(model, probe=owner not in self._probed)
        with capture:
            outputs = model(**inputs)
        head = capture.result(outputs)
        self._probed.add(owner)
        return head, outputs

    def _score(
        self,
        scores: Tensor | OutputLayerInput,
        target: Tensor,
        num_items_in_batch: int | Tensor | None,
        position_ids: Tensor | None,
    ) -> Tensor:
        options = {} if position_ids is None else {"position_ids": position_ids}
        if isinstance(scores, OutputLayerInput):
            weight = scores.weight
            # the output layer in its weight's dtype, as it would run without autocast
            with torch.autocast(weight.device.type, enabled=False):
                return self.objective.linear(
                    scores.hidden.to(weight.dtype),
                    weight,
                    target,
                    bias=scores.bias,
                    num_items_in_batch=num_items_in_batch,
                    **options,
                )
        if self.per_item:
            return self.objective(scores, target, num_items_in_batch=num_items_in_batch, **options)
        loss = self.objective(scores, target, **options)
        if num_items_in_batch is None:
            return loss
        return loss * (target != self.ignore_index).sum() / torch.as_tensor(num_items_in_batch).clamp_min(1)

    def _rdrop(
        self,
        scored: ModelLoss,
        num_items_in_batch: int | Tensor | None,
        position_ids: Tensor | None,
        weight: float,
    ) -> Tensor:
        target = scored.target
        pad_mask = target == self.ignore_index
        kl_options = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
        if scored.head is not None:
            head = scored.head
            hidden_a, hidden_b = head.hidden.to(head.weight.dtype).chunk(2)
            passes = [OutputLayerInput(h, head.weight, head.bias) for h in (hidden_a, hidden_b)]
            with torch.autocast(head.weight.device.type, enabled=False):
                kl = linear_rdrop_kl(
                    hidden_a, hidden_b, head.weight, bias=head.bias, pad_mask=pad_mask, **kl_options
                )
        else:
            passes = list(scored.logits.chunk(2))
            kl = rdrop_kl(*passes, pad_mask=pad_mask, **kl_options)
        task = sum(self._score(p, target, num_items_in_batch, position_ids) for p in passes) / 2
        return task + weight * kl


def repeat_batch(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The batch twice along dim 0 (R-Drop's two passes in one forward), every field kept consistent.

    Tensors with one row per sequence row are repeated; flash attention's ``cu_seq_lens_q`` /
    ``cu_seq_lens_k`` (the cumulative lengths of the packed sequences of the flattened batch) are extended by
    a shifted copy, so the second copy's sequences follow the first's; ``max_length_q`` / ``max_length_k``
    stay as they are.
    """
    rows = next(
        (
            inputs[key].shape[0]
            for key in ("input_ids", "inputs_embeds")
            if isinstance(inputs.get(key), Tensor)
        ),
        None,
    )
    if rows is None:
        raise ValueError(
            f"R-Drop repeats the batch's input_ids or inputs_embeds; the batch has {sorted(inputs)}"
        )
    repeated = dict(inputs)
    for key, value in inputs.items():
        if key in _MAX_LENGTHS or not isinstance(value, Tensor) or value.dim() == 0:
            continue
        if key in _CUMULATIVE_LENGTHS:
            repeated[key] = torch.cat([value, value[1:] + value[-1]])
        elif value.shape[0] == rows:
            repeated[key] = torch.cat([value, value])
    return repeated


def _with_decoder_inputs(model: nn.Module, inputs: dict[str, Any], labels: Tensor | None) -> dict[str, Any]:
    """A seq2seq model run without its labels cannot build its decoder inputs from them: build them here
    (right-shifted labels) unless the collator did (``DataCollatorForSeq2Seq(model=...)``)."""
    if labels is None or "decoder_input_ids" in inputs or "decoder_inputs_embeds" in inputs:
        return inputs
    decoder_input_ids = unwrap(model).prepare_decoder_input_ids_from_labels(labels=labels)
    return {**inputs, "decoder_input_ids": decoder_input_ids}


def _build(name: str, task: str, ignore_index: int, kwargs: dict) -> tuple[nn.Module, Any]:
    """(module, registry entry) of a registered objective that fits the task (`find_objective`), built with
    options of its own (`spec.options`); the module checks their values."""
    spec = find_objective(name, task)
    unknown = sorted(set(kwargs) - set(spec.options))
    if "weight" in unknown and isinstance(spec, TokenLossSpec):
        weighted = ", ".join(n for n, s in TOKEN_LOSSES.items() if s.class_weights)
        raise ValueError(
            f"{name} takes no per-class weights (weight=); the token objectives that do: {weighted}"
        )
    if unknown:
        offered = ", ".join(f"{k} (default {v!r})" for k, v in spec.options.items()) or "none"
        raise ValueError(f"{name} has no option {', '.join(unknown)}; its options: {offered}")
    options = {**getattr(spec, "kwargs", {}), **kwargs}
    if "ignore_index" in inspect.signature(spec.module).parameters:
        options["ignore_index"] = ignore_index
    return spec.module(**options), spec


def _spec_of(objective: Callable) -> Any:
    """The registry entry of a tunekit loss module or function, or None for another callable. A module
    matches an entry whose fixed options it has (a multilabel `DiceLoss` is "multilabel_dice")."""
    for spec in (*TOKEN_LOSSES.values(), *CLASSIFICATION_LOSSES.values()):
        fixed = getattr(spec, "kwargs", {}).items()
        if type(objective) is spec.module and all(getattr(objective, k, v) == v for k, v in fixed):
            return spec
        if objective is spec.function:
            return spec
    return None


def _logits_of(outputs: Any) -> Tensor:
    if isinstance(outputs, Mapping) and "logits" in outputs:
        return outputs["logits"]
    if isinstance(outputs, Tensor):
        return outputs
    raise ValueError(
        f"the model's outputs have no 'logits' (got {type(outputs).__name__}); "
        "return a ModelOutput / dict with logits"
    )
