"""Edge cases where an objective used to crash or, worse, answer wrongly without a word: a second-order graph,
`torch.compile` across changing shapes, meta tensors, empty and all-ignored batches, a gradient the caller
modifies in place, and dice with one position per sample.

Every token objective of the registry is checked in its logits and fused-linear forms, and R-Drop's two forms
with them (its fused form runs on the same engine); the plain-PyTorch classification objectives where the
case applies to them.
"""

from __future__ import annotations

import gc
import shutil
import weakref

import pytest
import torch
import torch.nn.functional as F

from conftest import IGNORE, generator
from reference import ref_focal_loss
from tunekit.losses import (
    DiceLoss,
    binary_focal_loss,
    dice_loss,
    focal_loss,
    linear_rdrop_kl,
    linear_token_statistics,
    mse_corr_loss,
    rdrop_kl,
    token_statistics,
)
from tunekit.losses.registry import TOKEN_LOSSES

VOCAB, HIDDEN = 11, 6
REDUCTIONS = ["none", "mean", "sum"]
# "name" is the logits form, "name/fused" the fused-linear form; every one of them runs on the engine but
# rdrop (plain PyTorch), whose fused form does
CASES = [f"{name}{form}" for name in [*sorted(TOKEN_LOSSES), "rdrop"] for form in ("", "/fused")]
ENGINE_CASES = [case for case in CASES if case != "rdrop"]


def make_inputs(case: str, shape: tuple[int, ...], *, device: str = "cpu", seed: int = 0) -> list:
    """The case's differentiable inputs for targets of `shape`: logits (*shape, V) (two for rdrop), or
    hidden (*shape, H) (two for rdrop), weight (V, H) and bias (V,)."""
    gen = generator(seed)

    def leaf(*size: int) -> torch.Tensor:
        return torch.randn(*size, generator=gen).to(device).requires_grad_()

    passes = 2 if case.startswith("rdrop") else 1
    if not case.endswith("/fused"):
        return [leaf(*shape, VOCAB) for _ in range(passes)]
    return [*(leaf(*shape, HIDDEN) for _ in range(passes)), leaf(VOCAB, HIDDEN), leaf(VOCAB)]


def make_target(
    shape: tuple[int, ...], *, device: str = "cpu", seed: int = 1, ignore_frac: float = 0.3
) -> torch.Tensor:
    """Class ids (B, N), about `ignore_frac` ignored, and the first position of each row supervised."""
    gen = generator(seed)
    target = torch.randint(VOCAB, shape, generator=gen)
    target[torch.rand(shape, generator=gen) < ignore_frac] = IGNORE
    if target.dim() == 2 and target.shape[1]:
        target[:, 0] = 3
    return target.to(device)


def call(case: str, inputs, target: torch.Tensor, **kwargs) -> torch.Tensor:
    """The case's objective of `inputs` (see `make_inputs`); rdrop pads where the target is ignored."""
    name, _, fused = case.partition("/")
    if name == "rdrop":
        if fused:
            hidden_a, hidden_b, weight, bias = inputs
            return linear_rdrop_kl(hidden_a, hidden_b, weight, bias=bias, pad_mask=target == IGNORE, **kwargs)
        return rdrop_kl(*inputs, pad_mask=target == IGNORE, **kwargs)
    spec = TOKEN_LOSSES[name]
    if fused:
        hidden, weight, bias = inputs
        return spec.linear_function(hidden, weight, target, *spec.extra_args, bias=bias, **kwargs)
    return spec.function(inputs[0], target, *spec.extra_args, **kwargs)


def function_name(case: str) -> str:
    name, _, fused = case.partition("/")
    if name == "rdrop":
        return "linear_rdrop_kl" if fused else "rdrop_kl"
    spec = TOKEN_LOSSES[name]
    return (spec.linear_function if fused else spec.function).__name__


def twins(tensors) -> list:
    return [t.detach().clone().requires_grad_() for t in tensors]


