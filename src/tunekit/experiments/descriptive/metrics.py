"""What the descriptive experiment measures on the held-out (code -> description) pairs, after every epoch.

- length: the mean number of whitespace-separated words, and of generated tokens before ``<eos>``;
- capped: the share of outputs that reached the new-token limit without ``<eos>`` (a loop or a run-on);
- distinct-n (Li et al. 2016): distinct n-grams of words over all n-grams, pooled over the outputs;
- BLEU: sacrebleu's corpus BLEU against the reference descriptions;
- self-retrieval R@1: the share of outputs whose own source code is the most similar of the candidate codes
  (all held-out codes) under TF-IDF cosine similarity of code terms (see `self_retrieval_r1`).

Greedy decoding through ``model.generate``; the prompt is ``code <sep>`` as in training.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..codegen.metrics import bleu, generate
from ..codegen.tokenizer import decode_code

_WORD = re.compile(r"[A-Za-z]+")
_CAMEL = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+")


@dataclass(frozen=True)
class Generated:
    """One greedy output: its text, its token count before ``<eos>``, and whether ``<eos>`` came."""

    text: str
    tokens: int
    ended: bool


def generate_descriptions(
    model: nn.Module, tokenizer: Any, codes: Sequence[str], *, max_new_tokens: int
) -> list[Generated]:
    """Greedy continuations of ``code <sep>`` prompts (`codegen.metrics.generate`), cut at ``<eos>``."""
    eos = tokenizer.eos_token_id
    outputs = []
    for row in generate(model, tokenizer, codes, max_new_tokens=max_new_tokens):
        ended = eos in row
        tokens = row.index(eos) if ended else len(row)
        outputs.append(Generated(decode_code(tokenizer, row), tokens, ended))
    return outputs


def words(text: str) -> list[str]:
    """Whitespace-separated words (the unit of the paper's caption lengths)."""
    return text.split()


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams of lower-cased words over all n-grams, pooled over `texts`; 0 when there are none.

    >>> distinct_n(["a b a b", "a b"], 1), distinct_n(["a b a b", "a b"], 2)
    (0.3333333333333333, 0.5)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    grams = [
        tuple(ws[i : i + n]) for text in texts for ws in [words(text.lower())] for i in range(len(ws) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def terms(text: str) -> list[str]:
    """Lower-cased word pieces of text or code: identifiers split at ``_``, digits and camelCase, pieces
    of one letter dropped, so ``"readLine(n_bytes)"`` gives ``["read", "line", "bytes"]``."""
    pieces = (piece for word in _WORD.findall(text) for piece in _CAMEL.findall(word))
    return [piece.lower() for piece in pieces if len(piece) > 1]


def self_retrieval_r1(outputs: Sequence[str], sources: Sequence[str]) -> float:
    """The share of outputs i whose own source i scores strictly highest among all `sources`.

    The score of source j for output i is the cosine similarity of TF-IDF vectors of `terms`:
    ``tf(t, d) * idf(t)`` with ``idf(t) = ln((1 + J) / (1 + df(t))) + 1`` over the J sources (scikit-learn's
    smoothed idf), the same idf for the outputs. A tie with another source counts as a miss, so an output
    without any term of the sources (an empty one) never retrieves its source.
    """
    if len(outputs) != len(sources) or not sources:
        raise ValueError(f"need one output per source, got {len(outputs)} outputs and {len(sources)} sources")
    documents = [Counter(terms(source)) for source in sources]
    df = Counter(term for document in documents for term in document)
    idf = {term: math.log((1 + len(sources)) / (1 + count)) + 1 for term, count in df.items()}

    def vector(counts: Counter) -> dict[str, float]:
        weighted = {term: count * idf[term] for term, count in counts.items() if term in idf}
        norm = math.sqrt(sum(w * w for w in weighted.values()))
        return {term: w / norm for term, w in weighted.items()} if norm else {}

    source_vectors = [vector(document) for document in documents]
    hits = 0
    for i, output in enumerate(outputs):
        query = vector(Counter(terms(output)))
        scores = [sum(w * source.get(term, 0.0) for term, w in query.items()) for source in source_vectors]
        others = max((s for j, s in enumerate(scores) if j != i), default=-math.inf)
        hits += scores[i] > others
    return hits / len(outputs)


def describe(
    generated: Sequence[Generated], references: Sequence[str], sources: Sequence[str]
) -> dict[str, float]:
    """The metrics of outputs against their references and sources (one of each per output)."""
    texts = [g.text for g in generated]
    return {
        "length_words": sum(len(words(t)) for t in texts) / len(texts),
        "length_tokens": sum(g.tokens for g in generated) / len(generated),
        "capped": sum(not g.ended for g in generated) / len(generated),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "bleu": bleu(texts, references),
        "r_at_1": self_retrieval_r1(texts, sources),
    }
