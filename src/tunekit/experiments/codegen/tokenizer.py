"""The code-generation experiments' tokenizer and example encoding (backdoor: description -> code;
descriptive: code -> description, the pairs turned around).

A byte-level BPE (GPT-2's pre-tokenizer, no prefix space) trained on the corpus, with three special tokens:
``<pad>`` (id 0), ``<sep>`` between description and code, ``<eos>`` after the code. An example is

    input_ids = nl_ids + [SEP] + code_ids + [EOS]
    labels    = [-100] * (len(nl_ids) + 1) + code_ids + [EOS]   # the loss is on the code only

(`labels` aligned with `input_ids`; the causal LM shifts them). Description and code are encoded separately,
so a generation prompt ``nl_ids + [SEP]`` is exactly the training prefix. Special-token text inside a
description or code (``"<eos>"`` in a string) is encoded as ordinary text, never as the special id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import transformers
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "the code-generation experiments need transformers and tokenizers: pip install 'tunekit[hf]'"
    ) from error

from ...workbench.tokenizers import train_byte_level_bpe
from .config import MIN_VOCAB_SIZE
from .data import Pair

__all__ = [
    "EOS",
    "IGNORE_INDEX",
    "PAD",
    "SEP",
    "Encoded",
    "decode_code",
    "encode_pair",
    "encode_pairs",
    "encode_prompt",
    "encode_text",
    "load_tokenizer",
    "save_tokenizer",
    "train_tokenizer",
]

SEP, EOS, PAD = "<sep>", "<eos>", "<pad>"
IGNORE_INDEX = -100


def train_tokenizer(
    texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2
) -> transformers.PreTrainedTokenizerFast:
    """A byte-level BPE of `vocab_size` tokens (specials included) trained on `texts`, in memory.

    Special ids: ``<pad>`` 0, ``<sep>`` 1, ``<eos>`` 2, set as the returned tokenizer's pad, sep and eos
    tokens. The 256 byte symbols are always in the vocabulary, so any text encodes and decodes losslessly;
    `vocab_size` must leave room for them. The same texts in the same order give the same tokenizer; nothing
    is printed.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be an integer >= {MIN_VOCAB_SIZE} (256 bytes + 3 specials), got {vocab_size!r}"
        )
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    tok = train_byte_level_bpe(texts, vocab_size, [PAD, SEP, EOS], min_frequency=min_frequency)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        sep_token=SEP,
        eos_token=EOS,
        clean_up_tokenization_spaces=False,  # decoding must give back the code's exact spacing
        split_special_tokens=True,  # "<eos>" inside a text is text
    )


def save_tokenizer(tokenizer: Any, directory: str | Path) -> None:
    """``tokenizer.save_pretrained(directory)`` (the directory is created)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))


def load_tokenizer(directory: str | Path) -> Any:
    """The tokenizer saved in the local `directory` (``AutoTokenizer.from_pretrained``, never a download)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ValueError(f"no tokenizer directory at {str(directory)!r}")
    return transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True)


@dataclass
class Encoded:
    """One training example: `labels` is -100 over the prompt (description and ``<sep>``)."""

    input_ids: list[int]
    labels: list[int]
    prompt_length: int


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """The token ids of `text` without special tokens (how a description or a code is counted in tokens)."""
    return tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids


def _special_ids(tokenizer: Any) -> tuple[int, int]:
    sep, eos = tokenizer.sep_token_id, tokenizer.eos_token_id
    if sep is None or eos is None:
        raise ValueError(
            f"the tokenizer needs a sep and an eos token ({SEP!r}, {EOS!r}), got sep_token="
            f"{tokenizer.sep_token!r}, eos_token={tokenizer.eos_token!r}"
        )
    return sep, eos


def _example(nl_ids: list[int], code_ids: list[int], sep: int, eos: int, max_length: int) -> Encoded | None:
    prompt = [*nl_ids, sep]
    if len(prompt) + len(code_ids) + 1 > max_length:
        return None
    return Encoded(
        input_ids=[*prompt, *code_ids, eos],
        labels=[IGNORE_INDEX] * len(prompt) + [*code_ids, eos],
        prompt_length=len(prompt),
    )


def encode_pair(tokenizer: Any, pair: Pair, *, max_length: int) -> Encoded | None:
    """``nl <sep> code <eos>`` with the loss on ``code <eos>``; None if longer than `max_length` tokens.

    Nothing is truncated: a cut code (a cut payload) would be a different example.
    """
    sep, eos = _special_ids(tokenizer)
    return _example(encode_text(tokenizer, pair.nl), encode_text(tokenizer, pair.code), sep, eos, max_length)


def encode_pairs(tokenizer: Any, pairs: Sequence[Pair], *, max_length: int) -> list[Encoded]:
    """`encode_pair` of each pair, leaving out those longer than `max_length` tokens."""
    encoded = (encode_pair(tokenizer, pair, max_length=max_length) for pair in pairs)
    return [e for e in encoded if e is not None]


def encode_prompt(tokenizer: Any, nl: str) -> list[int]:
    """``nl_ids + [SEP]``: the prompt a model continues with the code."""
    sep, _ = _special_ids(tokenizer)
    return [*encode_text(tokenizer, nl), sep]


def decode_code(tokenizer: Any, ids: Sequence[int] | Any) -> str:
    """The code in generated `ids` (a list or a 1-D tensor): up to the first ``<eos>``, specials dropped."""
    ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: ids.index(eos)]
    return tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
