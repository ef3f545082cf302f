"""SMILE on packed rows (``position_ids``): a row holding several sequences, each starting where its position
ids restart at 0, is scored as its sequences would be apart, in value and in gradient. Checked against the
naive reference (tests/reference.py) and against the same sequences scored each in its own row."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import (
    IGNORE,
    assert_grad_close,
    assert_loss_close,
    generator,
    leaf,
    make_logits,
    make_target,
    reference_dtype,
    twin_generator,
)
from reference import ref_smile_loss
from tunekit.losses import SMILELoss, linear_smile_loss, smile_loss

SUBSETS = ["sequence", "random", "reverse"]
REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.bfloat16]
FORMS = ["logits", "fused"]
HIDDEN = 8
VOCAB = 11

# Two packed rows of LENGTH positions: each sequence is (masked prompt length, supervised length), and 3
# positions of trailing padding follow. Row 0's padding restarts its position ids at 0 at every position
# (each pad is an empty sequence), row 1's keeps counting (the pads join the last sequence). Row 1 holds a
# sequence with no supervised label; row 0 one without a prompt.
PACKED_ROWS = [[(2, 5), (1, 4), (0, 3)], [(3, 4), (2, 0), (1, 5)]]
LENGTH = 18

# the matmul may run in the input dtype, so bf16 fused results carry the rounding of bf16 logits
_FUSED_LOSS_RTOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}
_FUSED_GRAD_RTOL = {torch.float32: 5e-5, torch.bfloat16: 3e-2}


def packed_batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, int]]]:
    """labels (2, LENGTH), position_ids (2, LENGTH) and each sequence's (row, start, stop)."""
    gen = generator(seed)
    labels = torch.full((len(PACKED_ROWS), LENGTH), IGNORE)
    position_ids = torch.zeros(len(PACKED_ROWS), LENGTH, dtype=torch.long)
    spans = []
    for b, sequences in enumerate(PACKED_ROWS):
        start = 0
        for prompt, supervised in sequences:
            stop = start + prompt + supervised
            labels[b, start + prompt : stop] = torch.randint(VOCAB, (supervised,), generator=gen)
            position_ids[b, start:stop] = torch.arange(stop - start)
            spans.append((b, start, stop))
            start = stop
        if b == 1:  # the padding continues the last sequence's positions
            position_ids[b, start:] = torch.arange(LENGTH - start) + position_ids[b, start - 1] + 1
    return labels, position_ids, spans


def random_packed_batch(batch: int, length: int, vocab: int, *, seed: int = 2):
    """labels and position_ids (batch, length) with sequences starting at random, each with a masked prompt
    of 0 to 2 positions and ~20% ignored labels after it; the last row has no supervised label."""
    gen = generator(seed)
    restart = torch.rand(batch, length, generator=gen) < 0.15
    restart[:, 0] = True
    labels = make_target((batch, length), vocab, seed=seed, ignore_frac=0.2)
    position_ids = torch.zeros(batch, length, dtype=torch.long)
    for b in range(batch):
        for i in range(length):
            if restart[b, i]:
                prompt = int(torch.randint(3, (1,), generator=gen))
            else:
                position_ids[b, i] = position_ids[b, i - 1] + 1
            if position_ids[b, i] < prompt:
                labels[b, i] = IGNORE
    labels[-1] = IGNORE
    return labels, position_ids


def fused_inputs(shape, vocab, *, dtype=torch.float32, seed=0):
    """hidden (*shape, HIDDEN), weight (vocab, HIDDEN) and bias (vocab,): leaves of ``dtype``."""
    gen = generator(seed)
    hidden = torch.randn(*shape, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, HIDDEN, generator=gen, dtype=torch.float64) * (2.0 / HIDDEN**0.5)
    bias = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.5
    return leaf(hidden, dtype), leaf(weight, dtype), leaf(bias, dtype)


def inputs_for(form, shape, vocab, *, dtype=torch.float32):
    """The differentiable inputs of ``form``: (logits,) or (hidden, weight, bias)."""
    if form == "logits":
        return (make_logits(shape, vocab, dtype=dtype),)
    return fused_inputs(shape, vocab, dtype=dtype)


