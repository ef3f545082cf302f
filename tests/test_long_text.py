"""Long-text classification with sliding windows (`tunekit.long_text`), with a locally trained WordPiece
tokenizer and tiny BERT classifiers built from configs.

Windows of MAX_LENGTH tokens ([CLS] + ROOM text tokens + [SEP]) share STRIDE tokens; a long text of more than
ten windows must be covered token by token, every token must reach the model, and a token that only the
last window holds must be able to decide the document's class.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import transformers

from tiny_models import bert_config
from tiny_tokenizer import stdlib_text, wordpiece_tokenizer
from tunekit.hf.pooled_classifier import PooledClassifier
from tunekit.long_text import (
    SlidingWindowClassifier,
    aggregate_windows,
    classify_long_texts,
    tokenize_windows,
    window_room,
)

MAX_LENGTH, STRIDE = 32, 8
ROOM = MAX_LENGTH - 2  # [CLS] and [SEP]
NUM_LABELS = 3


@pytest.fixture(scope="module")
def tokenizer():
    return wordpiece_tokenizer(300)


def long_text(tokenizer, min_tokens: int, skip: int = 0) -> str:
    """Standard-library docstrings joined until the text has at least `min_tokens` tokens."""
    parts = []
    for doc in stdlib_text()[skip:]:
        parts.append(doc)
        text = "\n".join(parts)
        if len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= min_tokens:
            return text
    raise AssertionError("not enough text")


def text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def window_contents(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[list[int]]:
    """Each window's text tokens: its real tokens without [CLS] (first) and [SEP] (last)."""
    return [ids[mask.bool()][1:-1].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True)]


def stitch(windows: list[list[int]], stride: int) -> list[int]:
    """The token sequence the windows of one text cover, each window's first `stride` tokens checked against
    the end of the previous one."""
    tokens = list(windows[0])
    for window in windows[1:]:
        assert window[:stride] == tokens[-stride:] if stride else True, "windows do not overlap by stride"
        tokens += window[stride:]
    return tokens


def tiny_bert_classifier(vocab_size: int, seed: int = 0) -> transformers.BertForSequenceClassification:
    config = bert_config(
        vocab_size,
        hidden_size=16,
        intermediate_size=32,
        max_position_embeddings=MAX_LENGTH,
        classifier_dropout=0.0,
        num_labels=NUM_LABELS,
    )
    torch.manual_seed(seed)
    return transformers.BertForSequenceClassification(config)


# --------------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("stride", [0, STRIDE, ROOM - 1])
def test_windows_cover_every_token(tokenizer, stride):
    text = long_text(tokenizer, 10 * MAX_LENGTH)
    full = text_ids(tokenizer, text)
    windows, window_to_doc = tokenize_windows(tokenizer, text, max_length=MAX_LENGTH, stride=stride)
    assert window_room(tokenizer, MAX_LENGTH) == ROOM
    count = len(window_to_doc)
    assert count == 1 + math.ceil((len(full) - ROOM) / (ROOM - stride)) and count >= 10
    assert windows["input_ids"].shape == (count, MAX_LENGTH)
    assert "overflow_to_sample_mapping" not in windows
    assert torch.equal(window_to_doc, torch.zeros(count, dtype=torch.long))
    assert (windows["input_ids"][:, 0] == tokenizer.cls_token_id).all()
    contents = window_contents(windows["input_ids"], windows["attention_mask"])
    assert all(len(content) == ROOM for content in contents[:-1])
    assert stitch(contents, stride) == full


def test_window_offsets_cover_every_character_span(tokenizer):
    texts = [
        long_text(tokenizer, 10 * MAX_LENGTH),
        "a short one",
        long_text(tokenizer, 3 * MAX_LENGTH, skip=5),
    ]
    windows, window_to_doc = tokenize_windows(
        tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE, return_offsets_mapping=True
    )
    assert window_to_doc.tolist() == sorted(window_to_doc.tolist())  # in document order
    assert set(window_to_doc.tolist()) == {0, 1, 2}
    for d, text in enumerate(texts):
        expected = {tuple(span) for span in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]}
        seen = set()
        for w in (window_to_doc == d).nonzero().flatten().tolist():
            real = windows["attention_mask"][w].bool()
            seen |= {tuple(span) for span in windows["offset_mapping"][w][real].tolist()}
        assert seen == expected, f"document {d}"