# --------------------------------------------------------------------------------------------------
# a. second order: the engine's gradient is not autograd's, so a graph of it cannot be built


@pytest.mark.parametrize("reduction", ["mean", "none"])  # gradient computed in forward / in backward
@pytest.mark.parametrize("case", ENGINE_CASES)
def test_second_order_graph_raises_naming_the_objective_and_the_alternative(case, reduction):
    # before: the gradient came back without a graph, so a gradient penalty was silently dropped
    inputs = make_inputs(case, (2, 5))
    loss = call(case, inputs, make_target((2, 5)), reduction=reduction).sum()
    with pytest.raises(
        RuntimeError, match=rf"^{function_name(case)} is differentiable once.*F\.cross_entropy"
    ):
        torch.autograd.grad(loss, inputs[0], create_graph=True)
    # a first-order backward of the same graph still works
    (grad,) = torch.autograd.grad(loss, inputs[0])
    assert torch.isfinite(grad).all()


def test_gradient_penalty_through_focal_matches_the_naive_reference():
    # plain-PyTorch objectives are twice differentiable: loss + 10 * |d loss / d logits|^2
    logits = torch.randn(6, 4, generator=generator(2), dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 3, IGNORE, 1, 2, 2])
    twin = twins([logits])[0]
    for function, z in ((focal_loss, logits), (ref_focal_loss, twin)):
        loss = function(z, target, alpha=[0.5, 1.0, 2.0, 1.0])
        (grad,) = torch.autograd.grad(loss, z, create_graph=True)
        (loss + 10 * grad.pow(2).sum()).backward()
    torch.testing.assert_close(logits.grad, twin.grad)


@pytest.mark.parametrize(
    "objective",
    [
        lambda z: focal_loss(z, torch.tensor([0, 2, IGNORE]), alpha=0.5),
        lambda z: binary_focal_loss(z, torch.tensor([[0.0, 1.0, 0.3]] * 3)),
        lambda z: dice_loss(z, torch.tensor([0, 2, 1]), square_denominator=True, self_adjusting=0.5),
        lambda z: dice_loss(z, torch.tensor([[0.0, 1.0, 1.0]] * 3), mode="multilabel"),
        lambda z: mse_corr_loss(z, torch.arange(9.0).reshape(3, 3).double()),
        lambda z: rdrop_kl(z, z.flip(0)),
    ],
    ids=["focal", "binary_focal", "dice", "multilabel_dice", "mse_corr", "rdrop_kl"],
)
def test_plain_pytorch_objectives_are_twice_differentiable(objective):
    logits = torch.randn(3, 3, generator=generator(3), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(objective, (logits,))


# --------------------------------------------------------------------------------------------------
# b. torch.compile: the engine runs eagerly inside a compiled caller (a graph break), whatever the shapes

SHAPES = [(2, 5), (3, 7), (1, 4)]


def compiled_matches_eager(case: str, backend: str, **kwargs) -> None:
    def step(*tensors, target):  # work on both sides of the objective, as in a model
        return call(case, [t * 1.5 for t in tensors], target, **kwargs).sum() * 2

    torch.compiler.reset()
    compiled = torch.compile(step, backend=backend)
    for seed, shape in enumerate(SHAPES):
        # nothing ignored at first: the engine then reads runs of consecutive rows, where dynamo crashed
        target = make_target(shape, seed=seed + 10, ignore_frac=0.3 if seed == len(SHAPES) - 1 else 0.0)
        inputs = make_inputs(case, shape, seed=seed)
        expected_inputs = twins(inputs)
        loss = compiled(*inputs, target=target)
        loss.backward()
        expected = step(*expected_inputs, target=target)
        expected.backward()
        torch.testing.assert_close(loss, expected)
        for actual, reference in zip(inputs, expected_inputs, strict=True):
            torch.testing.assert_close(actual.grad, reference.grad)


# every case with the gradient computed in forward; the deferred one ("none") where it is the same graph break
COMPILED = [(case, "mean") for case in CASES] + [("cross_entropy", "none"), ("cross_entropy/fused", "none")]


@pytest.mark.parametrize(("case", "reduction"), COMPILED)
def test_compiled_objective_matches_eager_across_shapes(case, reduction):
    # before: the second shape crashed dynamo in the engine's loop (a symbolic size in `if span:`)
    compiled_matches_eager(case, "eager", reduction=reduction)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("clang++") is None, reason="no C++ compiler")
