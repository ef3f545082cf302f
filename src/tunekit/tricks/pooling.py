"""Pooling of an encoder's hidden states into one vector per sequence, for any encoder.

With hidden states ``h`` of shape (B, N, H) and an attention mask ``m`` of shape (B, N) (non-zero = a real
token, 0 = padding; None = every token is real)::

    mean:       sum_n m[b, n] h[b, n] / sum_n m[b, n]                    (B, H)
    max:        max over {n : m[b, n] != 0} of h[b, n]                    (B, H), per feature
    cls:        h[b, n_b], n_b the first (or last) real token of row b    (B, H)
    last_k_cls: cat(cls(h_L), cls(h_{L-1}), ..., cls(h_{L-k+1}))          (B, k * H), from all the layers
    attention:  sum_n softmax_n(s[b, n]) h[b, n] over the real tokens     (B, H), s = v . tanh(W h + c)

A row with no real token (all padding) pools to zeros under every kind, never NaN or -inf. The positions
are found from the mask, so left padding (XLNet) works as well as right padding. fp16/bf16 hidden states
are summed in fp32 and the result comes back in their dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_positive_int, describe
from .._dtypes import upcast

POOLING_KINDS = ("mean", "max", "cls", "last_k_cls", "attention")
"""The names `Pooler` takes, one per pooling."""
CLS_POSITIONS = ("first", "last")


def mean_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Average of the real tokens' hidden states::

        (hidden * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)     # m = attention_mask != 0

    Padded positions are left out (whatever they hold, NaN included); an all-padding row gives zeros.

    Args:
        hidden: (B, N, H) float hidden states.
        attention_mask: (B, N), non-zero at real tokens; None treats every token as real.

    Returns:
        (B, H) in the dtype of `hidden` (fp16/bf16 are summed in fp32).

    Example::

        >>> import torch
        >>> hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [7.0], [9.0]]])
        >>> mean_pool(hidden, torch.tensor([[1, 1, 0], [0, 0, 0]])).flatten().tolist()
        [2.0, 0.0]
    """
    valid = _valid_tokens(hidden, attention_mask)
    x = upcast(hidden)
    summed = torch.where(valid.unsqueeze(-1), x, 0).sum(dim=1)  # [B, H]
    count = valid.sum(dim=1, keepdim=True).clamp_min(1).to(x.dtype)  # [B, 1]; 0 real tokens -> 0 / 1
    return (summed / count).to(hidden.dtype)


