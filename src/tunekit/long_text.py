"""Classification of texts longer than an encoder's window: the tokenizer cuts each text into overlapping
windows, the classifier scores every window, and the window logits are aggregated per document::

    windows, window_to_doc = tokenize_windows(tokenizer, texts, max_length=512, stride=128)
    window_logits = model(**windows).logits                                      # (W, C)
    doc_logits = aggregate_windows(window_logits, window_to_doc, len(texts))     # (D, C)

With R = max_length - (the special tokens the tokenizer adds), window i of a text holds its tokens
``[i * (R - stride), i * (R - stride) + R)`` between the special tokens: consecutive windows share `stride`
tokens and together they cover every token of the text. `classify_long_texts` does all of it under no_grad;
`SlidingWindowClassifier` does it with gradients, so that a document-level loss trains on every window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import BatchEncoding, PreTrainedTokenizerBase

from ._checks import check_choice, check_count, check_positive_int, describe
from ._dtypes import upcast

__all__ = ["SlidingWindowClassifier", "aggregate_windows", "classify_long_texts", "tokenize_windows"]

WINDOW_AGGREGATIONS = ("mean", "max")
# tokenizer options that tokenize_windows sets itself
_WINDOW_OPTIONS = (
    "truncation",
    "max_length",
    "stride",
    "return_overflowing_tokens",
    "padding",
    "return_tensors",
)


def tokenize_windows(
    tokenizer: PreTrainedTokenizerBase,
    texts: str | Sequence[str],
    *,
    max_length: int,
    stride: int = 0,
    padding: bool | str = "longest",
    return_tensors: str | None = "pt",
    **tokenizer_kwargs: Any,
) -> tuple[BatchEncoding, Tensor]:
    """Tokenize documents into windows of at most `max_length` tokens (special tokens included)::

        tokenizer(texts, truncation=True, max_length=max_length, stride=stride,
                  return_overflowing_tokens=True, padding=padding, return_tensors=return_tensors)

    Args:
        tokenizer: a fast tokenizer (``tokenizer.is_fast``): only those report which text a window is from.
        texts: the documents (one string is one document).
        max_length: the window length, special tokens included.
        stride: the number of tokens consecutive windows of a text share, 0 <= stride < max_length minus the
            special tokens.
        padding: as for the tokenizer; ``padding=False`` needs ``return_tensors=None`` (windows of unequal
            length).
        return_tensors: as for the tokenizer.
        tokenizer_kwargs: other tokenizer options (e.g. ``return_offsets_mapping=True``).

    Returns:
        The windows' encoding ((W, max_length) tensors with the defaults; no ``overflow_to_sample_mapping``,
        so ``model(**encoding)`` works) and ``window_to_doc``, a (W,) int64 tensor: the index in `texts` of
        each window's document. Windows come in document order; every document has at least one.

    Example::

        >>> import transformers
        >>> from tokenizers import Tokenizer, models, pre_tokenizers, processors
        >>> vocab = {w: i for i, w in enumerate("[PAD] [UNK] [CLS] [SEP] a b c d e f g h".split())}
        >>> tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
        >>> tok.pre_tokenizer = pre_tokenizers.Whitespace()
        >>> tok.post_processor = processors.TemplateProcessing(
        ...     single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
        >>> tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]")
        >>> texts = ["a b c d e f g", "h"]
        >>> windows, window_to_doc = tokenize_windows(tokenizer, texts, max_length=6, stride=1)
        >>> for ids in windows["input_ids"].tolist():    # 4 tokens a window, 1 shared with the next
        ...     print(tokenizer.decode(ids))
        [CLS] a b c d [SEP]
        [CLS] d e f g [SEP]
        [CLS] h [SEP] [PAD] [PAD] [PAD]
        >>> window_to_doc.tolist()
        [0, 0, 1]
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "sliding windows need a fast tokenizer (tokenizer.is_fast), got "
            f"{type(tokenizer).__name__}: slow tokenizers do not report which text an overflowing "
            "window comes from"
        )
    texts = _documents(texts)
    room = window_room(tokenizer, max_length)
    check_count("stride", stride, minimum=0)
    if stride >= room:
        raise ValueError(
            f"stride={stride} must be < {room}, the tokens a window of max_length={max_length} holds besides "
            f"its special tokens: windows would not advance"
        )
    clashes = sorted(set(tokenizer_kwargs) & set(_WINDOW_OPTIONS))
    if clashes:
        raise ValueError(f"tokenize_windows sets {clashes} itself; pass them as its own arguments")
    encoding = tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        stride=stride,
        return_overflowing_tokens=True,
        padding=padding,
        return_tensors=return_tensors,
        **tokenizer_kwargs,
    )
    mapping = encoding.pop("overflow_to_sample_mapping", None)
    if mapping is None:  # a custom fast tokenizer that overrides the mapping away
        raise ValueError(f"{type(tokenizer).__name__} returned no overflow_to_sample_mapping")
    return encoding, torch.as_tensor(mapping, dtype=torch.long)


