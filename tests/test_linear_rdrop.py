"""``linear_rdrop_kl(hidden_a, hidden_b, weight, ...)`` equals R-Drop's symmetric KL of the two passes'
logits ``hidden @ weight.T + bias``, in value and in the gradients w.r.t. both hidden states, weight and bias,
without keeping anything logits-sized for backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import assert_grad_close, assert_loss_close, generator, leaf, reference_dtype
from reference import ref_linear_rdrop_kl
from tunekit.losses import _engine, linear_rdrop_kl, rdrop_kl

HIDDEN = 16
VOCAB = 127
DTYPES = [torch.float32, torch.bfloat16, torch.float64]
REDUCTIONS = ["none", "mean", "sum"]
PAD_MASKS = ["no_pad_mask", "some_padded", "all_padded"]

# the matmul runs in the input dtype, so bf16 results carry the rounding of bf16 logits
_LOSS_RTOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}
_GRAD_RTOL = {torch.float32: 5e-5, torch.bfloat16: 3e-2}


def sample(shape, *, vocab=VOCAB, dtype=torch.float32, bias=True, seed=0, hidden=HIDDEN):
    """hidden_a, hidden_b (*shape, H), weight (V, H) and bias (V,) or None: leaves of ``dtype``."""
    gen = generator(seed)
    hidden_a = torch.randn(*shape, hidden, generator=gen, dtype=torch.float64)
    hidden_b = torch.randn(*shape, hidden, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64) * (2.0 / hidden**0.5)
    bias_ = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.5
    return (
        leaf(hidden_a, dtype),
        leaf(hidden_b, dtype),
        leaf(weight, dtype),
        leaf(bias_, dtype) if bias else None,
    )


def make_pad_mask(shape, kind, seed=5):
    if kind == "no_pad_mask":
        return None
    if kind == "all_padded":
        return torch.ones(shape, dtype=torch.bool)
    mask = torch.rand(shape, generator=generator(seed)) < 0.3
    mask.view(-1)[0] = True  # at least one padded position, and the first
    return mask


def inputs_of(hidden_a, hidden_b, weight, bias):
    return [t for t in (hidden_a, hidden_b, weight, bias) if t is not None]


def check_against_reference(hidden_a, hidden_b, weight, bias, *, rtol=None, grad_rtol=None, **kwargs):
    """linear_rdrop_kl vs the reference on the upcast inputs, under a random incoming gradient."""
    dtype = hidden_a.dtype
    references = [leaf(t, reference_dtype(dtype)) for t in inputs_of(hidden_a, hidden_b, weight, bias)]
    ref_bias = references[3] if bias is not None else None
    loss = linear_rdrop_kl(hidden_a, hidden_b, weight, bias=bias, **kwargs)
    expected = ref_linear_rdrop_kl(*references[:3], bias=ref_bias, **kwargs)
    assert_loss_close(loss, expected, dtype, rtol=rtol or _LOSS_RTOL.get(dtype))
    grad_out = torch.randn(expected.shape, generator=generator(9), dtype=expected.dtype)
    loss.backward(grad_out.to(loss.dtype))
    expected.backward(grad_out)
    for actual, reference in zip(inputs_of(hidden_a, hidden_b, weight, bias), references, strict=True):
        assert_grad_close(actual.grad, reference.grad, dtype, rtol=grad_rtol or _GRAD_RTOL.get(dtype))
    return loss


@pytest.fixture
def count_chunks(monkeypatch):
    """A list that gets the number of rows of each chunk the fused path reads."""
    rows_read = []
    read = _engine.LinearSource.read

    def counting_read(self, rows, *args):
        rows_read.append(rows.numel())
        return read(self, rows, *args)

    monkeypatch.setattr(_engine.LinearSource, "read", counting_read)
    return rows_read


# --------------------------------------------------------------------------------------------------
# against the reference


@pytest.mark.parametrize("pad", PAD_MASKS[:2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matches_reference(dtype, bias, reduction, pad):
    for shape in [(3, 7), (13,), ()]:
        tensors = sample(shape, dtype=dtype, bias=bias)
        check_against_reference(*tensors, pad_mask=make_pad_mask(shape, pad), reduction=reduction)


@pytest.mark.parametrize("num_items_in_batch", [4, torch.tensor(0), 50], ids=["4", "tensor_0", "50"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_num_items_in_batch_matches_reference(dtype, reduction, num_items_in_batch):
    tensors = sample((3, 7), dtype=dtype)
    pad_mask = make_pad_mask((3, 7), "some_padded")
    check_against_reference(
        *tensors, pad_mask=pad_mask, reduction=reduction, num_items_in_batch=num_items_in_batch
    )


@pytest.mark.parametrize("fused_rows", [3, 7, 8])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_chunks_smaller_than_the_input_match_reference(
    dtype, reduction, fused_rows, tiny_chunks, count_chunks
):
    # each chunk holds fused_rows // 2 positions of both passes; the math runs a position at a time
    tiny_chunks(VOCAB, fused_rows=fused_rows)
    tensors = sample((3, 7), dtype=dtype)
    pad_mask = make_pad_mask((3, 7), "some_padded")
    check_against_reference(*tensors, pad_mask=pad_mask, reduction=reduction)
    positions = int((~pad_mask).sum())
    assert len(count_chunks) >= positions // (fused_rows // 2) > 1  # several chunks, a ragged last one
    assert max(count_chunks) == 2 * (fused_rows // 2)  # both passes' rows of fused_rows // 2 positions


def test_large_odd_shape_matches_reference():
    tensors = sample((3, 423), vocab=1009)
    check_against_reference(*tensors, pad_mask=make_pad_mask((3, 423), "some_padded"))


def test_close_passes_match_reference():
    # the real use: two dropout masks give nearby hidden states, the KL is small and made of cancelling terms
    hidden_a, _, weight, bias = sample((4, 9))
    noise = torch.randn(hidden_a.shape, generator=generator(13)) * 1e-2
    hidden_b = (hidden_a.detach() + noise).requires_grad_()
    loss = check_against_reference(
        hidden_a, hidden_b, weight, bias, reduction="sum", rtol=1e-3, grad_rtol=1e-3
    )
    assert 0 < loss.item() < 1e-1


def test_non_contiguous_shifted_hidden_matches_reference():
    # the causal-LM shift: hidden[:, :-1] is a view, not contiguous
    hidden_a, hidden_b, weight, bias = sample((3, 10))
    shifted_a, shifted_b = hidden_a[:, :-1], hidden_b[:, :-1]
    assert not shifted_a.is_contiguous()
    references = [leaf(t) for t in (hidden_a, hidden_b, weight, bias)]
    pad_mask = make_pad_mask((3, 9), "some_padded")
    loss = linear_rdrop_kl(shifted_a, shifted_b, weight, bias=bias, pad_mask=pad_mask)
    expected = ref_linear_rdrop_kl(
        references[0][:, :-1], references[1][:, :-1], references[2], bias=references[3], pad_mask=pad_mask
    )
    assert_loss_close(loss, expected, torch.float32)
    loss.backward()
    expected.backward()
    for actual, reference in zip((hidden_a, hidden_b, weight, bias), references, strict=True):
        assert_grad_close(actual.grad, reference.grad, torch.float32, rtol=_GRAD_RTOL[torch.float32])
    assert torch.equal(hidden_a.grad[:, -1], torch.zeros_like(hidden_a.grad[:, -1]))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_agrees_with_rdrop_kl_on_the_logits(reduction):
    hidden_a, hidden_b, weight, bias = sample((3, 7))
    twins = [leaf(t) for t in (hidden_a, hidden_b, weight, bias)]
    pad_mask = make_pad_mask((3, 7), "some_padded")
    fused = linear_rdrop_kl(hidden_a, hidden_b, weight, bias=bias, pad_mask=pad_mask, reduction=reduction)
    plain = rdrop_kl(
        F.linear(twins[0], twins[2], twins[3]),
        F.linear(twins[1], twins[2], twins[3]),
        pad_mask=pad_mask,
        reduction=reduction,
    )
    torch.testing.assert_close(fused, plain, rtol=2e-5, atol=2e-5)
    fused.sum().backward()
    plain.sum().backward()
    for a, b in zip((hidden_a, hidden_b, weight, bias), twins, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=5e-5, atol=5e-5 * float(b.grad.abs().max()))


@pytest.mark.parametrize("pad", PAD_MASKS[:2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_gradcheck(bias, reduction, pad):
    hidden_a, hidden_b, weight, bias_ = sample((2, 3), vocab=5, hidden=4, dtype=torch.float64, bias=bias)
    pad_mask = make_pad_mask((2, 3), pad)
    inputs = inputs_of(hidden_a, hidden_b, weight, bias_)
    assert torch.autograd.gradcheck(
        lambda a, b, w, *c: linear_rdrop_kl(
            a, b, w, bias=c[0] if c else None, pad_mask=pad_mask, reduction=reduction
        ),
        inputs,
    )


# --------------------------------------------------------------------------------------------------
# semantics


@pytest.mark.parametrize("num_items_in_batch", [None, 0, 3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_all_padded_gives_exact_zero_and_zero_grads(reduction, num_items_in_batch):
    if reduction == "none":
        num_items_in_batch = None  # not allowed with "none"
    tensors = sample((2, 3), dtype=torch.bfloat16)
    pad_mask = make_pad_mask((2, 3), "all_padded")
    loss = linear_rdrop_kl(
        *tensors[:3],
        bias=tensors[3],
        pad_mask=pad_mask,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
    )
    assert loss.dtype == torch.float32
    assert loss.shape == (pad_mask.shape if reduction == "none" else ())
    assert torch.equal(loss.detach(), torch.zeros_like(loss))
    loss.sum().backward()
    for tensor in tensors:
        assert tensor.grad is not None and tensor.grad.dtype == torch.bfloat16
        assert torch.equal(tensor.grad, torch.zeros_like(tensor))


@pytest.mark.parametrize("pad", PAD_MASKS[:2])
def test_none_has_pad_masks_shape_with_zeros_at_padding(pad):
    tensors = sample((3, 7))
    pad_mask = make_pad_mask((3, 7), pad)
    loss = linear_rdrop_kl(*tensors[:3], bias=tensors[3], pad_mask=pad_mask, reduction="none")
    assert loss.shape == (3, 7)
    if pad_mask is not None:
        assert torch.equal(loss[pad_mask], torch.zeros_like(loss[pad_mask]))
        assert (loss[~pad_mask] > 0).all()


@pytest.mark.parametrize("as_tensor", [False, True], ids=["int", "tensor"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_num_items_in_batch_divides_the_sum(reduction, as_tensor):
    hidden_a, hidden_b, weight, bias = sample((3, 7))
    pad_mask = make_pad_mask((3, 7), "some_padded")

    def call(**kwargs):
        return linear_rdrop_kl(hidden_a, hidden_b, weight, bias=bias, pad_mask=pad_mask, **kwargs)

    total = call(reduction="sum")
    torch.testing.assert_close(call(reduction=reduction, num_items_in_batch=41), total / 41)
    zero = torch.tensor(0) if as_tensor else 0
    torch.testing.assert_close(call(reduction=reduction, num_items_in_batch=zero), total)
    torch.testing.assert_close(call(), total / int((~pad_mask).sum()))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_incoming_gradient_scales_the_gradients(dtype, reduction):
    # x3 on a reduced loss multiplies the gradients kept from forward; "none" and fp16 take it in backward
    tensors = sample((3, 7), dtype=dtype)
    pad_mask = make_pad_mask((3, 7), "some_padded")
    call = lambda *t: linear_rdrop_kl(*t[:3], bias=t[3], pad_mask=pad_mask, reduction=reduction)  # noqa: E731
    call(*tensors).sum().backward()
    once = [t.grad.clone() for t in tensors]
    twins = [leaf(t) for t in tensors]
    (call(*twins) * 3).sum().backward()
    for twin, grad in zip(twins, once, strict=True):
        rtol = 1e-3 if dtype == torch.float16 else 1e-5  # "none" scales before the math: other rounding
        torch.testing.assert_close(twin.grad, grad * 3, rtol=rtol, atol=rtol * float(grad.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
def test_output_and_grad_dtypes(dtype):
    tensors = sample((3, 7), dtype=dtype)
    loss = linear_rdrop_kl(*tensors[:3], bias=tensors[3])
    assert loss.dtype == reference_dtype(dtype)
    loss.backward()
    for tensor in tensors:
        assert tensor.grad.dtype == dtype


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_inputs_are_not_modified(dtype, reduction):
    tensors = sample((3, 7), dtype=dtype)
    pad_mask = make_pad_mask((3, 7), "some_padded")
    before = [t.detach().clone() for t in (*tensors, pad_mask)]
    linear_rdrop_kl(*tensors[:3], bias=tensors[3], pad_mask=pad_mask, reduction=reduction).sum().backward()
    for tensor, saved in zip((*tensors, pad_mask), before, strict=True):
        assert torch.equal(tensor.detach(), saved)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_autograd_keeps_nothing_logits_sized(reduction):
    # what is saved for backward: the gradients (mean) or the inputs (none), never (positions x V)
    tensors = sample((3, 7), vocab=500, hidden=4)
    saved = []

    def pack(tensor):
        saved.append(tensor.numel())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = linear_rdrop_kl(*tensors[:3], bias=tensors[3], reduction=reduction)
    assert 0 < sum(saved) <= sum(t.numel() for t in tensors) < 2 * 3 * 7 * 500 // 4
    loss.sum().backward()


def test_frozen_weight_and_stopped_pass_get_no_grad():
    # a frozen head, and the variant that stops the gradient through one pass
    hidden_a, hidden_b, weight, bias = sample((3, 7))
    for tensor in (hidden_b, weight, bias):
        tensor.requires_grad_(False)
    twin = leaf(hidden_a)
    (linear_rdrop_kl(hidden_a, hidden_b, weight, bias=bias) * 3.7).backward()
    (ref_linear_rdrop_kl(twin, hidden_b, weight, bias=bias) * 3.7).backward()
    assert hidden_b.grad is None and weight.grad is None and bias.grad is None
    assert_grad_close(hidden_a.grad, twin.grad, torch.float32, rtol=_GRAD_RTOL[torch.float32])


def test_no_grad_gives_a_result_without_grad_fn():
    tensors = sample((3, 7))
    with torch.no_grad():
        loss = linear_rdrop_kl(*tensors[:3], bias=tensors[3])
    assert loss.grad_fn is None
    detached = [t.detach() for t in tensors]
    loss = linear_rdrop_kl(*detached[:3], bias=detached[3])
    assert not loss.requires_grad
    torch.testing.assert_close(loss, ref_linear_rdrop_kl(*detached[:3], bias=detached[3]).float())


# --------------------------------------------------------------------------------------------------
# validation


def call_with(**changes):
    hidden_a, hidden_b, weight, bias = sample((2, 5), vocab=7, hidden=3, bias=True)
    arguments = {"hidden_a": hidden_a, "hidden_b": hidden_b, "weight": weight, "bias": bias, **changes}
    return linear_rdrop_kl(
        arguments.pop("hidden_a"), arguments.pop("hidden_b"), arguments.pop("weight"), **arguments
    )


BAD_CALLS = {
    "reduction": ({"reduction": "avg"}, r"reduction must be one of .*'avg'"),
    "num_items_with_none": (
        {"reduction": "none", "num_items_in_batch": 3},
        r"num_items_in_batch .* cannot be used with reduction='none'",
    ),
    "num_items_negative": ({"num_items_in_batch": -1}, r"num_items_in_batch must be a finite non-negative"),
    "hidden_a_integer": (
        {"hidden_a": torch.zeros(2, 5, 3, dtype=torch.long)},
        r"^hidden_a must be a floating",
    ),
    "hidden_b_integer": (
        {"hidden_b": torch.zeros(2, 5, 3, dtype=torch.long)},
        r"^hidden_b must be a floating",
    ),
    "hidden_b_shape": (
        {"hidden_b": torch.zeros(2, 4, 3)},
        r"need hidden_b of the same shape, got \(2, 4, 3\)",
    ),
    "hidden_b_device": ({"hidden_b": torch.zeros(2, 5, 3, device="meta")}, r"hidden_b is on meta"),
    "hidden_0d": (
        {"hidden_a": torch.tensor(1.0), "hidden_b": torch.tensor(2.0)},
        r"hidden_a must have a non-empty hidden axis",
    ),
    "weight_shape": (
        {"weight": torch.zeros(7, 4)},
        r"weight must have shape \(V, 3\) to match hidden_a, got \(7, 4\)",
    ),
    "weight_not_a_tensor": ({"weight": [[1.0]]}, r"weight must have shape \(V, 3\) .* got list"),
    "weight_dtype": (
        {"weight": torch.zeros(7, 3, dtype=torch.float64)},
        r"weight \(torch.float64 .* hidden_a",
    ),
    "weight_device": ({"weight": torch.zeros(7, 3, device="meta")}, r"weight \(torch.float32 on meta\)"),
    "weight_empty": ({"weight": torch.zeros(0, 3), "bias": None}, r"weight must have at least one row"),
    "hidden_b_dtype": (
        {"hidden_b": torch.zeros(2, 5, 3, dtype=torch.float64)},
        r"weight \(torch.float32 on cpu\) must match hidden_b \(torch.float64",
    ),
    "bias_shape": ({"bias": torch.zeros(6)}, r"bias must be \(7,\) torch.float32 on cpu, got '\(6,\)"),
    "bias_dtype": (
        {"bias": torch.zeros(7, dtype=torch.bfloat16)},
        r"bias must be .* got '\(7,\) torch.bfloat16",
    ),
    "pad_mask_not_bool": ({"pad_mask": torch.zeros(2, 5)}, r"pad_mask must be a bool tensor.*torch.float32"),
    "pad_mask_shape": (
        {"pad_mask": torch.zeros(2, 5, 3, dtype=torch.bool)},
        r"need pad_mask of the same shape",
    ),
    "pad_mask_device": (
        {"pad_mask": torch.zeros(2, 5, dtype=torch.bool, device="meta")},
        r"pad_mask is on meta",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_a_value_error_naming_it(case):
    changes, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call_with(**changes)