def test_inductor_compiled_cross_entropy_matches_eager_across_shapes():
    compiled_matches_eager("cross_entropy", "inductor")


# --------------------------------------------------------------------------------------------------
# c. meta tensors: no values, so the loss is a stand-in of the right shape, dtype and graph


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", CASES)
def test_meta_inputs_give_a_meta_loss_of_the_shape_a_real_call_gives(case, reduction, monkeypatch):
    # before: cross_entropy and smile_loss raised NotImplementedError from nonzero
    monkeypatch.setenv("TUNEKIT_SYNC_CHECKS", "1")  # value checks skip the meta device, which has none
    expected = call(case, make_inputs(case, (2, 5)), make_target((2, 5)), reduction=reduction)
    inputs = make_inputs(case, (2, 5), device="meta")
    loss = call(case, inputs, make_target((2, 5), device="meta"), reduction=reduction)
    assert (loss.device.type, loss.shape, loss.dtype) == ("meta", expected.shape, expected.dtype)
    loss.sum().backward()
    for tensor in inputs:
        assert (tensor.grad.device.type, tensor.grad.shape) == ("meta", tensor.shape)


def test_meta_token_statistics():
    logits = torch.empty(2, 5, VOCAB, device="meta")
    target = torch.empty(2, 5, dtype=torch.long, device="meta")
    for entropy, is_top1 in (
        token_statistics(logits, target),
        linear_token_statistics(
            torch.empty(2, 5, HIDDEN, device="meta"), torch.empty(VOCAB, HIDDEN, device="meta"), target
        ),
    ):
        assert (entropy.device.type, entropy.shape, is_top1.shape) == ("meta", (2, 5), (2, 5))


# name -> (function, logits shape, target shape and dtype)
CLASSIFICATION_ON_META = {
    "focal": (focal_loss, (4, 3), (4,), torch.long),
    "binary_focal": (binary_focal_loss, (4, 3), (4, 3), torch.float32),
    "dice_tokens": (dice_loss, (2, 5, 3), (2, 5), torch.long),
    "dice_one_position": (dice_loss, (4, 3), (4,), torch.long),
}


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", CLASSIFICATION_ON_META)
def test_meta_classification_objectives(name, reduction):
    function, logits_shape, target_shape, target_dtype = CLASSIFICATION_ON_META[name]
    target = torch.zeros(target_shape, dtype=target_dtype)
    expected = function(torch.randn(logits_shape), target, reduction=reduction)
    logits = torch.empty(logits_shape, device="meta", requires_grad=True)
    loss = function(logits, target.to("meta"), reduction=reduction)
    assert (loss.device.type, loss.shape, loss.dtype) == ("meta", expected.shape, expected.dtype)
    loss.sum().backward()
    assert logits.grad.shape == logits.shape
    pred = torch.randn(4, 2, device="meta", requires_grad=True)
    assert mse_corr_loss(pred, torch.zeros(4, 2, device="meta")).shape == ()


# --------------------------------------------------------------------------------------------------
# d. nothing to score: an empty batch or an all-ignored one gives exactly 0 and zero gradients (the
# reduction helper's contract, `_reduction.py`; F.cross_entropy agrees for "sum" and "none" and gives NaN
# for "mean")

