"""How a Hugging Face model decodes: the top-k candidates at each step, log-probabilities of generated
sequences and a side-by-side of decoding strategies, for causal LMs and encoder-decoders alike.

Each strategy is one ``model.generate(..., return_dict_in_generate=True, output_scores=True,
output_logits=True)`` call; tunekit runs no decoding loop of its own. Two distributions exist at step t::

    model:     softmax(output.logits[t])   # the raw model output, before any logits processor
    processed: softmax(output.scores[t])   # after the processors and warpers (temperature, top-k, top-p,
                                           # penalties); beam search: log_softmax(logits) then the processors

"Probability" means the model's distribution unless ``distribution="processed"`` asks for the one the token
was picked from (the greedy / sampled token is the argmax of / a draw from the processed one). Log-probs of
generated tokens are always the model's::

    log_probs = model.compute_transition_scores(sequences, output.logits, beam_indices, normalize_logits=True)
    # log_probs[i, t] = log_softmax(output.logits[t])[beam_indices[i, t], sequences[i, start + t]]

and `token_log_probs` recomputes them from one teacher-forced forward pass, as an independent check;
`score_continuation` reports a given continuation from that pass as `decode` reports a generated one. A
sequence's generated tokens end at its first EOS, which is included; the padding generate puts after it is
not reported. Beam search returns ``sequences_scores = sum_t processed_log_prob_t / num_tokens **
length_penalty``: with no processor active (the default), the model's sum divided by ``num_tokens **
length_penalty``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import (
    check_choice,
    check_count,
    check_flag,
    check_fraction,
    check_non_negative,
    check_positive_int,
    describe,
)
from ._dtypes import upcast
from .tricks.models import unwrap

__all__ = [
    "DEFAULT_STRATEGIES",
    "DISTRIBUTIONS",
    "Candidate",
    "Decoded",
    "Step",
    "Strategy",
    "compare_strategies",
    "decode",
    "format_comparison",
    "format_steps",
    "format_token_log_probs",
    "score_continuation",
    "score_generated",
    "sequence_log_prob",
    "token_log_probs",
]

DISTRIBUTIONS = ("model", "processed")
"""Which distribution the per-step tables show: the model's own (softmax of the raw logits), or the one
a token was drawn from after temperature / top-k / top-p (``"processed"``)."""
# generate arguments every inspection sets itself
_RESERVED = frozenset(
    {
        "input_ids",
        "inputs",
        "attention_mask",
        "max_new_tokens",
        "max_length",
        "return_dict_in_generate",
        "output_scores",
        "output_logits",
        "num_return_sequences",
        "generation_config",
    }
)
_SAMPLING_ONLY = ("temperature", "top_k", "top_p")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """A named decoding strategy: the keyword arguments it passes to ``model.generate``.

    Args:
        name: the label shown in tables.
        generate_kwargs: e.g. ``{"do_sample": True, "top_p": 0.9}``, on top of the model's generation config.
            Refused: what the inspection sets itself (input ids, attention mask, lengths, output flags,
            ``num_return_sequences``, ``generation_config``), and temperature / top_k / top_p without
            ``do_sample=True`` (generate would ignore them). A sampling strategy that should not inherit
            top-k = 50 (generate's default) sets ``top_k=0``.
    """

    name: str
    generate_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"strategy name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.generate_kwargs, Mapping):
            kind = describe(self.generate_kwargs)
            raise ValueError(f"strategy {self.name!r}: generate_kwargs must be a mapping, got {kind}")
        kwargs = dict(self.generate_kwargs)
        reserved = sorted(_RESERVED & kwargs.keys())
        if reserved:
            raise ValueError(f"strategy {self.name!r} sets {reserved}, which the inspection sets itself")
        if "do_sample" in kwargs:
            check_flag("do_sample", kwargs["do_sample"])
        if "num_beams" in kwargs:
            check_positive_int("num_beams", kwargs["num_beams"])
        if "temperature" in kwargs:
            check_non_negative("temperature", kwargs["temperature"], positive=True)
        if "top_k" in kwargs:
            check_count("top_k", kwargs["top_k"], minimum=0)
        if "top_p" in kwargs:
            check_fraction("top_p", kwargs["top_p"], zero_ok=False, one_ok=True)
        sampling = [key for key in _SAMPLING_ONLY if key in kwargs]
        if sampling and kwargs.get("do_sample") is not True:
            raise ValueError(
                f"strategy {self.name!r} sets {sampling} without do_sample=True: generate would ignore them"
            )
        object.__setattr__(self, "generate_kwargs", kwargs)  # a copy: the caller's dict may change later


DEFAULT_STRATEGIES: dict[str, Strategy] = {
    strategy.name: strategy
    for strategy in (
        Strategy("greedy", {"do_sample": False, "num_beams": 1}),
        Strategy("beam", {"do_sample": False, "num_beams": 4}),
        # each sampling strategy switches the others' warpers off, the model's generation config's included
        Strategy("temperature", {"do_sample": True, "temperature": 0.7, "top_k": 0, "top_p": 1.0}),
        Strategy("top_k", {"do_sample": True, "temperature": 1.0, "top_k": 10, "top_p": 1.0}),
        Strategy("top_p", {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.9}),
    )
}
"""The strategies `compare_strategies` runs by default, by name: greedy, beam, temperature, top-k, top-p."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One of the k most probable tokens at a step, with its probability."""

    token_id: int
    token: str  # decoded alone (its vocabulary entry if not valid UTF-8 alone); "#<id>" without a tokenizer
    prob: float


@dataclasses.dataclass(frozen=True)
class Step:
    """One generated token: the one chosen and the k most probable, most probable first."""

    step: int  # 1 for the first generated token
    chosen: Candidate
    top: tuple[Candidate, ...]


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One strategy's continuation of a prompt, with its scores and per-step candidates.

    ``token_log_probs`` are the model's log-probabilities of ``token_ids`` (EOS included, nothing after it);
    ``beam_score`` is generate's ``sequences_scores`` (beam search only), the length-penalised sum of the
    processed log-probs; ``steps`` hold probabilities under ``distribution``.
    """

    strategy: Strategy
    distribution: str
    prompt_ids: tuple[int, ...]
    prompt_text: str
    token_ids: tuple[int, ...]
    tokens: tuple[str, ...]
    text: str  # the continuation decoded without special tokens
    token_log_probs: tuple[float, ...]
    finished: bool  # the continuation ended with an EOS token (not at max_new_tokens)
    beam_score: float | None
    steps: tuple[Step, ...]
    generated: bool = True  # False: a given continuation, scored by `score_continuation`

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def sum_log_prob(self) -> float:
        return math.fsum(self.token_log_probs)

    @property
    def mean_log_prob(self) -> float:
        return self.sum_log_prob / self.num_tokens


def decode(
    model: nn.Module,
    prompt: Any,
    tokenizer: Any = None,
    *,
    strategy: str | Strategy = "greedy",
    max_new_tokens: int = 16,
    k: int = 5,
    distribution: str = "model",
    seed: int | None = 0,
) -> Decoded:
    """Continue one prompt with one strategy and report each step's top-k candidates and the log-probs.

    Args:
        model: a `transformers` causal LM or encoder-decoder (its ``generate`` runs on ``model.device``). It
            is in eval mode during the call; each submodule's training flag is restored afterwards.
        prompt: text (needs ``tokenizer``), token ids of shape (T,) or (1, T) (tensor or list), or a mapping
            with ``input_ids`` and optionally ``attention_mask`` (a tokenizer's output). For an
            encoder-decoder it is the encoder's input.
        tokenizer: turns text into ids and ids into token strings; its pad token (else the EOS) is the pad
            id when the model's generation config has none.
        strategy: a name in `DEFAULT_STRATEGIES` or a `Strategy`.
        max_new_tokens: the most tokens to generate (fewer when an EOS comes first).
        k: candidates per step (at most the vocabulary size).
        distribution: "model" (softmax of the raw logits) or "processed" (softmax of generate's scores, the
            distribution the token was picked from), for the step table only.
        seed: the RNG seed sampling starts from; the caller's RNG state is restored afterwards. None uses
            (and advances) the global RNG.

    Example::

        >>> import torch, transformers
        >>> _ = torch.manual_seed(0)
        >>> config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=1, n_head=2)
        >>> result = decode(transformers.GPT2LMHeadModel(config), [1, 2, 3], max_new_tokens=4, k=3)
        >>> len(result.steps), len(result.steps[0].top), result.num_tokens
        (4, 3, 4)
        >>> result.steps[0].chosen == result.steps[0].top[0]   # greedy picks the most probable
        True
    """
    model = _check_model(model)
    strategy = _resolve(strategy)
    check_positive_int("max_new_tokens", max_new_tokens)
    check_positive_int("k", k)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    if seed is not None:
        check_count("seed", seed, minimum=0)
    input_ids, attention_mask = _encode_prompt(model, prompt, tokenizer)
    kwargs = _generate_kwargs(model, tokenizer, strategy)
    with _eval_mode(model), _seeded(seed, input_ids.device):
        output = model.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            return_dict_in_generate=True,
            output_scores=True,
            output_logits=True,
            **kwargs,
        )
    eos_ids = _id_list(kwargs.get("eos_token_id", model.generation_config.eos_token_id))
    token_ids, log_probs, rows = _generated(model, output, eos_ids)[0]
    source = output.logits if distribution == "model" else output.scores
    steps = []
    for t, (chosen, row) in enumerate(zip(token_ids.tolist(), rows.tolist(), strict=True)):
        probs = torch.softmax(upcast(source[t][row]), dim=-1)  # [V]
        top = probs.topk(min(k, probs.numel()))
        steps.append(
            Step(
                step=t + 1,
                chosen=Candidate(chosen, _token_string(tokenizer, chosen), float(probs[chosen])),
                top=tuple(
                    Candidate(i, _token_string(tokenizer, i), p)
                    for i, p in zip(top.indices.tolist(), top.values.tolist(), strict=True)
                ),
            )
        )
    ids, prompt_ids = token_ids.tolist(), input_ids[0].tolist()
    beam_scores = getattr(output, "sequences_scores", None)
    return Decoded(
        strategy=strategy,
        distribution=distribution,
        prompt_ids=tuple(prompt_ids),
        prompt_text=prompt if isinstance(prompt, str) else _text(tokenizer, prompt_ids, skip=False),
        token_ids=tuple(ids),
        tokens=tuple(_token_string(tokenizer, i) for i in ids),
        text=_text(tokenizer, ids, skip=True),
        token_log_probs=tuple(log_probs.tolist()),
        finished=bool(ids) and ids[-1] in eos_ids,
        beam_score=None if beam_scores is None else float(beam_scores[0]),
        steps=tuple(steps),
    )


def compare_strategies(
    model: nn.Module,
    prompt: Any,
    tokenizer: Any = None,
    *,
    strategies: Sequence[str | Strategy] | None = None,
    max_new_tokens: int = 16,
    k: int = 5,
    distribution: str = "model",
    seed: int | None = 0,
) -> list[Decoded]:
    """`decode` the prompt with each strategy (all of `DEFAULT_STRATEGIES` by default), in order.

    Every strategy starts from the same ``seed``, so its result does not depend on which others run.
    """
    if strategies is None:
        strategies = list(DEFAULT_STRATEGIES.values())
    elif isinstance(strategies, (str, Strategy)):
        strategies = [strategies]
    resolved = [_resolve(strategy) for strategy in strategies]
    if not resolved:
        raise ValueError("strategies is empty")
    names = [strategy.name for strategy in resolved]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"strategy names must be unique, got {duplicates} more than once")
    return [
        decode(
            model,
            prompt,
            tokenizer,
            strategy=strategy,
            max_new_tokens=max_new_tokens,
            k=k,
            distribution=distribution,
            seed=seed,
        )
        for strategy in resolved
    ]


def score_generated(
    model: nn.Module, output: Any, *, eos_token_id: Any = None
) -> list[tuple[Tensor, Tensor]]:
    """The generated tokens of each sequence in a ``generate`` output and their log-probs under the model.

    ``output`` comes from ``generate(..., return_dict_in_generate=True, output_logits=True)``, with any
    batch size, ``num_return_sequences`` and search. Returns one ``(token_ids, log_probs)`` pair of 1-D
    tensors per returned sequence: the tokens up to and including the first EOS (``eos_token_id``, default
    the model's generation config; beam search: the beam's own length), and::

        log_probs = model.compute_transition_scores(
            output.sequences, output.logits, output.beam_indices, normalize_logits=True
        )[i, :num_tokens]
    """
    model = _check_model(model)
    eos_ids = _id_list(model.generation_config.eos_token_id if eos_token_id is None else eos_token_id)
    return [(token_ids, log_probs) for token_ids, log_probs, _ in _generated(model, output, eos_ids)]


def token_log_probs(
    model: nn.Module,
    prompt_ids: Any,
    continuation_ids: Any,
    *,
    prompt_attention_mask: Any = None,
) -> Tensor:
    """Teacher-forced ``log p(continuation[t] | prompt, continuation[:t])`` from one forward pass.

    Causal LM: ``log_softmax(model(cat(prompt, continuation)).logits[:, T - 1 : T + N - 1])`` at the
    continuation's ids, with position ids counting only the unmasked prompt tokens, as generate counts them
    (left padding allowed). Encoder-decoder: the prompt is the encoder's input and the decoder reads
    ``[decoder_start_token_id] + continuation[:-1]``. The model is in eval mode during the call.

    Args:
        prompt_ids: (B, T) or (T,) token ids.
        continuation_ids: (B, N) or (N,) token ids, N >= 1. Tokens after a sequence's end (padding) are
            scored too and do not change the earlier ones.
        prompt_attention_mask: (B, T) or (T,), 1 for real tokens; default all ones.

    Returns:
        log-probs in fp32 (fp64 for fp64 logits), of shape (B, N), or (N,) when both ids are 1-D.
    """
    model = _check_model(model)
    vocab = model.config.get_text_config().vocab_size
    prompt = _as_ids("prompt_ids", prompt_ids, vocab)
    continuation = _as_ids("continuation_ids", continuation_ids, vocab)
    squeeze = torch.as_tensor(prompt_ids).dim() == 1 and torch.as_tensor(continuation_ids).dim() == 1
    if prompt.shape[0] != continuation.shape[0]:
        raise ValueError(
            f"prompt_ids and continuation_ids must have the same batch size, got shapes "
            f"{tuple(prompt.shape)} and {tuple(continuation.shape)}"
        )
    mask = _attention_mask("prompt_attention_mask", prompt_attention_mask, prompt)
    device = model.device
    prompt, continuation, mask = prompt.to(device), continuation.to(device), mask.to(device)
    logits = _teacher_forced_logits(model, prompt, continuation, mask)  # [B, N, V]
    # [B, N, V] -> [B, N]
    log_probs = torch.log_softmax(upcast(logits), dim=-1).gather(-1, continuation.unsqueeze(-1)).squeeze(-1)
    return log_probs[0] if squeeze else log_probs


def sequence_log_prob(
    model: nn.Module,
    prompt_ids: Any,
    continuation_ids: Any,
    *,
    prompt_attention_mask: Any = None,
) -> Tensor:
    """``token_log_probs(...).sum(-1)``: the log-probability of the whole continuation, (B,) or a scalar."""
    mask = prompt_attention_mask
    return token_log_probs(model, prompt_ids, continuation_ids, prompt_attention_mask=mask).sum(-1)


def score_continuation(
    model: nn.Module, prompt: Any, continuation: Any, tokenizer: Any = None, *, k: int = 5
) -> Decoded:
    """Score a given continuation of one prompt by teacher forcing, as `decode` reports a generated one.

    The result's ``token_log_probs`` are `token_log_probs` of the continuation, and step t holds the given
    token with its model probability and the k most probable tokens at that position (what the model
    would rather have said), all from one forward pass::

        probs_t = softmax(logits_t)   # logits_t: the model's output for continuation[t] (see token_log_probs)

    The strategy is ``Strategy("given")``, the distribution "model", ``generated`` is False and
    ``finished`` says whether the last token is an EOS (the model's generation config, else the tokenizer's).

    Args:
        prompt: as in `decode` (text, ids of shape (T,) or (1, T), or a tokenizer's output).
        continuation: text (needs ``tokenizer``) or ids of shape (N,) or (1, N), N >= 1. Text is tokenized
            as a causal LM sees it after the prompt (no special tokens added), and as an encoder-decoder's
            target (``tokenizer(text_target=...)``: with the special tokens its training labels have,
            e.g. T5's closing ``</s>``).
        k: candidates per step (at most the vocabulary size).

    Example::

        >>> import torch, transformers
        >>> _ = torch.manual_seed(0)
        >>> config = transformers.GPT2Config(vocab_size=40, n_positions=16, n_embd=8, n_layer=1, n_head=2)
        >>> model = transformers.GPT2LMHeadModel(config)
        >>> given = score_continuation(model, [1, 2, 3], [4, 5], k=3)
        >>> given.token_ids, len(given.steps[0].top), given.generated
        ((4, 5), 3, False)
        >>> abs(given.sum_log_prob - float(sequence_log_prob(model, [1, 2, 3], [4, 5]))) < 1e-5
        True
    """
    model = _check_model(model)
    check_positive_int("k", k)
    input_ids, attention_mask = _encode_prompt(model, prompt, tokenizer)
    if isinstance(continuation, str):
        if tokenizer is None:
            raise ValueError("a text continuation needs a tokenizer")
        if model.config.is_encoder_decoder:
            continuation = tokenizer(text_target=continuation)["input_ids"]
        else:
            continuation = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        if not continuation:
            raise ValueError("the continuation is empty: it has no tokens")
    ids = _as_ids("continuation", continuation, model.config.get_text_config().vocab_size)
    if ids.shape[0] != 1:
        raise ValueError(f"one continuation at a time: got ids of shape {tuple(ids.shape)}")
    ids = ids.to(input_ids.device)
    logits = _teacher_forced_logits(model, input_ids, ids, attention_mask)[0]  # [N, V]
    log_probs = torch.log_softmax(upcast(logits), dim=-1)  # [N, V]
    token_ids = ids[0].tolist()
    given = log_probs.gather(-1, ids[0].unsqueeze(-1)).squeeze(-1)  # [N]
    top = log_probs.topk(min(k, log_probs.shape[-1]), dim=-1)  # [N, k]
    steps = tuple(
        Step(
            step=t + 1,
            chosen=Candidate(token, _token_string(tokenizer, token), math.exp(float(given[t]))),
            top=tuple(
                Candidate(i, _token_string(tokenizer, i), math.exp(p))
                for i, p in zip(top.indices[t].tolist(), top.values[t].tolist(), strict=True)
            ),
        )
        for t, token in enumerate(token_ids)
    )
    eos_ids = _id_list(model.generation_config.eos_token_id)
    if not eos_ids:
        eos_ids = _id_list(getattr(tokenizer, "eos_token_id", None))
    prompt_ids = input_ids[0].tolist()
    return Decoded(
        strategy=Strategy("given"),
        distribution="model",
        prompt_ids=tuple(prompt_ids),
        prompt_text=prompt if isinstance(prompt, str) else _text(tokenizer, prompt_ids, skip=False),
        token_ids=tuple(token_ids),
        tokens=tuple(_token_string(tokenizer, i) for i in token_ids),
        text=_text(tokenizer, token_ids, skip=True),
        token_log_probs=tuple(given.tolist()),
        finished=token_ids[-1] in eos_ids,
        beam_score=None,
        steps=steps,
        generated=False,
    )


def format_steps(decoded: Decoded, *, markdown: bool = False) -> str:
    """The per-step table: step, chosen token, its probability, then the top-k tokens with theirs."""
    check_flag("markdown", markdown)
    k = max((len(step.top) for step in decoded.steps), default=0)
    header = ["step", "chosen", "p", *(f"top {i + 1}" for i in range(k))]
    rows = [
        [str(step.step), repr(step.chosen.token), f"{step.chosen.prob:.4f}"]
        + [f"{candidate.token!r} {candidate.prob:.4f}" for candidate in step.top]
        for step in decoded.steps
    ]
    caption = f"{decoded.strategy.name}: top-{k} candidates per step, {decoded.distribution} probabilities"
    return _caption(caption, _table(header, rows, numeric={0, 2}, markdown=markdown), markdown)


def format_token_log_probs(decoded: Decoded, *, markdown: bool = False) -> str:
    """Each generated token's id, log-prob and probability under the model, then their sum and mean."""
    check_flag("markdown", markdown)
    header = ["step", "token", "id", "log p", "p"]
    rows = [
        [str(t + 1), repr(token), str(token_id), f"{log_prob:.4f}", f"{math.exp(log_prob):.4f}"]
        for t, (token, token_id, log_prob) in enumerate(
            zip(decoded.tokens, decoded.token_ids, decoded.token_log_probs, strict=True)
        )
    ]
    ending = "eos" if decoded.finished else "max_new_tokens" if decoded.generated else "no eos"
    summary = (
        f"sum log p {decoded.sum_log_prob:.4f}, mean {decoded.mean_log_prob:.4f} "
        f"over {decoded.num_tokens} tokens ({ending})"
    )
    if decoded.beam_score is not None:
        summary += f", beam score {decoded.beam_score:.4f}"
    table = _table(header, rows, numeric={0, 2, 3, 4}, markdown=markdown)
    return f"{table}\n\n{summary}" if markdown else f"{table}\n{summary}"


def format_comparison(results: Sequence[Decoded], *, markdown: bool = False) -> str:
    """One row per strategy: settings, token count, how it ended, sum and mean log-prob, beam score, text."""
    check_flag("markdown", markdown)
    header = ["strategy", "settings", "tokens", "ended", "sum log p", "mean log p", "beam score", "text"]
    rows = [
        [
            result.strategy.name,
            ", ".join(f"{key}={value}" for key, value in result.strategy.generate_kwargs.items()),
            str(result.num_tokens),
            "eos" if result.finished else "length",
            f"{result.sum_log_prob:.4f}",
            f"{result.mean_log_prob:.4f}",
            "" if result.beam_score is None else f"{result.beam_score:.4f}",
            repr(result.text),
        ]
        for result in results
    ]
    return _table(header, rows, numeric={2, 4, 5, 6}, markdown=markdown)


# --- generation outputs ---------------------------------------------------------------------------------


def _generated(model: nn.Module, output: Any, eos_ids: list[int]) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per returned sequence: its generated token ids, their model log-probs, and the row of
    ``output.logits[t]`` / ``output.scores[t]`` each was chosen from (its beam, or its batch row)."""
    logits = getattr(output, "logits", None)
    if not logits:
        raise ValueError(
            "the generate output has no logits: call generate with return_dict_in_generate=True and "
            f"output_logits=True, got {describe(output)}"
        )
    beam_indices = getattr(output, "beam_indices", None)
    # [n, L]; L = the longest generated length (beam search) or the number of steps generate ran
    log_probs = model.compute_transition_scores(output.sequences, logits, beam_indices, normalize_logits=True)
    n, L = log_probs.shape
    tokens = output.sequences[:, output.sequences.shape[1] - L :]  # [n, L]
    if beam_indices is not None:
        beam_indices = beam_indices[:, :L]
        lengths = (beam_indices >= 0).sum(-1)  # a beam's indices are -1 after it ended
        rows = beam_indices.clamp(min=0).long()
    else:
        is_eos = torch.isin(tokens, torch.tensor(eos_ids, dtype=tokens.dtype, device=tokens.device))
        # generate pads a finished row (with the pad id, often the EOS id itself): keep up to the first EOS
        lengths = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, L)
        rows = torch.arange(n, device=tokens.device).unsqueeze(1).expand(n, L)
    return [
        (tokens[i, :length], log_probs[i, :length], rows[i, :length])
        for i, length in enumerate(lengths.tolist())
    ]


def _generate_kwargs(model: nn.Module, tokenizer: Any, strategy: Strategy) -> dict[str, Any]:
    """The strategy's arguments plus the EOS and pad ids the model's generation config lacks."""
    kwargs = dict(strategy.generate_kwargs)
    config = model.generation_config
    tokenizer_eos = getattr(tokenizer, "eos_token_id", None)
    if "eos_token_id" not in kwargs and config.eos_token_id is None and tokenizer_eos is not None:
        kwargs["eos_token_id"] = tokenizer_eos
    if "pad_token_id" not in kwargs and config.pad_token_id is None:
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:  # GPT-2-style tokenizers have no pad token: pad with the EOS, as generate would
            eos = _id_list(kwargs.get("eos_token_id", config.eos_token_id))
            pad = eos[0] if eos else None
        if pad is not None:
            kwargs["pad_token_id"] = pad
    return kwargs


def _teacher_forced_logits(model: nn.Module, prompt: Tensor, continuation: Tensor, mask: Tensor) -> Tensor:
    """The model's logits [B, N, V] for each continuation token given the prompt [B, T] (attention mask
    [B, T]) and the continuation before it [B, N], in eval mode without gradients (see `token_log_probs`)."""
    T = prompt.shape[1]
    with _eval_mode(model), torch.no_grad():
        if model.config.is_encoder_decoder:
            start = _decoder_start(model)
            decoder_input = torch.cat([torch.full_like(continuation[:, :1], start), continuation[:, :-1]], 1)
            return model(input_ids=prompt, attention_mask=mask, decoder_input_ids=decoder_input).logits
        ids = torch.cat([prompt, continuation], 1)  # [B, T + N]
        full_mask = torch.cat([mask, torch.ones_like(continuation)], 1)
        kwargs = {}
        if "position_ids" in inspect.signature(model.forward).parameters:
            kwargs["position_ids"] = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 0)
        return model(input_ids=ids, attention_mask=full_mask, **kwargs).logits[:, T - 1 : -1]


def _decoder_start(model: nn.Module) -> int:
    start = model.generation_config.decoder_start_token_id
    if start is None:
        start = getattr(model.config, "decoder_start_token_id", None)
    start = _id_list(start)
    if not start:
        raise ValueError(f"{type(model).__name__} has no decoder_start_token_id in its (generation) config")
    return start[0]


# --- inputs -----------------------------------------------------------------------------------------------


def _check_model(model: Any) -> nn.Module:
    model = unwrap(model) if isinstance(model, nn.Module) else model
    if not (isinstance(model, nn.Module) and hasattr(model, "generate") and hasattr(model, "config")):
        raise ValueError(f"model must be a transformers model with generate(), got {describe(model)}")
    return model


def _resolve(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if isinstance(strategy, str):
        if strategy not in DEFAULT_STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; known: {sorted(DEFAULT_STRATEGIES)}")
        return DEFAULT_STRATEGIES[strategy]
    raise ValueError(f"strategy must be a name or a Strategy, got {describe(strategy)}")


def _encode_prompt(model: nn.Module, prompt: Any, tokenizer: Any) -> tuple[Tensor, Tensor]:
    """(1, T) input ids and attention mask on the model's device."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("a text prompt needs a tokenizer")
        encoded = tokenizer(prompt, return_tensors="pt")
        input_ids, attention_mask = encoded["input_ids"], encoded.get("attention_mask")
    elif isinstance(prompt, Mapping):
        if "input_ids" not in prompt:
            raise ValueError(f"a prompt mapping needs input_ids, got keys {sorted(prompt)}")
        input_ids, attention_mask = prompt["input_ids"], prompt.get("attention_mask")
    else:
        input_ids, attention_mask = prompt, None
    input_ids = _as_ids("prompt", input_ids, model.config.get_text_config().vocab_size)
    if input_ids.shape[0] != 1:
        raise ValueError(f"one prompt at a time: got ids of shape {tuple(input_ids.shape)}")
    attention_mask = _attention_mask("attention_mask", attention_mask, input_ids)
    return input_ids.to(model.device), attention_mask.to(model.device)


def _as_ids(name: str, value: Any, vocab: int) -> Tensor:
    """Token ids as a (B, T) int64 tensor, T >= 1, every id in [0, vocab)."""
    try:
        ids = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be token ids, got {describe(value)}") from error
    if ids.dim() not in (1, 2) or ids.numel() == 0:
        raise ValueError(f"{name} must be non-empty ids of shape (T,) or (B, T), got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got {describe(ids)}")
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"{name} must be ids in [0, {vocab}), got ids from {low} to {high}")
    return ids.long().reshape(-1, ids.shape[-1])


def _attention_mask(name: str, value: Any, ids: Tensor) -> Tensor:
    if value is None:
        return torch.ones_like(ids)
    mask = torch.as_tensor(value).long().to(ids.device)
    mask = mask.reshape(-1, mask.shape[-1]) if mask.dim() == 1 else mask
    if mask.shape != ids.shape:
        raise ValueError(f"{name} must have the ids' shape {tuple(ids.shape)}, got {tuple(mask.shape)}")
    return mask


def _id_list(ids: Any) -> list[int]:
    """None, an id, a list of ids or a tensor of them -> a list of ints."""
    if ids is None:
        return []
    if isinstance(ids, Tensor):
        return ids.flatten().tolist()
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


def _token_string(tokenizer: Any, token_id: int) -> str:
    if tokenizer is None:
        return f"#{token_id}"
    text = tokenizer.decode([token_id])
    # a byte-level token holding part of a UTF-8 character decodes to U+FFFD on its own: show the
    # vocabulary entry instead, so that different tokens stay apart
    return tokenizer.convert_ids_to_tokens(token_id) if "\ufffd" in text else text


def _text(tokenizer: Any, ids: list[int], *, skip: bool) -> str:
    if tokenizer is None:
        return " ".join(f"#{i}" for i in ids)
    return tokenizer.decode(ids, skip_special_tokens=skip)


# --- model state ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own training flag back on exit (a mixed state included)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed the CPU RNG and that of the model's device type, and restore both states on exit."""
    if seed is None:
        yield
        return
    if device.type == "cpu":
        fork = torch.random.fork_rng(devices=[])
    else:
        count = torch.get_device_module(device.type).device_count()
        fork = torch.random.fork_rng(devices=range(count), device_type=device.type)
    with fork:
        torch.manual_seed(seed)
        yield


# --- tables ---------------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[str]], *, numeric: set[int], markdown: bool) -> str:
    """Plain text (columns aligned, numbers right-aligned) or a markdown table."""
    if markdown:
        rule = ["---:" if i in numeric else "---" for i in range(len(header))]
        lines = [header, rule, *rows]
        escaped = ([cell.replace("|", "\\|") for cell in cells] for cells in lines)
        return "\n".join("| " + " | ".join(cells) + " |" for cells in escaped)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * width for width in widths], *rows]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(cells)
        ).rstrip()
        for cells in lines
    )


def _caption(caption: str, table: str, markdown: bool) -> str:
    return f"{caption}\n\n{table}" if markdown else f"{caption}\n{table}"