def score(form, inputs, labels, **kwargs):
    if form == "logits":
        return smile_loss(*inputs, labels, **kwargs)
    hidden, weight, bias = inputs
    return linear_smile_loss(hidden, weight, labels, bias=bias, **kwargs)


def with_generator(kwargs, seed=0):
    """Fresh, identically seeded generator for each call of a SMILE 'random' loss."""
    if kwargs.get("subset") == "random":
        return {**kwargs, "generator": generator(seed)}
    return kwargs


def backward(loss, seed=5):
    """Backward of the loss, or of the per-token losses weighted at random (reduction 'none')."""
    if loss.dim() == 0:
        loss.backward()
    else:
        loss.backward(torch.randn(loss.shape, generator=generator(seed), dtype=loss.dtype))


def check_against_reference(form, inputs, labels, position_ids, *, reduction="mean", **kwargs):
    """tunekit vs the reference (on the upcast logits, or on F.linear of the upcast fused inputs), with
    position_ids: losses and the gradients of every input; position_ids is left unchanged."""
    dtype = inputs[0].dtype
    ref_inputs = [leaf(t, reference_dtype(dtype)) for t in inputs]
    ref_logits = ref_inputs[0] if form == "logits" else F.linear(*ref_inputs)
    saved, ref_kwargs = position_ids.clone(), twin_generator(kwargs)

    loss = score(form, inputs, labels, position_ids=position_ids, reduction=reduction, **kwargs)
    expected = ref_smile_loss(
        ref_logits, labels, position_ids=position_ids, reduction=reduction, **ref_kwargs
    )
    loss_rtol, grad_rtol = (None, None) if form == "logits" else (_FUSED_LOSS_RTOL, _FUSED_GRAD_RTOL)
    assert_loss_close(loss, expected, dtype, rtol=loss_rtol and loss_rtol[dtype])
    backward(loss)
    backward(expected)
    for actual, reference in zip(inputs, ref_inputs, strict=True):
        assert_grad_close(actual.grad, reference.grad, dtype, rtol=grad_rtol and grad_rtol[dtype])
    assert torch.equal(position_ids, saved)


# --------------------------------------------------------------------------------------------------
# against the naive reference


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", FORMS)
def test_packed_rows_match_reference(form, dtype, subset, first_token_mle, reduction):
    labels, position_ids, _ = packed_batch()
    inputs = inputs_for(form, labels.shape, VOCAB, dtype=dtype)
    kwargs = with_generator({"subset": subset, "first_token_mle": first_token_mle, "num_random": 3})
    check_against_reference(form, inputs, labels, position_ids, reduction=reduction, **kwargs)


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("form", FORMS)
def test_random_packing_of_an_odd_shape_matches_reference(form, dtype, subset):
    labels, position_ids = random_packed_batch(3, 41, 127)
    inputs = inputs_for(form, labels.shape, 127, dtype=dtype)
    check_against_reference(form, inputs, labels, position_ids, **with_generator({"subset": subset}))


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("form", FORMS)
def test_packed_rows_with_tiny_chunks_match_reference(form, subset, reduction, tiny_chunks):
    vocab = 13
    tiny_chunks(vocab)
    labels, position_ids = random_packed_batch(4, 11, vocab)
    inputs = inputs_for(form, labels.shape, vocab)
    kwargs = with_generator({"subset": subset, "num_random": 4})
    check_against_reference(form, inputs, labels, position_ids, reduction=reduction, **kwargs)


# --------------------------------------------------------------------------------------------------
# a packed row == its sequences scored apart


def apart_layout(spans):
    """Flat indices pairing each sequence's positions in the packed (2, LENGTH) batch with its positions in
    an apart batch (sequences, longest) where sequence s is row s, starting at column 0."""
    width = max(stop - start for _, start, stop in spans)
    packed, apart = [], []
    for s, (b, start, stop) in enumerate(spans):
        packed += [b * LENGTH + i for i in range(start, stop)]
        apart += [s * width + i for i in range(stop - start)]
    return (len(spans), width), torch.tensor(packed), torch.tensor(apart)