def window_room(tokenizer: PreTrainedTokenizerBase, max_length: int) -> int:
    """How many text tokens a window of `max_length` holds: max_length minus the special tokens added."""
    check_positive_int("max_length", max_length)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    if room < 1:
        raise ValueError(
            f"max_length={max_length} leaves no room for text besides the "
            f"{max_length - room} special tokens {type(tokenizer).__name__} adds"
        )
    return room


def aggregate_windows(
    window_logits: Tensor, window_to_doc: Tensor | Sequence[int], num_docs: int, how: str = "mean"
) -> Tensor:
    """Per-document logits from per-window logits, class by class::

        mean: out[d] = window_logits[window_to_doc == d].mean(0)
        max:  out[d] = window_logits[window_to_doc == d].amax(0)

    Differentiable: "mean" sends every window 1 / (its document's windows) of the gradient, "max" sends
    each class's gradient to the window with the largest logit (split evenly among ties).

    Args:
        window_logits: (W, C) float logits; fp16/bf16 are averaged in fp32.
        window_to_doc: (W,) integer document index of each window, in [0, num_docs).
        num_docs: D >= 1; every document must have at least one window.
        how: "mean" or "max".

    Returns:
        (D, C) in the dtype of `window_logits`.

    Example::

        >>> import torch
        >>> logits = torch.tensor([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0]])
        >>> aggregate_windows(logits, torch.tensor([0, 0, 1]), 2).tolist()
        [[2.0, -1.0], [5.0, 5.0]]
        >>> aggregate_windows(logits, torch.tensor([0, 0, 1]), 2, how="max").tolist()
        [[3.0, 0.0], [5.0, 5.0]]
    """
    check_choice("how", how, WINDOW_AGGREGATIONS)
    check_positive_int("num_docs", num_docs)
    if (
        not isinstance(window_logits, Tensor)
        or not window_logits.is_floating_point()
        or window_logits.dim() != 2
    ):
        shape = f" of shape {tuple(window_logits.shape)}" if isinstance(window_logits, Tensor) else ""
        raise ValueError(f"window_logits must be a (W, C) float tensor, got {describe(window_logits)}{shape}")
    index = _window_index(window_to_doc, window_logits)
    # validated always: a document without a window would silently come out as zeros
    if bool(((index < 0) | (index >= num_docs)).any()):
        bad = index[(index < 0) | (index >= num_docs)][0].item()
        raise ValueError(f"window_to_doc contains {bad}, outside [0, num_docs={num_docs})")
    counts = torch.bincount(index, minlength=num_docs)  # [D]
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"documents {missing[:10]} have no window (num_docs={num_docs})")
    x = upcast(window_logits)
    doc_shape = (num_docs, x.shape[1])
    if how == "mean":
        summed = x.new_zeros(doc_shape).index_add(0, index, x)  # [D, C]
        out = summed / counts.unsqueeze(1).to(x.dtype)
    else:
        out = x.new_zeros(doc_shape).scatter_reduce(
            0, index.unsqueeze(1).expand_as(x), x, reduce="amax", include_self=False
        )
    return out.to(window_logits.dtype)


