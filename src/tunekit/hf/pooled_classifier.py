"""A sequence classifier made of any `transformers` encoder and a pooling head::

    hidden = encoder(input_ids, attention_mask, **encoder_kwargs)        # (B, N, H), or every layer's
    logits = linear(dropout(pool(hidden, attention_mask)))               # (B, C)

with the pooling of `tunekit.tricks.pooling` ("mean", "max", "cls", "last_k_cls", "attention") and H read
from the encoder's config. `forward` returns a `SequenceClassifierOutput` with Hugging Face's loss, so the
`Trainer` trains it like an ``AutoModelForSequenceClassification``.

The summary token of "cls" / "last_k_cls" is the *first* real token of each row (BERT's [CLS], RoBERTa's
<s>), except for XLNet, whose <cls> ends the sequence: there it is the *last* real token. Both are found from
the attention mask, so XLNet's left padding needs nothing more; ``cls_position=`` overrides the choice.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModel, PretrainedConfig
from transformers.modeling_outputs import SequenceClassifierOutput

from .._checks import check_choice, check_fraction, check_positive_int, describe
from .._dtypes import upcast
from ..losses.registry import PROBLEM_TYPES
from ..tricks.pooling import Pooler

# where configs keep the hidden size (most map `hidden_size` to their own name through `attribute_map`)
HIDDEN_SIZE_NAMES = ("hidden_size", "d_model", "n_embd", "dim", "embed_dim", "hidden_dim", "model_dim")
# model types whose summary token is the last real token
_LAST_TOKEN_SUMMARY = ("xlnet",)


def encoder_hidden_size(config: PretrainedConfig) -> int:
    """The hidden size from a config: the first of `HIDDEN_SIZE_NAMES` that is a positive integer.

    Raises:
        ValueError: none is.
    """
    for name in HIDDEN_SIZE_NAMES:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    raise ValueError(
        f"cannot read the hidden size from {type(config).__name__}: none of {HIDDEN_SIZE_NAMES} is a "
        "positive integer; pass hidden_size="
    )


def default_cls_position(config: PretrainedConfig | None) -> str:
    """The summary token's position: "last" for models whose summary token ends the sequence (XLNet),
    "first" otherwise."""
    return "last" if getattr(config, "model_type", None) in _LAST_TOKEN_SUMMARY else "first"


class PooledClassifier(nn.Module):
    """An encoder, a `Pooler`, dropout and a linear layer to `num_labels` logits.

    Args:
        encoder: a `transformers` encoder (``AutoModel``: BertModel, RobertaModel, XLNetModel,
            T5EncoderModel, an encoder-decoder's ``get_encoder()``...) or any module called as
            ``encoder(input_ids=..., attention_mask=..., **kwargs)`` that returns the (B, N, H) last hidden
            state first (a tensor, a tuple or a model output).
        num_labels: C, the number of logits.
        pooling: "mean", "max", "cls", "last_k_cls" or "attention" (see `tunekit.tricks.pooling`).
        dropout: dropout probability on the pooled vector, in [0, 1).
        num_layers: k for "last_k_cls".
        cls_position: "first" or "last" real token for "cls" / "last_k_cls"; default "last" for XLNet,
            "first" otherwise.
        attention_size: the scoring MLP's width for "attention" (default H).
        hidden_size: H, for an encoder whose config does not say it; by default read from
            ``encoder.config`` (`encoder_hidden_size`).
        problem_type: the loss when labels are given, as Hugging Face's ``config.problem_type``:
            "regression" (MSE), "single_label_classification" (cross-entropy), "multi_label_classification"
            (BCE with logits). None infers it per call, as Hugging Face does: regression for num_labels == 1,
            cross-entropy for integer labels, BCE otherwise.

    Saving: the Hugging Face Trainer writes a plain module's ``state_dict()`` with safetensors, which
    refuses one tensor under two names, as T5EncoderModel has (``shared`` and ``encoder.embed_tokens``).
    For T5, build the classifier with `from_config` / `from_pretrained` (they keep the encoder stack only,
    whose embedding has one name) or pass ``t5_model.get_encoder()``.

    Example::

        >>> import torch, transformers
        >>> config = transformers.BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1,
        ...                                  num_attention_heads=2, intermediate_size=16)
        >>> model = PooledClassifier.from_config(config, num_labels=3, pooling="last_k_cls", num_layers=2)
        >>> model.pooler.output_size
        16
        >>> out = model(torch.tensor([[2, 5, 7, 0]]), torch.tensor([[1, 1, 1, 0]]), labels=torch.tensor([1]))
        >>> out.logits.shape, out.loss.shape
        (torch.Size([1, 3]), torch.Size([]))
    """

    # The Trainer passes `num_items_in_batch` to models that take **kwargs and then leaves the
    # gradient-accumulation scaling to them; this loss is a per-batch mean, so the Trainer must scale it.
    accepts_loss_kwargs = False

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        *,
        pooling: str = "mean",
        dropout: float = 0.1,
        num_layers: int = 4,
        cls_position: str | None = None,
        attention_size: int | None = None,
        hidden_size: int | None = None,
        problem_type: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise ValueError(f"encoder must be an nn.Module, got {describe(encoder)}")
        check_positive_int("num_labels", num_labels)
        check_fraction("dropout", dropout, zero_ok=True, one_ok=False)
        if problem_type is not None:
            check_choice("problem_type", problem_type, PROBLEM_TYPES)
        config = getattr(encoder, "config", None)
        if hidden_size is None:
            if config is None:
                raise ValueError(
                    f"{type(encoder).__name__} has no config to read the hidden size from; pass hidden_size="
                )
            hidden_size = encoder_hidden_size(config)
        self.encoder = encoder
        self.pooler = Pooler(
            pooling,
            hidden_size,
            num_layers=num_layers,
            cls_position=default_cls_position(config) if cls_position is None else cls_position,
            attention_size=attention_size,
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.pooler.output_size, num_labels)
        self.num_labels = num_labels
        self.problem_type = problem_type

    @classmethod
    def from_config(
        cls,
        config: PretrainedConfig,
        num_labels: int,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> PooledClassifier:
        """A classifier on ``AutoModel.from_config(config, **encoder_kwargs)`` (random weights); of an
        encoder-decoder (T5, BART) only the encoder is kept. `kwargs` go to the constructor."""
        return cls(
            _encoder_only(AutoModel.from_config(config, **(encoder_kwargs or {}))), num_labels, **kwargs
        )

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        num_labels: int,
        *,
        encoder_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> PooledClassifier:
        """A classifier on ``AutoModel.from_pretrained(path, **encoder_kwargs)`` (e.g. a directory written by
        ``save_pretrained``); of an encoder-decoder only the encoder is kept. The head starts from random
        weights. `kwargs` go to the constructor."""
        encoder = AutoModel.from_pretrained(path, **(encoder_kwargs or {}))
        return cls(_encoder_only(encoder), num_labels, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        """The encoder's token embeddings (what FGM / PGD perturb, as on any Hugging Face model)."""
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **encoder_kwargs: Any,
    ) -> SequenceClassifierOutput:
        """(B, N) ids and mask (and (B,) / (B, C) labels) -> logits (B, C) and, with labels, the loss
        (fp32). `encoder_kwargs` (token_type_ids, inputs_embeds...) go to the encoder; the output carries the
        encoder's hidden states only when asked for (``output_hidden_states=True`` here or in its config)."""
        asked = encoder_kwargs.get("output_hidden_states")
        if asked is None:
            asked = bool(getattr(getattr(self.encoder, "config", None), "output_hidden_states", False))
        if self.pooler.needs_hidden_states:
            encoder_kwargs = {**encoder_kwargs, "output_hidden_states": True}
        outputs = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **encoder_kwargs)
        last_hidden_state = _first_output(outputs)
        if last_hidden_state.shape[-1] != self.pooler.hidden_size:
            raise ValueError(
                f"the encoder's hidden states have size {last_hidden_state.shape[-1]}, the pooler expects "
                f"{self.pooler.hidden_size}"
            )
        hidden_states = getattr(outputs, "hidden_states", None)
        pooled = self.pooler(last_hidden_state, attention_mask, hidden_states=hidden_states)
        logits = self.classifier(self.dropout(pooled.to(self.classifier.weight.dtype)))
        loss = None if labels is None else self.loss(logits, labels)
        return SequenceClassifierOutput(
            loss=loss,
            logits=logits,
            # not the layers last_k_cls asked for: the Trainer would gather them as predictions
            hidden_states=hidden_states if asked else None,
            attentions=getattr(outputs, "attentions", None),
        )

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Hugging Face's sequence-classification loss of (B, C) logits, computed in fp32."""
        x = upcast(logits)
        problem_type = self.problem_type or _infer_problem_type(self.num_labels, labels)
        if problem_type == "regression":
            if labels.numel() != x.numel():
                raise ValueError(
                    f"regression labels of shape {tuple(labels.shape)} do not match logits of shape "
                    f"{tuple(x.shape)}"
                )
            return F.mse_loss(x.reshape(-1), labels.reshape(-1).to(x.dtype))
        if problem_type == "single_label_classification":
            if labels.is_floating_point() or labels.numel() != x.shape[0]:
                raise ValueError(
                    f"single-label classification needs ({x.shape[0]},) integer labels, got "
                    f"{describe(labels)} of shape {tuple(labels.shape)}"
                )
            return F.cross_entropy(x, labels.reshape(-1).long())
        if labels.shape != x.shape:
            raise ValueError(
                f"multi-label classification needs labels of the logits' shape {tuple(x.shape)}, got "
                f"{tuple(labels.shape)}"
            )
        return F.binary_cross_entropy_with_logits(x, labels.to(x.dtype))


def _infer_problem_type(num_labels: int, labels: Tensor) -> str:
    if num_labels == 1:
        return "regression"
    if not labels.is_floating_point() and labels.dtype != torch.bool:
        return "single_label_classification"
    return "multi_label_classification"


def _encoder_only(model: nn.Module) -> nn.Module:
    """The encoder of an encoder-decoder model (T5Model -> its encoder stack), other models unchanged.

    Told by structure, not by ``config.is_encoder_decoder`` (a T5EncoderModel clears that flag in the config
    it is given, and AutoModel still builds a T5Model from it) nor by ``get_encoder()`` (BertModel's returns
    its layers without the embeddings)."""
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if isinstance(encoder, nn.Module) and isinstance(decoder, nn.Module):
        return encoder
    return model


def _first_output(outputs: Any) -> Tensor:
    """The last hidden state from a tensor, a model output or a tuple."""
    hidden = outputs if isinstance(outputs, Tensor) else outputs[0]
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        shape = f" of shape {tuple(hidden.shape)}" if isinstance(hidden, Tensor) else ""
        raise ValueError(
            "the encoder's first output must be the (B, N, H) last hidden state, "
            f"got {describe(hidden)}{shape}"
        )
    return hidden