EMPTY_SHAPES = [(2, 0), (0, 3), (3, 4)]  # the last one all ignored


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=["no_positions", "no_rows", "all_ignored"])
@pytest.mark.parametrize("case", CASES)
def test_nothing_to_score_gives_zero_and_zero_gradients(case, shape, reduction):
    inputs = make_inputs(case, shape)
    loss = call(case, inputs, torch.full(shape, IGNORE), reduction=reduction)
    assert loss.shape == (shape if reduction == "none" else ())
    assert torch.equal(loss, torch.zeros_like(loss))
    loss.sum().backward()
    for tensor in inputs:
        assert torch.equal(tensor.grad, torch.zeros_like(tensor))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("subset", ["sequence", "random", "reverse"])
@pytest.mark.parametrize("form", ["logits", "fused"])
def test_smile_subsets_on_sequences_of_length_zero(form, subset, reduction):
    # the brief's report: smile_loss on logits (2, 0, V) raised an IndexError in argmax
    case = "smile" if form == "logits" else "smile/fused"
    for first_token_mle in (True, False):
        for position_ids in (None, torch.zeros(2, 0, dtype=torch.long)):
            inputs = make_inputs(case, (2, 0))
            kwargs = {"subset": subset, "first_token_mle": first_token_mle, "position_ids": position_ids}
            loss = call(case, inputs, torch.zeros(2, 0, dtype=torch.long), reduction=reduction, **kwargs)
            assert torch.equal(loss, torch.zeros((2, 0) if reduction == "none" else ()))
            loss.sum().backward()
            assert all(torch.equal(t.grad, torch.zeros_like(t)) for t in inputs)


def test_cross_entropy_nothing_to_score_agrees_with_pytorch_where_it_defines_a_value():
    for shape in EMPTY_SHAPES:
        logits, target = torch.randn(*shape, VOCAB), torch.full(shape, IGNORE)
        for reduction in ("sum", "none"):
            expected = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction=reduction)
            actual = TOKEN_LOSSES["cross_entropy"].function(logits, target, reduction=reduction)
            assert torch.equal(actual.reshape(expected.shape), expected)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_classification_objectives_with_nothing_to_score(reduction):
    cases = [
        (focal_loss, torch.randn(0, 3), torch.zeros(0, dtype=torch.long), {}),
        (focal_loss, torch.randn(4, 3), torch.full((4,), IGNORE), {}),
        (binary_focal_loss, torch.randn(0, 3), torch.zeros(0, 3), {}),
        (dice_loss, torch.randn(2, 0, 3), torch.zeros(2, 0, dtype=torch.long), {}),
        (dice_loss, torch.randn(4, 3), torch.full((4,), IGNORE), {}),
        (dice_loss, torch.randn(4, 3), torch.full((4, 3), float(IGNORE)), {"mode": "multilabel"}),
    ]
    for function, logits, target, kwargs in cases:
        logits.requires_grad_()
        loss = function(logits, target, reduction=reduction, **kwargs)
        assert torch.equal(loss, torch.zeros_like(loss)), function.__name__
        loss.sum().backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits)), function.__name__


# --------------------------------------------------------------------------------------------------
# e. the gradient handed out is the caller's: modifying it changes nothing the engine holds


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ENGINE_CASES)
def test_zeroing_the_handed_out_gradient_leaves_a_second_backward_right(case, reduction):
    # before: the first backward handed out the saved buffer itself; zeroing it broke the second backward
    inputs, target = make_inputs(case, (2, 5)), make_target((2, 5))
    loss = call(case, inputs, target, reduction=reduction).sum()
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    expected = [grad.clone() for grad in first]
    for grad in first:
        grad.zero_()
    second = torch.autograd.grad(loss, inputs, retain_graph=True)
    third = torch.autograd.grad(loss * 3, inputs)
    for grad_2, grad_3, reference in zip(second, third, expected, strict=True):
        torch.testing.assert_close(grad_2, reference)
        torch.testing.assert_close(grad_3, 3 * reference)