def max_pool(hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Feature-wise maximum over the real tokens::

        hidden.masked_fill(m[..., None] == 0, -inf).amax(dim=1)     # then 0 for all-padding rows

    Args:
        hidden: (B, N, H) float hidden states.
        attention_mask: (B, N), non-zero at real tokens; None treats every token as real.

    Returns:
        (B, H) in the dtype of `hidden`; an all-padding row gives zeros.

    Example::

        >>> import torch
        >>> hidden = torch.tensor([[[1.0, -2.0], [3.0, -4.0], [9.0, 9.0]]])
        >>> max_pool(hidden, torch.tensor([[1, 1, 0]])).tolist()
        [[3.0, -2.0]]
    """
    valid = _valid_tokens(hidden, attention_mask)
    pooled = hidden.masked_fill(~valid.unsqueeze(-1), float("-inf")).amax(dim=1)  # [B, H]
    return torch.where(valid.any(dim=1, keepdim=True), pooled, 0)


def cls_pool(hidden: Tensor, attention_mask: Tensor | None = None, *, position: str = "first") -> Tensor:
    """The hidden state of one summary token per row::

        hidden[b, first real token of row b]     # position="first": BERT / RoBERTa's [CLS] / <s>
        hidden[b, last real token of row b]      # position="last": XLNet's <cls>, which ends the sequence

    Taking the first / last *real* token (not index 0 / N - 1) makes the choice right for right and left
    padding alike; without a mask they are index 0 and N - 1.

    Args:
        hidden: (B, N, H) float hidden states.
        attention_mask: (B, N), non-zero at real tokens; None treats every token as real.
        position: "first" or "last".

    Returns:
        (B, H) in the dtype of `hidden`; an all-padding row gives zeros.

    Example::

        >>> import torch
        >>> hidden = torch.arange(6.0).reshape(2, 3, 1)
        >>> mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
        >>> cls_pool(hidden, mask).flatten().tolist()
        [0.0, 4.0]
        >>> cls_pool(hidden, mask, position="last").flatten().tolist()
        [1.0, 5.0]
    """
    check_choice("position", position, CLS_POSITIONS)
    valid = _valid_tokens(hidden, attention_mask)
    return _gather_tokens(hidden, _summary_index(valid, position), valid.any(dim=1))


def last_k_cls_pool(
    hidden_states: Sequence[Tensor],
    attention_mask: Tensor | None = None,
    *,
    num_layers: int = 4,
    position: str = "first",
) -> Tensor:
    """The summary token of each of the last k layers, concatenated, the last layer first::

        torch.cat([cls_pool(hidden_states[-1 - i], attention_mask, position=position) for i in range(k)], -1)

    Args:
        hidden_states: the encoder's ``output_hidden_states=True`` tuple (embeddings, layer 1, ..., layer L),
            each (B, N, H).
        attention_mask: (B, N), non-zero at real tokens; None treats every token as real.
        num_layers: k >= 1, at most ``len(hidden_states)``.
        position: "first" or "last", as in `cls_pool`.

    Returns:
        (B, k * H) in the dtype of the hidden states; an all-padding row gives zeros.

    Example::

        >>> import torch
        >>> layers = tuple(torch.full((1, 2, 1), float(i)) for i in range(5))   # embeddings + 4 layers
        >>> last_k_cls_pool(layers, num_layers=3).tolist()
        [[4.0, 3.0, 2.0]]
    """
    check_choice("position", position, CLS_POSITIONS)
    check_positive_int("num_layers", num_layers)
    if isinstance(hidden_states, Tensor) or not isinstance(hidden_states, Sequence):
        raise ValueError(
            "hidden_states must be the encoder's tuple of per-layer hidden states "
            f"(output_hidden_states=True), got {describe(hidden_states)}"
        )
    if num_layers > len(hidden_states):
        raise ValueError(f"num_layers={num_layers} exceeds the {len(hidden_states)} hidden states given")
    layers = [hidden_states[-1 - i] for i in range(num_layers)]
    valid = _valid_tokens(layers[0], attention_mask)
    for layer in layers[1:]:
        _check_hidden(layer)
        if layer.shape != layers[0].shape:
            raise ValueError(
                f"hidden states differ in shape: {tuple(layer.shape)} vs {tuple(layers[0].shape)}"
            )
    index, has_token = _summary_index(valid, position), valid.any(dim=1)  # one lookup for every layer
    return torch.cat([_gather_tokens(layer, index, has_token) for layer in layers], dim=-1)


def attention_pool(hidden: Tensor, scores: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """Weighted average of the real tokens, the weights a softmax of `scores` over them::

        w = softmax(scores.masked_fill(m == 0, -inf), dim=1)      # [B, N]; 0 at padding
        (w[..., None] * hidden).sum(1)                           # [B, H]

    The softmax and the sum run in fp32 for fp16/bf16 inputs. An all-padding row gives zeros (and no NaN
    in the gradient); padded positions get neither weight nor gradient, whatever they hold.

    Args:
        hidden: (B, N, H) float hidden states.
        scores: (B, N) float scores (logits of the weights), e.g. from `AttentionPooling`.
        attention_mask: (B, N), non-zero at real tokens; None treats every token as real.

    Returns:
        (B, H) in the dtype of `hidden`.

    Example::

        >>> import torch
        >>> hidden = torch.tensor([[[2.0], [4.0], [50.0]]])
        >>> attention_pool(hidden, torch.zeros(1, 3), torch.tensor([[1, 1, 0]])).tolist()
        [[3.0]]
    """
    valid = _valid_tokens(hidden, attention_mask)
    if not isinstance(scores, Tensor) or not scores.is_floating_point() or scores.shape != valid.shape:
        raise ValueError(
            f"scores must be a float tensor of shape {tuple(valid.shape)} (B, N), got "
            f"{describe(scores)}{f' of shape {tuple(scores.shape)}' if isinstance(scores, Tensor) else ''}"
        )
    x = upcast(hidden)
    s = scores.to(x.dtype).masked_fill(~valid, float("-inf"))
    has_token = valid.any(dim=1, keepdim=True)
    # an all-padding row would be a softmax of -inf only (NaN): give it finite scores, then zero its weights
    weights = torch.softmax(torch.where(has_token, s, 0), dim=1) * valid  # [B, N]
    pooled = (weights.unsqueeze(-1) * torch.where(valid.unsqueeze(-1), x, 0)).sum(dim=1)  # [B, H]
    return pooled.to(hidden.dtype)


class AttentionPooling(nn.Module):
    """Learned attention pooling: each token is scored by a small MLP, then `attention_pool`::

        scores = v . tanh(W h + c)          # W: (A, H), v: (A,); a bias on v would cancel in the softmax

    Args:
        hidden_size: H.
        attention_size: A, the scoring MLP's width; default H.

    The scoring runs in the module's dtype (hidden states of another dtype are cast to it); the weighted sum
    in fp32 for fp16/bf16, returned in the hidden states' dtype.
    """

    def __init__(self, hidden_size: int, attention_size: int | None = None) -> None:
        super().__init__()
        check_positive_int("hidden_size", hidden_size)
        attention_size = hidden_size if attention_size is None else attention_size
        check_positive_int("attention_size", attention_size)
        self.project = nn.Linear(hidden_size, attention_size)
        self.score = nn.Linear(attention_size, 1, bias=False)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        valid = _valid_tokens(hidden, attention_mask)
        # padded positions are scored as zeros: garbage there (even NaN) cannot reach the weights' gradient
        x = torch.where(valid.unsqueeze(-1), hidden, 0).to(self.project.weight.dtype)
        scores = self.score(torch.tanh(self.project(x))).squeeze(-1)  # [B, N]
        return attention_pool(hidden, scores, valid)


class Pooler(nn.Module):
    """One pooling of the module docstring, chosen by name, with its output size.

    Args:
        kind: "mean", "max", "cls", "last_k_cls" or "attention".
        hidden_size: H, the encoder's hidden size.
        num_layers: k for "last_k_cls" (default 4).
        cls_position: "first" or "last" real token, for "cls" and "last_k_cls" (see `cls_pool`).
        attention_size: the scoring MLP's width for "attention" (default H).

    Attributes:
        output_size: H, or k * H for "last_k_cls": the input size of the layer above.
        needs_hidden_states: True for "last_k_cls": call the encoder with ``output_hidden_states=True`` and
            pass its ``hidden_states`` to `forward`.

    Example::

        >>> import torch
        >>> pooler = Pooler("last_k_cls", hidden_size=8, num_layers=2)
        >>> pooler.output_size, pooler.needs_hidden_states
        (16, True)
        >>> layers = tuple(torch.randn(3, 5, 8) for _ in range(4))
        >>> pooler(layers[-1], torch.ones(3, 5), hidden_states=layers).shape
        torch.Size([3, 16])
    """

    def __init__(
        self,
        kind: str,
        hidden_size: int,
        *,
        num_layers: int = 4,
        cls_position: str = "first",
        attention_size: int | None = None,
    ) -> None:
        super().__init__()
        check_choice("kind", kind, POOLING_KINDS)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_choice("cls_position", cls_position, CLS_POSITIONS)
        self.kind = kind
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cls_position = cls_position
        self.attention = AttentionPooling(hidden_size, attention_size) if kind == "attention" else None
        self.output_size = hidden_size * num_layers if kind == "last_k_cls" else hidden_size
        self.needs_hidden_states = kind == "last_k_cls"

    def forward(
        self,
        last_hidden_state: Tensor,
        attention_mask: Tensor | None = None,
        *,
        hidden_states: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """(B, N, H) last hidden state and (B, N) mask -> (B, output_size); "last_k_cls" reads
        `hidden_states` (the per-layer tuple) instead of `last_hidden_state`."""
        if self.kind == "mean":
            return mean_pool(last_hidden_state, attention_mask)
        if self.kind == "max":
            return max_pool(last_hidden_state, attention_mask)
        if self.kind == "cls":
            return cls_pool(last_hidden_state, attention_mask, position=self.cls_position)
        if self.kind == "attention":
            return self.attention(last_hidden_state, attention_mask)
        if hidden_states is None:
            raise ValueError(
                "last_k_cls pooling needs hidden_states: call the encoder with output_hidden_states=True"
            )
        return last_k_cls_pool(
            hidden_states, attention_mask, num_layers=self.num_layers, position=self.cls_position
        )

    def extra_repr(self) -> str:
        extra = ""
        if self.kind in ("cls", "last_k_cls"):
            extra += f", cls_position={self.cls_position!r}"
        if self.kind == "last_k_cls":
            extra += f", num_layers={self.num_layers}"
        return f"kind={self.kind!r}, hidden_size={self.hidden_size}{extra}, output_size={self.output_size}"


def _check_hidden(hidden: Tensor) -> None:
    if not isinstance(hidden, Tensor) or not hidden.is_floating_point() or hidden.dim() != 3:
        shape = f" of shape {tuple(hidden.shape)}" if isinstance(hidden, Tensor) else ""
        raise ValueError(f"hidden states must be a (B, N, H) float tensor, got {describe(hidden)}{shape}")
    if hidden.shape[1] == 0:
        raise ValueError(f"hidden states need at least one position, got shape {tuple(hidden.shape)}")


def _valid_tokens(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """(B, N) bool, True at real tokens, on the hidden states' device."""
    _check_hidden(hidden)
    if attention_mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    if not isinstance(attention_mask, Tensor) or attention_mask.is_complex():
        raise ValueError(f"attention_mask must be a real or bool tensor, got {describe(attention_mask)}")
    if attention_mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match hidden states of shape "
            f"{tuple(hidden.shape)}: it must be (B, N) = {tuple(hidden.shape[:2])}"
        )
    return attention_mask.to(hidden.device) != 0


def _summary_index(valid: Tensor, position: str) -> Tensor:
    """(B,) index of each row's first / last real token (0 / N - 1 for an all-padding row)."""
    marks = valid.to(torch.uint8)
    if position == "first":
        return marks.argmax(dim=1)  # argmax returns the first of equal maxima
    return valid.shape[1] - 1 - marks.flip(1).argmax(dim=1)


def _gather_tokens(hidden: Tensor, index: Tensor, has_token: Tensor) -> Tensor:
    """hidden[b, index[b]] per row, zeros for rows without a real token."""
    picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), index]  # [B, H]
    return torch.where(has_token.unsqueeze(-1), picked, 0)