class SlidingWindowClassifier(nn.Module):
    """Document logits from a window classifier, with gradients: a document loss trains every window.

    Args:
        model: a sequence classifier, called as ``model(**window_inputs)``, returning (W, C) logits as a
            tensor or as ``.logits`` (a Hugging Face ``...ForSequenceClassification``, a `PooledClassifier`).
        how: "mean" or "max" (see `aggregate_windows`).

    All of a batch's windows go through the model in one call (their activations are kept for the backward
    pass): size the document batch by its windows.

    Example::

        windows, window_to_doc = tokenize_windows(tokenizer, texts, max_length=512, stride=128)
        doc_logits = SlidingWindowClassifier(model, how="mean")(
            **windows, window_to_doc=window_to_doc, num_docs=len(texts)
        )                                                                  # (D, C)
        F.cross_entropy(doc_logits, doc_labels).backward()
    """

    def __init__(self, model: nn.Module, how: str = "mean") -> None:
        super().__init__()
        check_choice("how", how, WINDOW_AGGREGATIONS)
        self.model = model
        self.how = how

    def forward(self, *, window_to_doc: Tensor, num_docs: int | None = None, **window_inputs: Any) -> Tensor:
        """Window inputs ((W, N) input_ids, attention_mask...), (W,) window_to_doc -> (D, C) logits;
        `num_docs` defaults to ``window_to_doc.max() + 1``."""
        logits = window_logits_of(self.model(**window_inputs))
        if num_docs is None:
            index = _window_index(window_to_doc, logits)
            num_docs = int(index.max()) + 1 if index.numel() else 1
        return aggregate_windows(logits, window_to_doc, num_docs, self.how)

    def extra_repr(self) -> str:
        return f"how={self.how!r}"


@torch.no_grad()
def classify_long_texts(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: str | Sequence[str],
    *,
    max_length: int,
    stride: int = 0,
    how: str = "mean",
    batch_size: int = 32,
    **tokenizer_kwargs: Any,
) -> Tensor:
    """Document logits of long texts: `tokenize_windows`, the model on `batch_size` windows at a time (each
    batch padded to its own longest window, on the model's device), then `aggregate_windows`.

    The model runs in eval mode (every submodule's mode is restored after) without gradients.

    Args:
        model: a sequence classifier, as for `SlidingWindowClassifier`; it gets the tokenizer's
            ``model_input_names`` (input_ids, attention_mask, token_type_ids...).
        tokenizer: as for `tokenize_windows`.
        texts: as for `tokenize_windows`.
        max_length: as for `tokenize_windows`.
        stride: as for `tokenize_windows`.
        tokenizer_kwargs: as for `tokenize_windows`.
        how: "mean" or "max".
        batch_size: windows per forward pass.

    Returns:
        (D, C) logits on the model's device, one row per text.
    """
    check_choice("how", how, WINDOW_AGGREGATIONS)
    check_positive_int("batch_size", batch_size)
    texts = _documents(texts)
    encoding, window_to_doc = tokenize_windows(
        tokenizer,
        texts,
        max_length=max_length,
        stride=stride,
        padding=False,
        return_tensors=None,
        **tokenizer_kwargs,
    )
    names = [name for name in tokenizer.model_input_names if name in encoding]
    device = _device_of(model)
    modes = {module: module.training for module in model.modules()}  # submodules may differ (frozen parts)
    model.eval()
    try:
        logits = []
        for start in range(0, len(window_to_doc), batch_size):
            features = [
                {name: encoding[name][i] for name in names}
                for i in range(start, min(start + batch_size, len(window_to_doc)))
            ]
            batch = tokenizer.pad(features, return_tensors="pt").to(device)
            logits.append(window_logits_of(model(**batch)))
    finally:
        for module, training in modes.items():
            module.training = training
    return aggregate_windows(torch.cat(logits), window_to_doc.to(device), len(texts), how)


def window_logits_of(outputs: Any) -> Tensor:
    """The (W, C) logits in a model's output: the output itself if a tensor, else its ``.logits``."""
    logits = outputs if isinstance(outputs, Tensor) else getattr(outputs, "logits", None)
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        shape = f" of shape {tuple(logits.shape)}" if isinstance(logits, Tensor) else ""
        raise ValueError(
            "the classifier must return (W, C) logits, as a tensor or as .logits, got "
            f"{describe(outputs if logits is None else logits)}{shape}"
        )
    return logits


def _documents(texts: str | Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, Sequence) and len(texts) > 0 and all(isinstance(text, str) for text in texts):
        return list(texts)
    raise ValueError(f"texts must be a string or a non-empty sequence of strings, got {describe(texts)}")


def _window_index(window_to_doc: Tensor | Sequence[int], logits: Tensor) -> Tensor:
    """`window_to_doc` as an int64 (W,) tensor on the logits' device."""
    index = torch.as_tensor(window_to_doc, device=logits.device)
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool or index.dim() != 1:
        raise ValueError(
            f"window_to_doc must be a 1-D integer tensor, got {describe(index)} of shape {tuple(index.shape)}"
        )
    if index.shape[0] != logits.shape[0]:
        raise ValueError(
            f"window_to_doc has {index.shape[0]} entries for the {logits.shape[0]} windows of the logits"
        )
    return index.long()


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")