# ------------------------------------------------------------------------------------ classification


def test_classifier_sees_every_token(tokenizer):
    texts = [long_text(tokenizer, 10 * MAX_LENGTH), "short", long_text(tokenizer, 2 * MAX_LENGTH, skip=9)]
    model = tiny_bert_classifier(len(tokenizer))
    calls = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs["input_ids"], kwargs["attention_mask"])),
        with_kwargs=True,
    )
    logits = classify_long_texts(model, tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE, batch_size=4)
    assert logits.shape == (3, NUM_LABELS)
    _, window_to_doc = tokenize_windows(tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE)
    assert len(calls) == math.ceil(len(window_to_doc) / 4)
    seen = [content for ids, mask in calls for content in window_contents(ids, mask)]
    assert len(seen) == len(window_to_doc)
    for d, text in enumerate(texts):
        windows = [seen[w] for w in (window_to_doc == d).nonzero().flatten().tolist()]
        assert stitch(windows, STRIDE) == text_ids(tokenizer, text), f"document {d}"


class MarkerEncoder(torch.nn.Module):
    """A one-feature 'encoder': 1 at the marker token, 0 elsewhere."""

    def __init__(self, vocab_size: int, marker: int):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab_size, 1)
        with torch.no_grad():
            self.embed.weight.zero_()
            self.embed.weight[marker] = 1.0

    def forward(self, input_ids, attention_mask=None):
        return (self.embed(input_ids),)