@pytest.mark.parametrize("case", ["cross_entropy", "smile/fused"])
def test_backward_twice_accumulates_twice_the_gradient(case):
    inputs, target = make_inputs(case, (3, 4)), make_target((3, 4))
    loss = call(case, inputs, target)
    loss.backward(retain_graph=True)
    once = [t.grad.clone() for t in inputs]
    loss.backward()
    for tensor, grad in zip(inputs, once, strict=True):
        torch.testing.assert_close(tensor.grad, 2 * grad)


def test_second_backward_without_the_inputs_raises():
    # the engine holds the inputs weakly: a second backward recomputes from them only if they still exist
    hidden, target = torch.randn(2, 5, HIDDEN, requires_grad=True), make_target((2, 5))
    loss = TOKEN_LOSSES["cross_entropy"].function(hidden @ torch.randn(HIDDEN, VOCAB), target)
    loss.backward(retain_graph=True)  # the first backward needs nothing but the saved gradient
    with pytest.raises(RuntimeError, match=r"second backward through cross_entropy .* freed"):
        loss.backward()
    logits = torch.randn(2, 5, VOCAB, requires_grad=True)
    loss = TOKEN_LOSSES["cross_entropy"].function(logits, target)
    loss.backward(retain_graph=True)
    with torch.no_grad():
        logits.mul_(2)
    with pytest.raises(RuntimeError, match=r"second backward through cross_entropy .* modified in place"):
        loss.backward()


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_autograd_keeps_no_reference_to_the_logits(reduction):
    # the logits are freed once the caller drops them (the gradient, or for "none" nothing logits-sized
    # but the inputs autograd must read in backward, is all the graph keeps)
    hidden = torch.randn(2, 5, HIDDEN, requires_grad=True)
    logits = hidden @ torch.randn(HIDDEN, VOCAB)
    alive = weakref.ref(logits)
    loss = TOKEN_LOSSES["cross_entropy"].function(logits, make_target((2, 5)), reduction=reduction)
    del logits
    gc.collect()
    assert (alive() is None) == (reduction != "none")
    loss.sum().backward()
    assert hidden.grad is not None


# --------------------------------------------------------------------------------------------------
# f. dice with one position per sample: summed over the batch by default


def test_dice_of_a_completely_wrong_classifier_is_near_one():
    # before: per-sample dice by default, 1/C (0.25 here) for a completely wrong prediction
    batch, classes = 32, 4
    label = torch.arange(batch) % classes
    one_hot, wrong_one_hot = F.one_hot(label, classes), F.one_hot((label + 1) % classes, classes)
    wrong, right = 10.0 * (2 * wrong_one_hot - 1), 10.0 * (2 * one_hot - 1)
    assert dice_loss(wrong, label) > 0.9
    assert DiceLoss()(wrong, label) > 0.9
    assert dice_loss(right, label) < 0.01
    assert dice_loss(wrong, one_hot.float(), mode="multilabel") > 0.9
    assert dice_loss(wrong[:, 0], one_hot[:, 0].float(), mode="binary") > 0.9
    # per sample, as before: 1/2 on the label's class and the predicted one, 0 on the others
    torch.testing.assert_close(dice_loss(wrong, label, batch_dice=False), torch.tensor(1 / classes))


def test_dice_default_is_per_sample_for_several_positions_and_over_the_batch_for_one():
    logits = torch.randn(3, 5, 4, generator=generator(5))
    target = torch.randint(4, (3, 5), generator=generator(6))
    torch.testing.assert_close(dice_loss(logits, target), dice_loss(logits, target, batch_dice=False))
    assert dice_loss(logits, target, reduction="none").shape == (3, 4)
    one_position = logits[:, 0]
    torch.testing.assert_close(
        dice_loss(one_position, target[:, 0]), dice_loss(one_position, target[:, 0], batch_dice=True)
    )
    assert dice_loss(one_position, target[:, 0], reduction="none").shape == (4,)
