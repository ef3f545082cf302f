"""`cross_entropy` as a drop-in for `F.cross_entropy`: PyTorch's own OpInfo samples, class weights and
probability targets against the naive references (logits and fused-linear forms), GCE's class weights, and
what the other objectives refuse.

The OpInfo samples are the inputs PyTorch's test suite checks ``nn.functional.cross_entropy`` with
(`torch.testing._internal.common_methods_invocations`): every one is run here with the class axis moved
last, tunekit's (..., C) layout, and compared in value and gradient (the input's, and the probability
target's when it requires one).
"""

from __future__ import annotations

import functools
import inspect
import random

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
    make_prompted_labels,
    make_target,
    reference_dtype,
)
from reference import ref_cross_entropy, ref_gce_loss
from tunekit.losses import (
    CrossEntropyLoss,
    GCELoss,
    cross_entropy,
    dece_loss,
    gce_loss,
    linear_cross_entropy,
    linear_dece_loss,
    linear_gce_loss,
    linear_smile_loss,
    recording_token_statistics,
    smile_loss,
)
from tunekit.losses.registry import TOKEN_LOSSES

REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
ODD_VOCABS = [1, 5, 331]
OPINFO_SAMPLES_PER_DTYPE = 21


# --------------------------------------------------------------------------------------------------
# PyTorch's OpInfo samples


@functools.cache
def opinfo_samples(dtype: torch.dtype) -> tuple:
    """The OpInfo samples of nn.functional.cross_entropy in `dtype`, drawn from fixed seeds."""
    # torch's internal test helpers need expecttest (a dev dependency)
    from torch.testing._internal.common_methods_invocations import op_db

    (op,) = [op for op in op_db if op.name == "nn.functional.cross_entropy"]
    torch.manual_seed(0)
    random.seed(0)
    return tuple(op.sample_inputs("cpu", dtype, requires_grad=True))


def class_axis_last(tensor: torch.Tensor) -> torch.Tensor:
    """PyTorch's (N, C, d1, ...) as tunekit's (N, d1, ..., C)."""
    return tensor.movedim(1, -1) if tensor.dim() > 1 else tensor


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_opinfo_sample_is_run(dtype):
    # guards the parametrisation below: a change in PyTorch's sample list must not shrink what is checked
    samples = opinfo_samples(dtype)
    assert len(samples) == OPINFO_SAMPLES_PER_DTYPE
    kinds = {(s.args[0].is_floating_point(), "weight" in s.kwargs) for s in samples}
    assert kinds == {(False, False), (False, True), (True, False), (True, True)}


