"""Fused-linear forms: ``linear_*(hidden, weight, target, ...)`` equals the logits form applied to
``hidden @ weight.T + bias``, in value and in the gradients w.r.t. hidden, weight and bias."""

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
    make_prompted_labels,
    make_target,
    reference_dtype,
    target_shapes,
    twin_generator,
)
from reference import REFERENCES
from tunekit.losses import linear_smile_loss
from tunekit.losses.registry import TOKEN_LOSSES

NAMES = sorted(TOKEN_LOSSES)
REDUCTIONS = ["none", "mean", "sum"]
SUBSETS = ["sequence", "random", "reverse"]
HIDDEN = 16

# the matmul may run in the input dtype, so bf16 results carry the rounding of bf16 logits
_FUSED_LOSS_RTOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}
_FUSED_GRAD_RTOL = {torch.float32: 5e-5, torch.bfloat16: 3e-2}


def fused_sample(shape, vocab, *, dtype=torch.float32, seed=0, bias=True, ignore_frac=0.3):
    """hidden (*shape, H), weight (V, H), bias (V,) or None, and targets of ``shape``."""
    gen = generator(seed)
    hidden = torch.randn(*shape, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, HIDDEN, generator=gen, dtype=torch.float64) * (2.0 / HIDDEN**0.5)
    bias_ = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.5 if bias else None
    hidden, weight = leaf(hidden, dtype), leaf(weight, dtype)
    bias_ = leaf(bias_, dtype) if bias else None
    if len(shape) == 2:
        target = make_prompted_labels(*shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    else:
        target = make_target(shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    return hidden, weight, bias_, target


def params(hidden, weight, bias):
    return [t for t in (hidden, weight, bias) if t is not None]


def upcast_leaves(hidden, weight, bias):
    dtype = reference_dtype(hidden.dtype)
    return leaf(hidden, dtype), leaf(weight, dtype), (leaf(bias, dtype) if bias is not None else None)


def check_fused_against_reference(name, hidden, weight, bias, target, *extra, reduction="mean", **kwargs):
    """tunekit's fused form vs the reference on F.linear(...) of the upcast inputs: values and grads."""
    dtype = hidden.dtype
    ref_hidden, ref_weight, ref_bias = upcast_leaves(hidden, weight, bias)
    ref_kwargs = twin_generator(kwargs)
    loss = TOKEN_LOSSES[name].linear_function(
        hidden, weight, target, *extra, bias=bias, reduction=reduction, **kwargs
    )
    expected = REFERENCES[name](
        F.linear(ref_hidden, ref_weight, ref_bias), target, *extra, reduction=reduction, **ref_kwargs
    )
    assert_loss_close(loss, expected, dtype, rtol=_FUSED_LOSS_RTOL.get(dtype))
    grad_out = torch.randn(expected.shape, generator=generator(9), dtype=expected.dtype)
    loss.backward(grad_out)
    expected.backward(grad_out)
    for actual, reference in zip(
        params(hidden, weight, bias), params(ref_hidden, ref_weight, ref_bias), strict=True
    ):
        assert_grad_close(actual.grad, reference.grad, dtype, rtol=_FUSED_GRAD_RTOL.get(dtype))


def with_generator(kwargs, seed=0):
    if kwargs.get("subset") == "random":
        return {**kwargs, "generator": generator(seed)}
    return kwargs


# --------------------------------------------------------------------------------------------------
# against the references


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_fused_matches_reference(name, dtype, bias, reduction):
    for shape in target_shapes(name):
        hidden, weight, bias_, target = fused_sample(shape, 127, dtype=dtype, bias=bias)
        extra = TOKEN_LOSSES[name].extra_args
        check_fused_against_reference(name, hidden, weight, bias_, target, *extra, reduction=reduction)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("name", ["cross_entropy", "dece"])
def test_fused_label_smoothing_matches_reference(name, label_smoothing):
    hidden, weight, bias, target = fused_sample((37,), 1009)
    extra = TOKEN_LOSSES[name].extra_args
    check_fused_against_reference(name, hidden, weight, bias, target, *extra, label_smoothing=label_smoothing)


@pytest.mark.parametrize("epoch", [1, 5, 40])
def test_fused_dece_epochs_match_reference(epoch):
    hidden, weight, bias, target = fused_sample((3, 9), 127)
    check_fused_against_reference("dece", hidden, weight, bias, target, epoch, alpha_base=0.9)


@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
def test_fused_smile_subsets_match_reference(subset, first_token_mle):
    hidden, weight, bias, labels = fused_sample((3, 11), 13)
    kwargs = with_generator({"subset": subset, "first_token_mle": first_token_mle, "num_random": 3})
    check_fused_against_reference("smile", hidden, weight, bias, labels, **kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_fused_large_odd_shape_matches_reference(name):
    hidden, weight, bias, target = fused_sample((3, 423), 1009)
    check_fused_against_reference(name, hidden, weight, bias, target, *TOKEN_LOSSES[name].extra_args)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_fused_tiny_chunks_match_reference(name, dtype, reduction, tiny_chunks):
    vocab = 127
    tiny_chunks(vocab)
    hidden, weight, bias, target = fused_sample((5, 7), vocab, dtype=dtype)
    extra = TOKEN_LOSSES[name].extra_args
    check_fused_against_reference(name, hidden, weight, bias, target, *extra, reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("name", NAMES)
def test_fused_chunks_whose_math_runs_in_pieces_match_reference(name, reduction, tiny_chunks):
    vocab = 31
    tiny_chunks(vocab, fused_rows=8)  # chunks of 8 rows, math in pieces of 3, 3 and 2 rows
    hidden, weight, bias, target = fused_sample((5, 7), vocab)
    extra = TOKEN_LOSSES[name].extra_args
    check_fused_against_reference(name, hidden, weight, bias, target, *extra, reduction=reduction)


@pytest.mark.parametrize("subset", SUBSETS)
def test_fused_smile_subsets_with_tiny_chunks_match_reference(subset, tiny_chunks):
    vocab = 13
    tiny_chunks(vocab)
    hidden, weight, bias, labels = fused_sample((4, 11), vocab)
    check_fused_against_reference("smile", hidden, weight, bias, labels, **with_generator({"subset": subset}))


# --------------------------------------------------------------------------------------------------
# fused form == logits form


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_fused_agrees_with_logits_form(name, reduction):
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 61)
    hidden2, weight2, bias2 = leaf(hidden), leaf(weight), leaf(bias)
    fused = spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias, reduction=reduction)
    plain = spec.function(F.linear(hidden2, weight2, bias2), target, *spec.extra_args, reduction=reduction)
    torch.testing.assert_close(fused, plain, rtol=2e-5, atol=2e-5)
    fused.sum().backward()
    plain.sum().backward()
    for a, b in zip((hidden, weight, bias), (hidden2, weight2, bias2), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=5e-5, atol=5e-5 * float(b.grad.abs().max()))


# --------------------------------------------------------------------------------------------------
# shared semantics


@pytest.mark.parametrize("num_items_in_batch", [None, 0, 3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_fused_all_ignored_gives_exact_zero_and_zero_grads(name, reduction, num_items_in_batch):
    if reduction == "none" and num_items_in_batch is not None:
        num_items_in_batch = None  # not allowed with "none"; covered in test_loss_validation
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 11, dtype=torch.bfloat16)
    target = torch.full_like(target, IGNORE)
    loss = spec.linear_function(
        hidden,
        weight,
        target,
        *spec.extra_args,
        bias=bias,
        reduction=reduction,
        num_items_in_batch=num_items_in_batch,
    )
    assert loss.dtype == torch.float32
    assert torch.equal(loss.detach(), torch.zeros_like(loss))
    loss.sum().backward()
    for tensor in (hidden, weight, bias):
        assert tensor.grad is not None
        assert tensor.grad.dtype == torch.bfloat16
        assert torch.equal(tensor.grad, torch.zeros_like(tensor))


@pytest.mark.parametrize("as_tensor", [False, True], ids=["int", "tensor"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_fused_num_items_in_batch_divides_the_sum(name, reduction, as_tensor):
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 11)
    num_items = torch.tensor(41) if as_tensor else 41
    loss = spec.linear_function(
        hidden, weight, target, *spec.extra_args, bias=bias, reduction=reduction, num_items_in_batch=num_items
    )
    total = spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias, reduction="sum")
    torch.testing.assert_close(loss, total / 41)
    zero = spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias, num_items_in_batch=0)
    torch.testing.assert_close(zero, total)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_fused_output_and_grad_dtypes(name, dtype):
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 11, dtype=dtype)
    loss = spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias)
    assert loss.dtype == reference_dtype(dtype)
    loss.backward()
    for tensor in (hidden, weight, bias):
        assert tensor.grad.dtype == dtype