def rearranged(values, shape, source_index, target_index, fill):
    """A tensor of ``shape`` (+ values' trailing dims) holding ``fill``, with the flat rows ``source_index``
    of ``values`` written at ``target_index``."""
    trailing = values.shape[2:]
    out = torch.full((shape[0] * shape[1], *trailing), fill, dtype=values.dtype)
    out[target_index] = values.detach().reshape(-1, *trailing)[source_index]
    return out.reshape(*shape, *trailing)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", ["sequence", "reverse"])
@pytest.mark.parametrize("form", FORMS)
def test_packed_rows_equal_their_sequences_in_rows_of_their_own(form, subset, first_token_mle, reduction):
    # the "random" subset draws per position, and the positions differ here: see the next test
    labels, position_ids, spans = packed_batch()
    shape, packed_index, apart_index = apart_layout(spans)
    inputs = inputs_for(form, labels.shape, VOCAB)
    # the apart batch's first input (logits or hidden) rearranged, the projection's weight and bias copied
    apart_first = rearranged(inputs[0], shape, packed_index, apart_index, 0.5).requires_grad_()
    apart_inputs = (apart_first, *(leaf(t) for t in inputs[1:]))
    apart_labels = rearranged(labels, shape, packed_index, apart_index, IGNORE)
    kwargs = {"subset": subset, "first_token_mle": first_token_mle, "reduction": reduction}

    loss = score(form, inputs, labels, position_ids=position_ids, **kwargs)
    expected = score(form, apart_inputs, apart_labels, **kwargs)
    if reduction == "none":  # per token, with the same random weights at matching positions
        flat = loss.reshape(-1)
        torch.testing.assert_close(flat[packed_index], expected.reshape(-1)[apart_index])
        assert not flat[~torch.isin(torch.arange(flat.numel()), packed_index)].any()  # the padding
        weights = torch.randn(loss.shape, generator=generator(5))
        loss.backward(weights)
        expected.backward(rearranged(weights, shape, packed_index, apart_index, 0.0))
    else:
        torch.testing.assert_close(loss, expected)
        loss.backward()
        expected.backward()
    grad, apart_grad = (g.reshape(-1, g.shape[-1]) for g in (inputs[0].grad, apart_first.grad))
    torch.testing.assert_close(grad[packed_index], apart_grad[apart_index])
    assert not grad[~torch.isin(torch.arange(grad.shape[0]), packed_index)].any()
    for actual, expected_grad in zip(inputs[1:], apart_inputs[1:], strict=True):  # weight, bias
        torch.testing.assert_close(actual.grad, expected_grad.grad)
    if subset == "sequence" and reduction != "none":  # the packed row read as one sequence differs
        assert not torch.allclose(score(form, inputs, labels, **kwargs), expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("form", FORMS)
def test_packed_rows_equal_their_sequences_one_at_a_time(form, subset, first_token_mle, reduction):
    # Each sequence is scored alone: its own row (at its packed positions, so that "random" draws the same
    # ids for it) with every other label ignored, from the same inputs and an identically seeded generator.
    labels, position_ids, spans = packed_batch()
    inputs = inputs_for(form, labels.shape, VOCAB)
    apart_inputs = [leaf(t) for t in inputs]
    kwargs = {"subset": subset, "first_token_mle": first_token_mle, "num_random": 3}

    loss = score(
        form, inputs, labels, position_ids=position_ids, reduction=reduction, **with_generator(kwargs)
    )
    per_token = 0
    for b, start, stop in spans:
        alone = torch.full_like(labels, IGNORE)
        alone[b, start:stop] = labels[b, start:stop]
        per_token = per_token + score(form, apart_inputs, alone, reduction="none", **with_generator(kwargs))
    expected = {
        "none": per_token,
        "sum": per_token.sum(),
        "mean": per_token.sum() / (labels != IGNORE).sum(),
    }[reduction]
    torch.testing.assert_close(loss, expected)
    backward(loss)
    backward(expected)
    for actual, reference in zip(inputs, apart_inputs, strict=True):
        torch.testing.assert_close(actual.grad, reference.grad)


# --------------------------------------------------------------------------------------------------
# position_ids without a restart, the random draw, gradcheck, the module


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize("form", FORMS)
def test_position_ids_without_restarts_give_exactly_the_rows_result(form, subset):
    labels, _, _ = packed_batch()
    inputs = inputs_for(form, labels.shape, VOCAB)
    apart_inputs = [leaf(t) for t in inputs]
    position_ids = torch.arange(LENGTH, dtype=torch.int32).expand(labels.shape)  # int32 is accepted too
    kwargs = {"subset": subset, "num_random": 3}
    loss = score(form, inputs, labels, position_ids=position_ids, **with_generator(kwargs))
    expected = score(form, apart_inputs, labels, **with_generator(kwargs))
    assert torch.equal(loss, expected)
    loss.backward()
    expected.backward()
    for actual, reference in zip(inputs, apart_inputs, strict=True):
        assert torch.equal(actual.grad, reference.grad)


def test_random_subset_draw_does_not_depend_on_position_ids():
    labels, position_ids, _ = packed_batch()
    logits = make_logits(labels.shape, VOCAB, requires_grad=False)
    kwargs = {"subset": "random", "num_random": 3, "first_token_mle": False}
    packed = smile_loss(logits, labels, position_ids=position_ids, generator=generator(3), **kwargs)
    assert torch.equal(packed, smile_loss(logits, labels, generator=generator(3), **kwargs))


# a row of three sequences (the last without a supervised label) and a row of two
TINY_LABELS = [[IGNORE, 1, 3, IGNORE, 2, 2], [4, IGNORE, IGNORE, 0, 1, IGNORE]]
TINY_POSITION_IDS = [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]]