@pytest.mark.parametrize("form", ["function", "module"])
@pytest.mark.parametrize("index", range(OPINFO_SAMPLES_PER_DTYPE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opinfo_sample_matches_torch_in_value_and_gradient(dtype, index, form):
    sample = opinfo_samples(dtype)[index]
    target = sample.args[0]
    soft = target.is_floating_point()
    expected = F.cross_entropy(sample.input, target, **sample.kwargs)

    logits = leaf(class_axis_last(sample.input))
    ours_target = leaf(class_axis_last(target)) if soft else target.clone()
    if form == "function":
        loss = cross_entropy(logits, ours_target, **sample.kwargs)
    else:
        loss = CrossEntropyLoss(**sample.kwargs)(logits, ours_target)
    tolerance = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(loss, expected.detach(), **tolerance)

    grad_out = torch.randn(expected.shape, generator=generator(3), dtype=dtype)
    inputs = (sample.input, target) if soft else (sample.input,)
    expected_grads = torch.autograd.grad(expected, inputs, grad_out)
    grads = torch.autograd.grad(loss, (logits, ours_target) if soft else (logits,), grad_out)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, class_axis_last(expected_grad), **tolerance)


# --------------------------------------------------------------------------------------------------
# class weights and probability targets against the naive reference


def class_weights(vocab: int, *, seed: int = 7) -> torch.Tensor:
    """Positive per-class weights spread over a decade, as imbalanced data gets."""
    return torch.rand(vocab, generator=generator(seed), dtype=torch.float64) * 9 + 1


def probabilities(shape: tuple[int, ...], vocab: int, dtype: torch.dtype, *, seed: int = 4) -> torch.Tensor:
    """Soft labels (*shape, vocab): a softmax of random scores, one row of zeros (no mass)."""
    scores = torch.randn(*shape, vocab, generator=generator(seed), dtype=torch.float64) * 2
    target = torch.softmax(scores, -1)
    if target.dim() > 1:
        target.view(-1, vocab)[0] = 0
    return target.to(dtype).requires_grad_(True)


def compare(loss, expected, inputs, ref_inputs, dtype, reduction, *, rtol=None):
    """Losses, then the gradients of every input (a random upstream gradient for "none")."""
    assert_loss_close(loss, expected, dtype, rtol=rtol)
    grad_out = torch.randn(expected.shape, generator=generator(5), dtype=expected.dtype)
    grads = torch.autograd.grad(loss, inputs, grad_out.to(loss.dtype))
    expected_grads = torch.autograd.grad(expected, ref_inputs, grad_out)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        assert_grad_close(grad, expected_grad, dtype, rtol=rtol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("vocab", ODD_VOCABS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_class_weights_match_reference(tiny_chunks, dtype, vocab, label_smoothing, reduction):
    tiny_chunks(vocab)
    logits = make_logits((4, 9), vocab, dtype=dtype)
    target = make_prompted_labels(4, 9, vocab)  # masked prompts and an all-ignored row
    weight = class_weights(vocab).to(dtype)
    options = {"label_smoothing": label_smoothing, "reduction": reduction}
    loss = cross_entropy(logits, target, weight=weight, **options)
    ref_logits = leaf(logits, reference_dtype(dtype))
    expected = ref_cross_entropy(ref_logits, target, weight=weight, **options)
    # one class: loss and gradient are 0, ours within a rounding of the weights (up to 10): an absolute
    # tolerance of 1e-5 rather than one relative to their zero scale
    rtol = 1e-2 if vocab == 1 and dtype != torch.float64 else None
    compare(loss, expected, (logits,), (ref_logits,), dtype, reduction, rtol=rtol)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("vocab", ODD_VOCABS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_probability_targets_match_reference(tiny_chunks, dtype, vocab, label_smoothing, reduction, weighted):
    tiny_chunks(vocab)
    logits = make_logits((3, 7), vocab, dtype=dtype)
    target = probabilities((3, 7), vocab, dtype)
    weight = class_weights(vocab).to(dtype) if weighted else None
    options = {"weight": weight, "label_smoothing": label_smoothing, "reduction": reduction}
    loss = cross_entropy(logits, target, **options)
    ref_logits, ref_target = leaf(logits, reference_dtype(dtype)), leaf(target, reference_dtype(dtype))
    expected = ref_cross_entropy(ref_logits, ref_target, **options)
    compare(loss, expected, (logits, target), (ref_logits, ref_target), dtype, reduction)


@pytest.mark.parametrize("shape", [(), (13,), (2, 3, 5)])
@pytest.mark.parametrize("soft", [False, True])
def test_any_leading_shape(tiny_chunks, shape, soft):
    vocab = 6
    tiny_chunks(vocab)
    logits = make_logits(shape, vocab)
    target = (
        probabilities(shape, vocab, torch.float32) if soft else make_target(shape, vocab, ignore_frac=0.2)
    )
    weight = class_weights(vocab).float()
    loss = cross_entropy(logits, target, weight=weight, label_smoothing=0.1, reduction="none")
    ref_logits = leaf(logits)
    ref_target = leaf(target) if soft else target
    expected = ref_cross_entropy(ref_logits, ref_target, weight=weight, label_smoothing=0.1, reduction="none")
    ref_inputs = (ref_logits, ref_target) if soft else (ref_logits,)
    assert loss.shape == shape
    compare(loss, expected, (logits, target) if soft else (logits,), ref_inputs, torch.float32, "none")


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_fused_form_matches_reference(tiny_chunks, dtype, reduction, soft):
    vocab, hidden_size = 37, 8
    tiny_chunks(vocab, fused_rows=5)
    gen = generator(2)
    hidden = torch.randn(3, 11, hidden_size, generator=gen).to(dtype).requires_grad_(True)
    weight = (torch.randn(vocab, hidden_size, generator=gen) / 2).to(dtype).requires_grad_(True)
    bias = torch.randn(vocab, generator=gen).to(dtype).requires_grad_(True)
    target = probabilities((3, 11), vocab, dtype) if soft else make_prompted_labels(3, 11, vocab)
    class_weight = class_weights(vocab).to(dtype)
    options = {"label_smoothing": 0.1, "reduction": reduction}
    loss = linear_cross_entropy(hidden, weight, target, bias=bias, class_weight=class_weight, **options)

    ref = [leaf(t, reference_dtype(dtype)) for t in (hidden, weight, bias)]
    ref_target = leaf(target, reference_dtype(dtype)) if soft else target
    expected = ref_cross_entropy(F.linear(*ref), ref_target, weight=class_weight, **options)
    inputs, ref_inputs = [hidden, weight, bias], ref
    if soft:
        inputs, ref_inputs = [*inputs, target], [*ref_inputs, ref_target]
    # bf16: the fused product runs in bf16, the reference's in fp32 (as tests/test_fused_linear.py)
    rtol = 3e-2 if dtype == torch.bfloat16 else None
    compare(loss, expected, inputs, ref_inputs, dtype, reduction, rtol=rtol)


def test_num_items_in_batch_divides_the_weighted_sum():
    logits, target = make_logits((4, 9), 7), make_prompted_labels(4, 9, 7)
    weight = class_weights(7).float()
    summed = cross_entropy(logits, target, weight=weight, reduction="sum")
    divided = cross_entropy(logits, target, weight=weight, num_items_in_batch=50)
    torch.testing.assert_close(divided, summed / 50)
    mean = cross_entropy(logits, target, weight=weight)
    supervised = target != IGNORE
    torch.testing.assert_close(mean, summed / weight[target[supervised]].sum())


# --------------------------------------------------------------------------------------------------
# edge cases


def test_all_ignored_weighted_mean_is_zero_with_zero_gradient():
    logits = make_logits((2, 5), 4)
    target = torch.full((2, 5), IGNORE)
    loss = cross_entropy(logits, target, weight=class_weights(4).float())
    loss.backward()
    assert loss.item() == 0 and not logits.grad.any()  # F.cross_entropy gives NaN here


def test_weights_of_the_supervised_targets_summing_to_zero_give_the_sum():
    logits = make_logits((6,), 3)
    target = torch.tensor([0, 0, 1, 0, 1, IGNORE])
    weight = torch.tensor([0.0, 0.0, 2.0])
    mean = cross_entropy(logits, target, weight=weight, label_smoothing=0.3)
    summed = cross_entropy(logits, target, weight=weight, label_smoothing=0.3, reduction="sum")
    torch.testing.assert_close(mean, summed)
    assert summed.item() > 0  # the smoothing term still weighs class 2


@pytest.mark.parametrize("soft", [False, True])
def test_empty_batch(soft):
    logits = make_logits((0,), 5)
    target = torch.zeros(0, 5, requires_grad=True) if soft else torch.zeros(0, dtype=torch.long)
    loss = cross_entropy(logits, target, weight=torch.ones(5))
    loss.backward()
    assert loss.item() == 0 and logits.grad.shape == (0, 5)


@pytest.mark.parametrize("soft", [False, True])
def test_meta_device_gives_the_losss_shape(soft):
    logits = torch.empty(2, 3, 5, device="meta", requires_grad=True)
    target = (
        torch.empty(2, 3, 5, device="meta") if soft else torch.zeros(2, 3, dtype=torch.long, device="meta")
    )
    weight = torch.ones(5, device="meta")
    for reduction, shape in (("mean", ()), ("none", (2, 3))):
        loss = cross_entropy(logits, target, weight=weight, reduction=reduction)
        assert loss.device.type == "meta" and loss.shape == shape and loss.requires_grad


def test_callers_tensors_are_not_modified():
    logits = make_logits((3, 4), 6, dtype=torch.bfloat16)
    soft = probabilities((3, 4), 6, torch.bfloat16)
    weight = class_weights(6).to(torch.bfloat16)
    before = [t.detach().clone() for t in (logits, soft, weight)]
    cross_entropy(logits, soft, weight=weight, label_smoothing=0.1).backward()
    cross_entropy(logits, make_target((3, 4), 6), weight=weight, label_smoothing=0.1).backward()
    for tensor, copy in zip((logits, soft, weight), before, strict=True):
        assert torch.equal(tensor.detach(), copy)


def test_only_the_target_requiring_grad():
    logits = make_logits((3, 4), 6, requires_grad=False)
    target = probabilities((3, 4), 6, torch.float32)
    cross_entropy(logits, target).backward()
    ref_target = leaf(target)
    ref_cross_entropy(logits, ref_target).backward()
    assert_grad_close(target.grad, ref_target.grad, torch.float32)


def test_second_backward_through_a_retained_graph_with_probability_targets():
    logits, target = make_logits((3, 4), 6), probabilities((3, 4), 6, torch.float32)
    loss = cross_entropy(logits, target, weight=class_weights(6).float())
    loss.backward(retain_graph=True)
    first = (logits.grad.clone(), target.grad.clone())
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * first[0])
    torch.testing.assert_close(target.grad, 2 * first[1])


def test_double_backward_raises():
    logits, target = make_logits((3, 4), 6), probabilities((3, 4), 6, torch.float32)
    loss = cross_entropy(logits, target)
    with pytest.raises(RuntimeError, match="differentiable once"):
        torch.autograd.grad(loss, logits, create_graph=True)


def test_under_torch_compile():
    logits, target = make_logits((3, 4), 6), probabilities((3, 4), 6, torch.float32)
    weight = class_weights(6).float()
    options = {"weight": weight, "label_smoothing": 0.1}
    compiled = torch.compile(lambda z, t: cross_entropy(z, t, **options) * 2)
    torch.testing.assert_close(compiled(logits, target), 2 * cross_entropy(logits, target, **options))


def test_statistics_with_probability_targets_take_the_targets_top_class():
    logits = make_logits((5,), 4)
    target = probabilities((5,), 4, torch.float32)
    with recording_token_statistics() as recorded:
        cross_entropy(logits, target)
    assert torch.equal(recorded[0].is_top1, logits.argmax(-1) == target.argmax(-1))


def test_weights_and_probability_targets_run_the_pytorch_engine_on_the_triton_backend(monkeypatch):
    from tunekit.losses import _kernel_engine  # imports triton (a dev dependency)

    def refuse(*args, **kwargs):
        raise AssertionError("the Triton kernels were asked")

    monkeypatch.setenv("TUNEKIT_BACKEND", "triton")
    monkeypatch.setattr(_kernel_engine, "KernelTokenLossJob", refuse)
    logits, target = make_logits((3, 4), 6), make_target((3, 4), 6)
    with pytest.raises(AssertionError, match="Triton kernels"):  # the backend is forced on: a plain call
        cross_entropy(logits, target)
    cross_entropy(logits, target, weight=class_weights(6).float()).backward()
    cross_entropy(logits, probabilities((3, 4), 6, torch.float32)).backward()
    gce_loss(logits, target, weight=class_weights(6).float()).backward()


# --------------------------------------------------------------------------------------------------
# GCE's class weights


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_gce_class_weights_match_reference(tiny_chunks, dtype, reduction):
    tiny_chunks(9)
    logits, target = make_logits((4, 6), 9, dtype=dtype), make_prompted_labels(4, 6, 9)
    weight = class_weights(9).to(dtype)
    loss = gce_loss(logits, target, q=0.5, weight=weight, reduction=reduction)
    ref_logits = leaf(logits, reference_dtype(dtype))
    expected = ref_gce_loss(ref_logits, target, q=0.5, weight=weight, reduction=reduction)
    compare(loss, expected, (logits,), (ref_logits,), dtype, reduction)


def test_gce_fused_class_weights_match_the_logits_form():
    gen = generator(9)
    hidden = torch.randn(2, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    target, class_weight = make_prompted_labels(2, 5, 7), class_weights(7)
    fused = linear_gce_loss(hidden, weight, target, class_weight=class_weight)
    unfused = gce_loss(hidden @ weight.T, target, weight=class_weight)
    torch.testing.assert_close(fused, unfused)
    grads = torch.autograd.grad(fused, (hidden, weight))
    expected_grads = torch.autograd.grad(unfused, (hidden, weight))
    for grad, expected in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected)


# --------------------------------------------------------------------------------------------------
# modules, the registry and what the other objectives refuse


def test_module_holds_the_weights_as_a_buffer():
    module = CrossEntropyLoss(weight=[1, 2, 3], label_smoothing=0.1)
    assert module.weight.dtype == torch.float32 and "weight" in module.state_dict()
    assert "weight=(3 per-class weights)" in repr(module)
    logits, target = make_logits((4,), 3, dtype=torch.float64), make_target((4,), 3, ignore_frac=0)
    weight = torch.tensor([1.0, 2, 3], dtype=torch.float64)
    expected = F.cross_entropy(logits, target, weight=weight, label_smoothing=0.1)
    torch.testing.assert_close(module(logits, target), expected)
    tensor = torch.tensor([1.0, 2.0, 3.0])
    module = GCELoss(weight=tensor)
    tensor.zero_()  # the module holds a copy
    assert module.weight.tolist() == [1.0, 2.0, 3.0]


def test_module_linear_passes_its_weights_as_class_weight():
    gen = generator(1)
    hidden = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 3, 4, IGNORE])
    module = CrossEntropyLoss(weight=class_weights(5))
    torch.testing.assert_close(module.linear(hidden, weight, target), module(hidden @ weight.T, target))


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        ([[1.0, 2.0]], "1-D"),
        ("abc", "per-class weights"),
        (torch.tensor([1, 2, 3]), "floating-point"),
    ],
)
def test_module_refuses_bad_weights(weight, match):
    with pytest.raises(ValueError, match=match):
        CrossEntropyLoss(weight=weight)


