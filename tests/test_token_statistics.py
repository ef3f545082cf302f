"""``token_statistics`` / ``linear_token_statistics``: per-token entropy and top-1 flag against the reference,
computed without gradients, chunk by chunk over the supervised tokens."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import IGNORE, generator, leaf, make_logits, make_target, reference_dtype
from reference import ref_token_statistics
from tunekit.losses import (
    _engine,
    cross_entropy,
    dece_loss,
    gce_loss,
    linear_cross_entropy,
    linear_dece_loss,
    linear_gce_loss,
    linear_smile_loss,
    linear_token_statistics,
    recording_token_statistics,
    smile_loss,
    token_statistics,
)

HIDDEN = 16
VOCAB = 127
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
SHAPES = [(3, 7), (13,), ()]

# entropy is computed in fp32 (fp64) from the same logits; the fused product may run in bf16
_ENTROPY_RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-5}
_FUSED_ENTROPY_RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-2}


def fused_sample(shape, *, vocab=VOCAB, dtype=torch.float32, bias=True, seed=0):
    """hidden (*shape, H), weight (V, H), bias (V,) or None, requiring grad, and targets of ``shape``."""
    gen = generator(seed)
    hidden = torch.randn(*shape, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, HIDDEN, generator=gen, dtype=torch.float64) * (2.0 / HIDDEN**0.5)
    bias_ = leaf(torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.5, dtype) if bias else None
    return leaf(hidden, dtype), leaf(weight, dtype), bias_, make_target(shape, vocab, seed=seed + 1)


def check_statistics(actual, expected, dtype, *, rtol, margins=None):
    """Entropy close, top-1 equal (only where the reference's top two logits are ``margins`` apart)."""
    entropy, is_top1 = actual
    expected_entropy, expected_top1 = expected
    assert entropy.dtype == reference_dtype(dtype) and is_top1.dtype == torch.bool
    assert entropy.shape == expected_entropy.shape == is_top1.shape
    assert not entropy.requires_grad and not is_top1.requires_grad
    scale = float(expected_entropy.abs().max()) if expected_entropy.numel() else 0.0
    torch.testing.assert_close(
        entropy, expected_entropy.to(entropy.dtype), rtol=rtol, atol=rtol * max(scale, 1e-3)
    )
    clear = torch.ones_like(is_top1) if margins is None else margins
    assert torch.equal(is_top1[clear], expected_top1[clear])


def top_two_margins(logits, tolerance):
    """(...) bool: where the largest logit leads the second by more than ``tolerance``."""
    top = logits.topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1]) > tolerance


@pytest.fixture
def rows_read(monkeypatch):
    """A list that gets the number of rows of each chunk either source reads."""
    counts = []
    for source in (_engine.LogitsSource, _engine.LinearSource):
        read = source.read

        def counting_read(self, rows, *args, read=read):
            counts.append(rows.numel())
            return read(self, rows, *args)

        monkeypatch.setattr(source, "read", counting_read)
    return counts


# --------------------------------------------------------------------------------------------------
# against the reference


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_logits_form_matches_reference(dtype):
    for shape in SHAPES:
        logits = make_logits(shape, VOCAB, dtype=dtype)
        target = make_target(shape, VOCAB)
        target.view(-1)[0] = logits.detach().reshape(-1, VOCAB)[0].argmax()  # one top-1 hit at least
        actual = token_statistics(logits, target)
        check_statistics(actual, ref_token_statistics(logits, target), dtype, rtol=_ENTROPY_RTOL[dtype])
        assert actual[1].view(-1)[0]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_linear_form_matches_reference(dtype, bias):
    for shape in SHAPES:
        hidden, weight, bias_, target = fused_sample(shape, dtype=dtype, bias=bias)
        upcast = [None if t is None else leaf(t, reference_dtype(dtype)) for t in (hidden, weight, bias_)]
        logits = F.linear(*upcast)
        # the fused product may round differently (bf16): compare the flags where the top two are apart
        margins = top_two_margins(logits.detach(), 0.1 if dtype == torch.bfloat16 else 1e-4)
        actual = linear_token_statistics(hidden, weight, target, bias=bias_)
        expected = ref_token_statistics(logits, target)
        check_statistics(actual, expected, dtype, rtol=_FUSED_ENTROPY_RTOL[dtype], margins=margins)