@pytest.mark.parametrize("name", NAMES)
def test_fused_inputs_are_not_modified(name):
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 11, dtype=torch.bfloat16)
    before = [t.detach().clone() for t in (hidden, weight, bias, target)]
    spec.linear_function(
        hidden, weight, target, *spec.extra_args, bias=bias, reduction="none"
    ).sum().backward()
    for tensor, saved in zip((hidden, weight, bias, target), before, strict=True):
        assert torch.equal(tensor.detach(), saved)


@pytest.mark.parametrize("name", NAMES)
def test_fused_no_grad_gives_a_result_without_grad_fn(name):
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 11)
    with torch.no_grad():
        loss = spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias)
    assert loss.grad_fn is None
    detached = [t.detach() for t in (hidden, weight, bias)]
    loss = spec.linear_function(detached[0], detached[1], target, *spec.extra_args, bias=detached[2])
    assert loss.grad_fn is None
    assert not loss.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_fused_non_contiguous_shifted_hidden_matches_reference(name):
    # the causal-LM shift: hidden[:, :-1] and labels[:, 1:] are views, not contiguous
    hidden, weight, bias, labels = fused_sample((3, 10), 23)
    shifted_hidden, shifted_labels = hidden[:, :-1, :], labels[:, 1:]
    assert not shifted_hidden.is_contiguous()
    ref_hidden, ref_weight, ref_bias = upcast_leaves(hidden, weight, bias)
    extra = TOKEN_LOSSES[name].extra_args
    loss = TOKEN_LOSSES[name].linear_function(shifted_hidden, weight, shifted_labels, *extra, bias=bias)
    logits = F.linear(ref_hidden[:, :-1, :], ref_weight, ref_bias)
    expected = REFERENCES[name](logits, shifted_labels, *extra)
    assert_loss_close(loss, expected, hidden.dtype)
    loss.backward()
    expected.backward()
    for actual, reference in zip((hidden, weight, bias), (ref_hidden, ref_weight, ref_bias), strict=True):
        assert_grad_close(actual.grad, reference.grad, hidden.dtype, rtol=_FUSED_GRAD_RTOL[torch.float32])