def test_marker_in_the_last_window_decides_under_max(tokenizer):
    marker = tokenizer.convert_tokens_to_ids("buffer")
    filler = "the name of the default value is not given for this function"
    assert marker not in text_ids(tokenizer, filler)
    text = " ".join([filler] * 40) + " buffer"
    ids = text_ids(tokenizer, text)
    assert len(ids) > 10 * MAX_LENGTH and ids.index(marker) == len(ids) - 1
    # class 1 where a window holds the marker: max pooling sees it, logits (0.5, 2) against (0.5, 0)
    model = PooledClassifier(
        MarkerEncoder(len(tokenizer), marker), 2, pooling="max", hidden_size=1, dropout=0.0
    )
    with torch.no_grad():
        model.classifier.weight.copy_(torch.tensor([[0.0], [2.0]]))
        model.classifier.bias.copy_(torch.tensor([0.5, 0.0]))

    windows, window_to_doc = tokenize_windows(tokenizer, text, max_length=MAX_LENGTH, stride=STRIDE)
    holding = (windows["input_ids"] == marker).any(1)
    assert holding.tolist() == [False] * (len(window_to_doc) - 1) + [True]

    def predict(how):
        logits = classify_long_texts(model, tokenizer, text, max_length=MAX_LENGTH, stride=STRIDE, how=how)
        return logits.argmax(-1).item()

    assert predict("max") == 1
    assert predict("mean") == 0  # one window of 15 is not enough for the mean
    truncated = tokenizer(text, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
    with torch.no_grad():
        assert model(**truncated).logits.argmax(-1).item() == 0  # the first window alone misses it


def test_documents_of_different_lengths_in_one_batch(tokenizer):
    texts = [
        long_text(tokenizer, 6 * MAX_LENGTH),
        "one window only",
        long_text(tokenizer, 2 * MAX_LENGTH, skip=20),
        long_text(tokenizer, 4 * MAX_LENGTH, skip=40),
    ]
    model = tiny_bert_classifier(len(tokenizer)).train()
    model.bert.embeddings.eval()  # a part in another mode keeps it
    for how in ("mean", "max"):
        logits = classify_long_texts(model, tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE, how=how)
        assert logits.shape == (4, NUM_LABELS) and not logits.requires_grad
        assert model.training and model.bert.encoder.training, "the model's mode must be restored"
        assert not model.bert.embeddings.training
        # the same as by hand, as in batches of any size, as each document alone
        windows, window_to_doc = tokenize_windows(tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE)
        with torch.no_grad():
            by_hand = aggregate_windows(model.eval()(**windows).logits, window_to_doc, 4, how)
        model.train()
        model.bert.embeddings.eval()
        torch.testing.assert_close(logits, by_hand, rtol=1e-5, atol=1e-6)
        for batch_size in (1, 3):
            torch.testing.assert_close(
                classify_long_texts(
                    model,
                    tokenizer,
                    texts,
                    max_length=MAX_LENGTH,
                    stride=STRIDE,
                    how=how,
                    batch_size=batch_size,
                ),
                logits,
                rtol=1e-5,
                atol=1e-6,
            )
        for d, text in enumerate(texts):
            alone = classify_long_texts(
                model, tokenizer, [text], max_length=MAX_LENGTH, stride=STRIDE, how=how
            )
            torch.testing.assert_close(alone[0], logits[d], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ aggregation


def naive_aggregate(logits, window_to_doc, num_docs, how):
    out = torch.zeros(num_docs, logits.shape[1], dtype=torch.float64)
    for d in range(num_docs):
        rows = [w for w in range(len(window_to_doc)) if window_to_doc[w] == d]
        for c in range(logits.shape[1]):
            values = [float(logits[w, c]) for w in rows]
            out[d, c] = sum(values) / len(values) if how == "mean" else max(values)
    return out


MAPPING = [2, 0, 0, 1, 2, 0, 2, 2, 0, 3]  # uneven and out of order: 4, 1, 4, 1 windows


@pytest.mark.parametrize("how", ["mean", "max"])
def test_aggregate_windows_matches_loops(how):
    logits = torch.randn(len(MAPPING), 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = aggregate_windows(logits, torch.tensor(MAPPING), 4, how)
    assert out.shape == (4, 5) and out.dtype == torch.float64
    torch.testing.assert_close(out, naive_aggregate(logits, MAPPING, 4, how), rtol=1e-12, atol=1e-12)
    assert torch.equal(aggregate_windows(logits, MAPPING, 4, how), out)  # a list of ints works too


@pytest.mark.parametrize("how", ["mean", "max"])
def test_aggregate_windows_gradient(how):
    logits = torch.randn(len(MAPPING), 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    logits.requires_grad_(True)
    torch.autograd.gradcheck(lambda x: aggregate_windows(x, torch.tensor(MAPPING), 4, how), (logits,))
    aggregate_windows(logits, torch.tensor(MAPPING), 4, how).sum().backward()
    counts = torch.bincount(torch.tensor(MAPPING))
    if how == "mean":
        expected = (1.0 / counts[MAPPING]).double().unsqueeze(1).expand(-1, 3)
    else:  # 1 at each document's largest window logit, class by class
        expected = torch.zeros_like(logits)
        for d in range(4):
            rows = torch.tensor([w for w, doc in enumerate(MAPPING) if doc == d])
            expected[rows[logits[rows].argmax(0)], torch.arange(3)] = 1.0
    assert torch.equal(logits.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_aggregate_windows_half_precision(dtype):
    logits = (torch.randn(len(MAPPING), 3, generator=torch.Generator().manual_seed(2)) * 100).to(dtype)
    for how in ("mean", "max"):
        out = aggregate_windows(logits, torch.tensor(MAPPING), 4, how)
        assert out.dtype == dtype
        assert torch.equal(out, naive_aggregate(logits, MAPPING, 4, how).to(dtype))


# --------------------------------------------------------------------------------------------- training


def test_document_loss_trains_the_encoder_through_every_window(tokenizer):
    texts = [long_text(tokenizer, 3 * MAX_LENGTH), "a b", long_text(tokenizer, 5 * MAX_LENGTH, skip=30)]
    labels = torch.tensor([2, 0, 1])
    torch.manual_seed(0)
    encoder = transformers.BertModel(tiny_bert_classifier(len(tokenizer)).config)
    classifier = PooledClassifier(encoder, NUM_LABELS, pooling="mean", dropout=0.0)
    windows, window_to_doc = tokenize_windows(tokenizer, texts, max_length=MAX_LENGTH, stride=STRIDE)
    assert torch.bincount(window_to_doc).tolist()[1] == 1 and len(window_to_doc) > 6

    captured = {}

    def keep_embeddings(module, args, output):
        if output.requires_grad:  # not in the no_grad reference pass
            output.retain_grad()
            captured["embeddings"] = output

    encoder.embeddings.register_forward_hook(keep_embeddings)
    for how in ("mean", "max"):
        wrapper = SlidingWindowClassifier(classifier, how=how)
        classifier.zero_grad(set_to_none=True)
        doc_logits = wrapper(**windows, window_to_doc=window_to_doc, num_docs=len(texts))
        assert doc_logits.shape == (3, NUM_LABELS)
        with torch.no_grad():
            window_logits = classifier(**windows).logits
        torch.testing.assert_close(doc_logits, aggregate_windows(window_logits, window_to_doc, 3, how))
        F.cross_entropy(doc_logits, labels).backward()
        assert encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
        per_window = captured["embeddings"].grad.abs().sum(dim=(1, 2))  # [W]
        if how == "mean":
            assert (per_window > 0).all(), "every window takes part in the document's loss"
        else:  # only the windows that hold a document's largest logit of some class
            winners = torch.zeros(len(window_to_doc), dtype=torch.bool)
            for d in range(3):
                rows = (window_to_doc == d).nonzero().flatten()
                winners[rows[window_logits[rows].argmax(0)]] = True
            assert torch.equal(per_window > 0, winners)

    # a few steps lower the document loss
    wrapper = SlidingWindowClassifier(classifier)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(wrapper(**windows, window_to_doc=window_to_doc), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stride": ROOM}, f"stride={ROOM} must be < {ROOM}"),
        ({"stride": 50}, "stride=50"),
        ({"stride": -1}, "stride.*-1"),
        ({"max_length": 2}, "max_length=2 leaves no room"),
        ({"max_length": 0}, "max_length.*0"),
        ({"texts": []}, r"texts.*list"),
        ({"texts": ["fine", 3]}, "texts"),
        ({"truncation": False}, r"\['truncation'\]"),
    ],
)
def test_tokenize_windows_errors(tokenizer, kwargs, match):
    kwargs = {"texts": ["some text"], "max_length": MAX_LENGTH, "stride": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        tokenize_windows(tokenizer, **kwargs)


def test_slow_tokenizer_is_refused():
    slow = transformers.ByT5Tokenizer()
    assert not slow.is_fast
    with pytest.raises(ValueError, match=r"fast tokenizer.*ByT5Tokenizer"):
        tokenize_windows(slow, ["some text"], max_length=16, stride=2)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.zeros(3, 2), [0, 0, 2], 3), r"documents \[1\] have no window"),
        ((torch.zeros(3, 2), [0, 1, 3], 3), "contains 3, outside"),
        ((torch.zeros(3, 2), [0, -1, 1], 2), "contains -1"),
        ((torch.zeros(3, 2), torch.tensor([0.0, 1.0, 1.0]), 2), "1-D integer tensor"),
        ((torch.zeros(3, 2), [0, 1], 2), "2 entries for the 3 windows"),
        ((torch.zeros(3), [0, 1, 1], 2), r"\(W, C\).*\(3,\)"),
        ((torch.zeros(3, 2, dtype=torch.long), [0, 1, 1], 2), r"\(W, C\).*torch.int64"),
        ((torch.zeros(3, 2), [0, 0, 0], 0), "num_docs.*0"),
    ],
)
def test_aggregate_windows_errors(args, match):
    with pytest.raises(ValueError, match=match):
        aggregate_windows(*args)
    with pytest.raises(ValueError, match="'median'"):
        aggregate_windows(torch.zeros(2, 2), [0, 1], 2, how="median")


def test_classify_errors(tokenizer):
    class NoLogits(torch.nn.Module):
        def forward(self, input_ids, attention_mask=None):
            return {"scores": input_ids.float()}

    with pytest.raises(ValueError, match=r"\(W, C\) logits"):
        classify_long_texts(NoLogits(), tokenizer, ["a text"], max_length=MAX_LENGTH)
    model = tiny_bert_classifier(len(tokenizer))
    with pytest.raises(ValueError, match=r"batch_size.*0"):
        classify_long_texts(model, tokenizer, ["a text"], max_length=MAX_LENGTH, batch_size=0)
    with pytest.raises(ValueError, match="'median'"):
        classify_long_texts(model, tokenizer, ["a text"], max_length=MAX_LENGTH, how="median")
    with pytest.raises(ValueError, match="'median'"):
        SlidingWindowClassifier(model, how="median")
