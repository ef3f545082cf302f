"""Examples to Trainer rows (token ids and labels) per task, and the collator that pads them.

- sequence classification: ``input_ids`` of the text, ``labels`` the class id; for multi-label the 0/1
  floats of each class (C,), in label order; for regression the float target;
- token classification: the words encoded with ``is_split_into_words``; a word's tag labels its first
  token, its other tokens and the special tokens get -100;
- causal LM: ``prompt + target + <eos>`` with -100 over the prompt (the loss is on the target), or
  ``text + <eos>`` all supervised without a target field;
- seq2seq: the text as ``input_ids``, the target's ids as ``labels``.

Everything is cut at ``max_length`` tokens; `Encoded.truncated` counts the examples that were. A long text
is cut before it is tokenized (`_head`): the work is proportional to ``max_length``, not to the text, and
the token ids are the same as those of the whole text cut at ``max_length``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import transformers

from .data import Example

__all__ = ["IGNORE_INDEX", "Encoded", "collator", "encode"]

IGNORE_INDEX = -100
# whitespace to every tokenizer's pre-tokenizer: no word, hence no token, spans it
_SPACE = " \t\n\r"
_SPACE_RUN_START = re.compile(r"(?<![ \t\n\r])[ \t\n\r]")
_CHARS_PER_TOKEN = 8  # the first prefix tried: more than the characters of a token in ordinary text


@dataclass
class Encoded:
    """Trainer rows, and how many examples were cut at max_length (and of them, how many kept no label)."""

    rows: list[dict[str, Any]]
    truncated: int
    unsupervised: int


def encode(
    examples: Sequence[Example],
    tokenizer: Any,
    task: str,
    label2id: Mapping[str, int],
    max_length: int,
) -> Encoded:
    """The rows of `examples` for `task` (see the module docstring)."""
    encoder = {
        "sequence_classification": _sequence_classification,
        "token_classification": _token_classification,
        "causal_lm": _causal_lm,
        "seq2seq": _seq2seq,
    }[task]
    if task == "token_classification" and not getattr(tokenizer, "is_fast", False):
        raise ValueError("token classification needs a fast tokenizer (word ids of each token)")
    specials = tokenizer.num_special_tokens_to_add()
    if max_length <= specials:
        raise ValueError(
            f"max_length {max_length} leaves no room for text: the tokenizer adds {specials} special tokens "
            "to every example; raise --max-length"
        )
    rows, truncated, unsupervised = [], 0, 0
    for example in examples:
        row, cut = encoder(example, tokenizer, label2id, max_length)
        truncated += cut
        # a float is a multi-label or regression target, never the ignored index (-100.0 may be a target)
        if all(type(label) is int and label == IGNORE_INDEX for label in _as_list(row["labels"])):
            unsupervised += 1
        rows.append(row)
    return Encoded(rows, truncated, unsupervised)


def collator(task: str, tokenizer: Any, model: Any, *, packing: bool = False) -> Any:
    """The data collator that pads a batch of the task's rows (labels padded with -100); with `packing`
    (causal LM) one row of the batch's examples end to end, position ids restarting at 0 for each, and -100
    on each example's first label (no example predicts the next one's start)."""
    if packing:
        return transformers.DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)
    if task == "sequence_classification":
        return transformers.DataCollatorWithPadding(tokenizer)
    if task == "token_classification":
        return transformers.DataCollatorForTokenClassification(tokenizer)
    if task == "seq2seq":  # builds decoder_input_ids from the labels
        return transformers.DataCollatorForSeq2Seq(tokenizer, model=model)
    return transformers.DataCollatorForSeq2Seq(tokenizer, padding=True)


def _as_list(labels: Any) -> list[int]:
    return labels if isinstance(labels, list) else [labels]


def _head(text: str, tokenize: Callable[[str], list[int]], tokenizer: Any, max_length: int):
    """(`text` or a prefix of it, ``tokenize`` of that): a prefix only when its tokens outnumber max_length
    and the tokenizer's special tokens, so that its first max_length tokens are the whole text's.

    The prefix ends where a run of whitespace starts: no token spans one (pre-tokenizers cut words there, and
    SentencePiece learns no piece across one), so a prefix of whole words has a prefix of the text's tokens
    (plus the special tokens).
    Tried from `_CHARS_PER_TOKEN` characters a token and doubled: the tokenizer never sees much more than
    the text's first max_length tokens. A text without whitespace near the cut is tokenized up to its next
    whitespace (all of it if there is none): cutting a word could change its tokens.
    """
    enough = max_length + tokenizer.num_special_tokens_to_add()
    size = _CHARS_PER_TOKEN * enough
    while size < len(text):
        end = _word_end(text, size)
        if end is None:
            break
        ids = tokenize(text[:end])
        if len(ids) > enough:
            return text[:end], ids
        size = 2 * max(size, end)
    return text, tokenize(text)


def _word_end(text: str, size: int) -> int | None:
    """Where the last run of whitespace starting by `size` starts, else the first after it (None: none)."""
    end = max(text.rfind(space, 0, size + 1) for space in _SPACE)
    while end > 0 and text[end - 1] in _SPACE:
        end -= 1
    if end > 0:
        return end
    match = _SPACE_RUN_START.search(text, size)
    return None if match is None else match.start()


def _sequence_classification(example: Example, tokenizer: Any, label2id: Mapping[str, int], max_length: int):
    text, ids = _head(example.text, lambda t: tokenizer(t)["input_ids"], tokenizer, max_length)
    row = dict(tokenizer(text, truncation=True, max_length=max_length))
    row["labels"] = _sequence_label(example.label, label2id)
    return row, len(ids) > max_length


def _sequence_label(label: str | tuple[str, ...] | float, label2id: Mapping[str, int]) -> int | float | list:
    """The class id (single-label), the multi-hot floats (a tuple of classes) or the float (regression)."""
    if isinstance(label, float):
        return label
    if isinstance(label, tuple):
        multi_hot = [0.0] * len(label2id)
        for name in label:
            multi_hot[label2id[name]] = 1.0
        return multi_hot
    return label2id[label]


def _token_classification(example: Example, tokenizer: Any, label2id: Mapping[str, int], max_length: int):
    # each word is tokenized apart, so the first n words have the first tokens; a word has a token or more
    # (rarely none: a control character), so the first max_length words are nearly always enough
    words, count = list(example.text), max_length
    enough = max_length + tokenizer.num_special_tokens_to_add()
    while count < len(words):
        full = tokenizer(words[:count], is_split_into_words=True)["input_ids"]
        if len(full) > enough:
            words = words[:count]
            break
        count *= 2
    else:
        full = tokenizer(words, is_split_into_words=True)["input_ids"]
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    labels, previous = [], None
    for word in encoding.word_ids():
        first_token = word is not None and word != previous
        labels.append(label2id[example.label[word]] if first_token else IGNORE_INDEX)
        previous = word
    row = dict(encoding)
    row["labels"] = labels
    return row, len(full) > max_length


def _causal_lm(example: Example, tokenizer: Any, label2id: Mapping[str, int], max_length: int):
    eos = tokenizer.eos_token_id
    _, prompt = _head(example.text, lambda t: tokenizer(t)["input_ids"], tokenizer, max_length)
    if example.target is None:
        input_ids = [*prompt, eos]
        labels = list(input_ids)
    else:
        _, target = _head(
            example.target,
            lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
            tokenizer,
            max_length,
        )
        target = [*target, eos]
        input_ids = [*prompt, *target]
        labels = [IGNORE_INDEX] * len(prompt) + target
    cut = len(input_ids) > max_length
    input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}, cut


def _seq2seq(example: Example, tokenizer: Any, label2id: Mapping[str, int], max_length: int):
    text, source = _head(example.text, lambda t: tokenizer(t)["input_ids"], tokenizer, max_length)
    target_text, target = _head(
        example.target, lambda t: tokenizer(text_target=t)["input_ids"], tokenizer, max_length
    )
    row = dict(tokenizer(text, truncation=True, max_length=max_length))
    row["labels"] = tokenizer(text_target=target_text, truncation=True, max_length=max_length)["input_ids"]
    return row, len(source) > max_length or len(target) > max_length