@pytest.mark.parametrize("name", NAMES)
def test_fused_frozen_weight_gets_no_grad(name):
    # e.g. a frozen LM head under LoRA: only the hidden states need a gradient
    spec = TOKEN_LOSSES[name]
    hidden, weight, bias, target = fused_sample(target_shapes(name)[-1], 23)
    weight.requires_grad_(False)
    bias.requires_grad_(False)
    ref_hidden = leaf(hidden)
    (spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias) * 3.7).backward()
    expected = REFERENCES[name](F.linear(ref_hidden, weight, bias), target, *spec.extra_args) * 3.7
    expected.backward()
    assert weight.grad is None
    assert bias.grad is None
    assert_grad_close(hidden.grad, ref_hidden.grad, hidden.dtype, rtol=_FUSED_GRAD_RTOL[torch.float32])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_fused_form(name, reduction):
    spec = TOKEN_LOSSES[name]
    gen = generator(0)
    hidden = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    target = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    assert torch.autograd.gradcheck(
        lambda h, w, b: spec.linear_function(h, w, target, *spec.extra_args, bias=b, reduction=reduction),
        (hidden, weight, bias),
        fast_mode=True,
    )


@pytest.mark.parametrize("subset", SUBSETS)
def test_gradcheck_fused_smile_subsets(subset):
    gen = generator(0)
    hidden = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    kwargs = {"subset": subset, "num_random": 2, "reduction": "none"}
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_smile_loss(h, w, labels, bias=b, **with_generator(kwargs)),
        (hidden, weight, bias),
        fast_mode=True,
    )


@pytest.mark.parametrize("name", NAMES)
def test_fused_engine_as_on_an_accelerator_matches_reference(name, monkeypatch, tiny_chunks):
    """Off CPU the engine gathers every chunk's rows instead of reading runs of them as slices."""
    from tunekit.losses import _engine

    monkeypatch.setattr(_engine, "reads_rows_on_host", lambda device: False)
    tiny_chunks(127, fused_rows=4)
    hidden, weight, bias, target = fused_sample((3, 11), 127)
    check_fused_against_reference(name, hidden, weight, bias, target, *TOKEN_LOSSES[name].extra_args)