@pytest.mark.parametrize(
    ("weight", "match"),
    [
        (torch.ones(4), r"^weight must have shape \(5,\)"),
        (torch.ones(5, dtype=torch.long), r"^weight must be a floating-point tensor"),
        ([1.0] * 5, r"^weight must be a floating-point tensor"),
        (torch.ones(5, device="meta"), r"^weight is on meta but the logits are on cpu"),
        (torch.ones(5, requires_grad=True), r"^weight requires grad"),
        (torch.tensor([1.0, float("nan"), 1, 1, 1]), r"^weight must be finite, got nan"),
    ],
)
def test_bad_weights_raise(weight, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy(make_logits((3,), 5), torch.tensor([0, 1, 2]), weight=weight)


def test_fused_bad_class_weight_is_named_class_weight():
    with pytest.raises(ValueError, match=r"^class_weight must have shape \(5,\)"):
        hidden, weight, target = torch.randn(3, 2), torch.randn(5, 2), torch.tensor([0, 1, 2])
        linear_cross_entropy(hidden, weight, target, class_weight=torch.ones(4))


@pytest.mark.parametrize(
    ("target", "match"),
    [
        (torch.rand(3, 5, dtype=torch.float64), r"must match logits \(torch.float32 on cpu\)"),
        (torch.rand(3, 4), r"must have shape \(3, 5\), got \(3, 4\)"),
        (torch.rand(3), r"must have shape \(3, 5\), got \(3,\)"),
    ],
)
def test_bad_probability_targets_raise(target, match):
    with pytest.raises(ValueError, match=match):
        cross_entropy(make_logits((3,), 5), target)


@pytest.mark.parametrize("form", ["logits", "fused"])
@pytest.mark.parametrize("name", sorted(n for n, spec in TOKEN_LOSSES.items() if not spec.soft_targets))
def test_objectives_without_soft_targets_refuse_them(name, form):
    spec = TOKEN_LOSSES[name]
    logits = make_logits((2, 3), 5)
    target = probabilities((2, 3), 5, torch.float32)
    match = r"takes class indices as target .* only cross_entropy takes probability targets"
    with pytest.raises(ValueError, match=match):
        if form == "logits":
            spec.function(logits, target, *spec.extra_args)
        else:
            spec.linear_function(torch.randn(2, 3, 4), torch.randn(5, 4), target, *spec.extra_args)


@pytest.mark.parametrize("name", sorted(TOKEN_LOSSES))
def test_registry_says_which_objectives_take_class_weights(name):
    spec = TOKEN_LOSSES[name]
    assert ("weight" in inspect.signature(spec.function).parameters) == spec.class_weights
    assert ("class_weight" in inspect.signature(spec.linear_function).parameters) == spec.class_weights
    assert ("weight" in spec.options) == spec.class_weights


def test_registry_flags():
    assert {n for n, s in TOKEN_LOSSES.items() if s.class_weights} == {"cross_entropy", "gce"}
    assert {n for n, s in TOKEN_LOSSES.items() if s.soft_targets} == {"cross_entropy"}


def test_trainer_loss_says_which_objectives_take_class_weights():
    from tunekit.hf import TrainerLoss

    loss = TrainerLoss("cross_entropy", task="token_classification", weight=[1.0, 4.0])
    assert loss.objective.weight.tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match=r"^dece takes no per-class weights .* cross_entropy, gce"):
        TrainerLoss("dece", task="causal_lm", weight=[1.0, 4.0])


def test_other_objectives_have_no_class_weights():
    # DeCE and SMILE have no weight option at all: Python's TypeError, as for any unknown keyword
    for call in (
        lambda: dece_loss(make_logits((3,), 5), torch.tensor([0, 1, 2]), 1, weight=torch.ones(5)),
        lambda: smile_loss(make_logits((1, 3), 5), torch.tensor([[0, 1, 2]]), weight=torch.ones(5)),
        lambda: linear_dece_loss(
            torch.randn(3, 2), torch.randn(5, 2), torch.tensor([0, 1, 2]), 1, class_weight=torch.ones(5)
        ),
        lambda: linear_smile_loss(
            torch.randn(1, 3, 2), torch.randn(5, 2), torch.tensor([[0, 1, 2]]), class_weight=torch.ones(5)
        ),
    ):
        with pytest.raises(TypeError, match="weight"):
            call()