@pytest.mark.parametrize("fused_rows", [3, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunks_smaller_than_the_input_match_reference(dtype, fused_rows, tiny_chunks, rows_read):
    tiny_chunks(VOCAB, fused_rows=fused_rows)
    logits = make_logits((5, 7), VOCAB, dtype=dtype)
    target = make_target((5, 7), VOCAB)
    check_statistics(
        token_statistics(logits, target),
        ref_token_statistics(logits, target),
        dtype,
        rtol=_ENTROPY_RTOL[dtype],
    )
    assert max(rows_read) == 3 and len(rows_read) > 1  # the logits path: chunks of 3 rows
    rows_read.clear()
    hidden, weight, bias, target = fused_sample((5, 7), dtype=dtype)
    logits = F.linear(*(leaf(t, reference_dtype(dtype)) for t in (hidden, weight, bias)))
    margins = top_two_margins(logits.detach(), 0.1 if dtype == torch.bfloat16 else 1e-4)
    check_statistics(
        linear_token_statistics(hidden, weight, target, bias=bias),
        ref_token_statistics(logits, target),
        dtype,
        rtol=_FUSED_ENTROPY_RTOL[dtype],
        margins=margins,
    )
    assert max(rows_read) == fused_rows and len(rows_read) > 1


def test_non_contiguous_shifted_inputs_match_reference():
    # the causal-LM shift: logits[:, :-1] and hidden[:, :-1] are views, not contiguous
    logits = make_logits((3, 10), VOCAB)
    labels = make_target((3, 10), VOCAB)
    shifted = logits[:, :-1]
    check_statistics(
        token_statistics(shifted, labels[:, 1:]),
        ref_token_statistics(shifted, labels[:, 1:]),
        torch.float32,
        rtol=_ENTROPY_RTOL[torch.float32],
    )
    hidden, weight, bias, labels = fused_sample((3, 10))
    expected = ref_token_statistics(F.linear(hidden[:, :-1], weight, bias), labels[:, 1:])
    actual = linear_token_statistics(hidden[:, :-1], weight, labels[:, 1:], bias=bias)
    check_statistics(actual, expected, torch.float32, rtol=_FUSED_ENTROPY_RTOL[torch.float32])


def test_linear_form_agrees_with_logits_form():
    hidden, weight, bias, target = fused_sample((3, 7))
    fused = linear_token_statistics(hidden, weight, target, bias=bias)
    plain = token_statistics(F.linear(hidden, weight, bias), target)
    torch.testing.assert_close(fused[0], plain[0], rtol=2e-5, atol=2e-5)
    assert torch.equal(fused[1], plain[1])


# --------------------------------------------------------------------------------------------------
# semantics


def test_known_values():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [30.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])
    entropy, is_top1 = token_statistics(logits, torch.tensor([2, 0, 0]))
    torch.testing.assert_close(entropy[0], torch.tensor(math.log(4)))  # uniform: log V
    assert 0 <= entropy[1] < 1e-10  # one-hot: 0
    assert is_top1.tolist() == [False, True, False]  # a tie goes to the first class, as argmax does


@pytest.mark.parametrize("form", ["logits", "linear"])
def test_ignored_tokens_give_zero_and_false(form):
    hidden, weight, bias, target = fused_sample((3, 7))
    target[0] = IGNORE
    target[1, :3] = 5
    logits = F.linear(hidden, weight, bias)
    target[2] = logits.detach()[2].argmax(-1)  # every token of the last row is a top-1 hit
    target[2, 1] = IGNORE
    if form == "logits":
        entropy, is_top1 = token_statistics(logits, target)
    else:
        entropy, is_top1 = linear_token_statistics(hidden, weight, target, bias=bias)
    ignored = target == IGNORE
    assert ignored.sum() >= 8 and torch.equal(entropy[ignored], torch.zeros_like(entropy[ignored]))
    assert not is_top1[ignored].any()
    assert (entropy[~ignored] > 0).all()
    assert is_top1[2].sum() == 6


@pytest.mark.parametrize("form", ["logits", "linear"])
def test_all_ignored_gives_zeros(form):
    hidden, weight, bias, target = fused_sample((2, 3), dtype=torch.bfloat16)
    target = torch.full_like(target, IGNORE)
    if form == "logits":
        entropy, is_top1 = token_statistics(F.linear(hidden, weight, bias), target)
    else:
        entropy, is_top1 = linear_token_statistics(hidden, weight, target, bias=bias)
    assert entropy.dtype == torch.float32 and entropy.shape == (2, 3)
    assert torch.equal(entropy, torch.zeros(2, 3)) and torch.equal(
        is_top1, torch.zeros(2, 3, dtype=torch.bool)
    )


def test_other_ignore_index():
    logits = make_logits((3, 7), VOCAB)
    target = make_target((3, 7), VOCAB, ignore_index=-1)
    expected = ref_token_statistics(logits, target, ignore_index=-1)
    check_statistics(token_statistics(logits, target, ignore_index=-1), expected, torch.float32, rtol=2e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_dtypes_and_no_grad(dtype):
    hidden, weight, bias, target = fused_sample((3, 7), dtype=dtype)
    for entropy, is_top1 in (
        token_statistics(F.linear(hidden, weight, bias), target),
        linear_token_statistics(hidden, weight, target, bias=bias),
    ):
        assert entropy.dtype == reference_dtype(dtype) and is_top1.dtype == torch.bool
        assert entropy.grad_fn is None and not entropy.requires_grad and not is_top1.requires_grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inputs_are_not_modified(dtype):
    hidden, weight, bias, target = fused_sample((3, 7), dtype=dtype)
    logits = F.linear(hidden, weight, bias).detach()
    before = [t.detach().clone() for t in (hidden, weight, bias, target, logits)]
    token_statistics(logits, target)
    linear_token_statistics(hidden, weight, target, bias=bias)
    for tensor, saved in zip((hidden, weight, bias, target, logits), before, strict=True):
        assert torch.equal(tensor.detach(), saved)


# --------------------------------------------------------------------------------------------------
# validation


def logits_call(**changes):
    arguments = {"logits": torch.zeros(2, 5, 7), "target": torch.zeros(2, 5, dtype=torch.long), **changes}
    return token_statistics(arguments.pop("logits"), arguments.pop("target"), **arguments)


def linear_call(**changes):
    arguments = {
        "hidden": torch.zeros(2, 5, 3),
        "weight": torch.zeros(7, 3),
        "target": torch.zeros(2, 5, dtype=torch.long),
        "bias": torch.zeros(7),
        **changes,
    }
    return linear_token_statistics(
        arguments.pop("hidden"), arguments.pop("weight"), arguments.pop("target"), **arguments
    )


BAD_CALLS = {
    "logits_integer": (
        logits_call,
        {"logits": torch.zeros(2, 5, 7, dtype=torch.long)},
        r"^logits must be a float",
    ),
    "target_float": (
        logits_call,
        {"target": torch.zeros(2, 5)},
        r"^token_statistics takes class indices as target \(an integer tensor\)",
    ),
    "target_shape": (
        logits_call,
        {"target": torch.zeros(2, 4, dtype=torch.long)},
        r"need target of shape \(2, 5\)",
    ),
    "target_device": (
        logits_call,
        {"target": torch.zeros(2, 5, dtype=torch.long, device="meta")},
        r"target is on",
    ),
    "target_range": (logits_call, {"target": torch.full((2, 5), 7)}, r"target contains 7, outside \[0, 7\)"),
    "ignore_index": (logits_call, {"ignore_index": 1.5}, r"ignore_index must be an integer, got 1.5"),
    "hidden_integer": (
        linear_call,
        {"hidden": torch.zeros(2, 5, 3, dtype=torch.long)},
        r"^hidden must be a float",
    ),
    "linear_target_shape": (
        linear_call,
        {"target": torch.zeros(5, dtype=torch.long)},
        r"need target of shape",
    ),
    "linear_target_range": (linear_call, {"target": torch.full((2, 5), -3)}, r"target contains -3"),
    "weight_shape": (
        linear_call,
        {"weight": torch.zeros(7, 4)},
        r"weight must have shape \(V, 3\) to match hidden",
    ),
    "weight_dtype": (
        linear_call,
        {"weight": torch.zeros(7, 3, dtype=torch.float64)},
        r"weight \(torch.float64",
    ),
    "bias_shape": (linear_call, {"bias": torch.zeros(6)}, r"bias must be \(7,\)"),
    "linear_ignore_index": (linear_call, {"ignore_index": None}, r"ignore_index must be an integer"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_a_value_error_naming_it(case):
    function, changes, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        function(**changes)


# ---- recorded during an objective's own pass ----

RECORDED_OBJECTIVES = {
    "cross_entropy": (cross_entropy, linear_cross_entropy, {"label_smoothing": 0.1}),
    "dece": (lambda *a, **k: dece_loss(*a, 2, **k), lambda *a, **k: linear_dece_loss(*a, 2, **k), {}),
    "gce": (gce_loss, linear_gce_loss, {}),
    "smile_sequence": (smile_loss, linear_smile_loss, {"subset": "sequence"}),
    "smile_random": (smile_loss, linear_smile_loss, {"subset": "random", "num_random": 4}),
    "smile_reverse": (smile_loss, linear_smile_loss, {"subset": "reverse"}),
}


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("form", ["logits", "linear"])
@pytest.mark.parametrize("name", sorted(RECORDED_OBJECTIVES))
def test_objectives_record_the_statistics_of_their_own_pass(name, form, reduction, tiny_chunks):
    """Inside recording_token_statistics every token objective records the full-vocabulary statistics of
    its targets (SMILE's subset rows from one more read), the loss and its gradient unchanged; several
    chunks, pieces of chunks and (reduction "none") a deferred gradient included."""
    tiny_chunks(VOCAB, fused_rows=8)
    function, linear_function, options = RECORDED_OBJECTIVES[name]
    hidden, weight, bias, _ = fused_sample((3, 7))
    target = make_target((3, 7), VOCAB, seed=4)
    options = {**options, "reduction": reduction}
    if name == "smile_random":
        options["generator"] = generator(3)

    def run():
        opts = {**options, "generator": generator(3)} if "generator" in options else options
        if form == "logits":
            logits = F.linear(hidden, weight, bias)
            return function(logits, target, **opts), logits
        return linear_function(hidden, weight, target, bias=bias, **opts), F.linear(hidden, weight, bias)

    plain, _ = run()
    plain.sum().backward()
    plain_grad = hidden.grad.clone()
    hidden.grad = None
    with recording_token_statistics() as recorded:
        loss, logits = run()
    loss.sum().backward()
    assert len(recorded) == 1
    torch.testing.assert_close(loss, plain, rtol=0, atol=0)
    torch.testing.assert_close(hidden.grad, plain_grad, rtol=0, atol=0)
    expected = ref_token_statistics(logits.detach(), target)
    check_statistics((recorded[0].entropy, recorded[0].is_top1), expected, torch.float32, rtol=2e-5)


def test_recording_is_per_call_and_only_inside_the_block():
    logits, target = make_logits((2, 5), VOCAB), make_target((2, 5), VOCAB)
    cross_entropy(logits, target)  # outside: nothing recorded, nothing kept
    with recording_token_statistics() as recorded:
        cross_entropy(logits, target)
        cross_entropy(logits[:1], target[:1])
    cross_entropy(logits, target)
    assert [r.entropy.shape for r in recorded] == [(2, 5), (1, 5)]
    check_statistics(
        (recorded[1].entropy, recorded[1].is_top1),
        ref_token_statistics(logits[:1], target[:1]),
        torch.float32,
        rtol=2e-5,
    )
