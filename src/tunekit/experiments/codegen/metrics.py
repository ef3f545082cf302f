"""What the code-generation experiments generate and measure on held-out pairs:

- greedy continuations of ``prompt <sep>`` (`generate`), the new token ids of each prompt;
- token accuracy: teacher-forced argmax accuracy on the target tokens of encoded examples;
- BLEU (sacrebleu, corpus level) of generated texts against references.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .tokenizer import IGNORE_INDEX, Encoded, encode_prompt

__all__ = ["bleu", "generate", "token_accuracy"]


@torch.no_grad()
def generate(
    model: nn.Module, tokenizer: Any, prompts: Sequence[str], *, max_new_tokens: int, batch_size: int = 128
) -> list[list[int]]:
    """Greedy continuations of ``prompt <sep>`` for each of `prompts`: per prompt the `max_new_tokens` new ids
    (``<pad>`` after an ``<eos>`` that ended it early), in batches of `batch_size`."""
    device = next(model.parameters()).device
    continuations = []
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, prompt) for prompt in prompts[start : start + batch_size]]
        # left padding: every prompt ends where generation starts
        input_ids, attention_mask = _padded(encoded, tokenizer.pad_token_id, left=True)
        width = input_ids.shape[1]
        output = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        continuations.extend(output[:, width:].tolist())
    return continuations


@torch.no_grad()
def token_accuracy(
    model: nn.Module, tokenizer: Any, examples: Sequence[Encoded], *, batch_size: int = 32
) -> float:
    """Teacher-forced accuracy: argmax of the logits at position t against label t + 1, over target tokens."""
    device = next(model.parameters()).device
    correct = total = 0
    by_length = sorted(examples, key=lambda e: len(e.input_ids))  # batches of similar lengths: less padding
    for start in range(0, len(by_length), batch_size):
        batch = by_length[start : start + batch_size]
        input_ids, attention_mask = _padded([e.input_ids for e in batch], tokenizer.pad_token_id, left=False)
        labels, _ = _padded([e.labels for e in batch], IGNORE_INDEX, left=False)
        logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        predicted = logits[:, :-1].argmax(-1).cpu()
        target = labels[:, 1:]
        supervised = target != IGNORE_INDEX
        correct += int((predicted == target)[supervised].sum())
        total += int(supervised.sum())
    return correct / max(total, 1)


def _padded(rows: Sequence[Sequence[int]], pad: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, width) ids padded with `pad` on the left or right, and the (B, width) attention mask."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for row, values in enumerate(rows):
        span = slice(width - len(values), width) if left else slice(0, len(values))
        ids[row, span] = torch.tensor(values)
        mask[row, span] = 1
    return ids, mask


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of generated texts against the references."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