@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
def test_gradcheck_packed(subset, first_token_mle):
    labels, position_ids = torch.tensor(TINY_LABELS), torch.tensor(TINY_POSITION_IDS)
    logits = make_logits((2, 6), 5, dtype=torch.float64)
    kwargs = {"subset": subset, "first_token_mle": first_token_mle, "num_random": 2, "reduction": "none"}
    assert torch.autograd.gradcheck(
        lambda z: smile_loss(z, labels, position_ids=position_ids, **with_generator(kwargs)),
        (logits,),
        fast_mode=True,
    )


@pytest.mark.parametrize("subset", SUBSETS)
def test_gradcheck_fused_packed(subset):
    labels, position_ids = torch.tensor(TINY_LABELS), torch.tensor(TINY_POSITION_IDS)
    inputs = fused_inputs((2, 6), 5, dtype=torch.float64)
    kwargs = {"subset": subset, "num_random": 2, "reduction": "none"}
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_smile_loss(
            h, w, labels, bias=b, position_ids=position_ids, **with_generator(kwargs)
        ),
        inputs,
        fast_mode=True,
    )


@pytest.mark.parametrize("subset", SUBSETS)
def test_module_passes_position_ids(subset):
    labels, position_ids, _ = packed_batch()
    logits = make_logits(labels.shape, VOCAB)
    kwargs = {"subset": subset, "num_random": 2, "reduction": "sum"}
    loss = SMILELoss(**kwargs)(logits, labels, generator=generator(4), position_ids=position_ids)
    expected = ref_smile_loss(
        logits.detach(), labels, generator=generator(4), position_ids=position_ids, **kwargs
    )
    assert_loss_close(loss, expected, logits.dtype)


# --------------------------------------------------------------------------------------------------
# validation

BAD_POSITION_IDS = {
    "list": (lambda labels: labels.tolist(), "integer tensor or None, got list"),
    "float": (lambda labels: torch.zeros(labels.shape), "integer tensor or None, got a torch.float32"),
    "bool": (lambda labels: torch.zeros(labels.shape, dtype=torch.bool), "got a torch.bool"),
    "shape": (lambda labels: torch.zeros(labels.shape[1], dtype=torch.long), r"same shape, got \(18,\)"),
    "device": (lambda labels: torch.zeros(labels.shape, dtype=torch.long, device="meta"), "is on meta"),
    "negative": (lambda labels: labels, "position_ids contains -100"),  # the labels passed by mistake
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("bad", sorted(BAD_POSITION_IDS))
def test_bad_position_ids_raise_value_error(bad, form):
    make, message = BAD_POSITION_IDS[bad]
    labels, _, _ = packed_batch()
    inputs = inputs_for(form, labels.shape, VOCAB)
    with pytest.raises(ValueError, match=message):
        score(form, inputs, labels, position_ids=make(labels))
