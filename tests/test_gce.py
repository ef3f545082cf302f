"""GCE beyond the registry-wide tests (which run it with its defaults): known values, other q, its limits
(q -> 0 is cross-entropy, q = 1 is 1 - p_y), saturated logits, gradcheck over q, and the checks of q."""

from __future__ import annotations

import inspect
import math
import re

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
from reference import ref_gce_loss
from test_fused_linear import check_fused_against_reference, fused_sample
from tunekit.losses import GCELoss, cross_entropy, gce_loss, linear_gce_loss
from tunekit.losses.registry import TOKEN_LOSSES

QS = [0.05, 0.3, 0.5, 0.7, 1.0]
REDUCTIONS = ["none", "mean", "sum"]


def check_against_reference(logits, target, *, reduction="mean", **kwargs):
    """gce_loss vs ref_gce_loss on the same (upcast) values: loss and gradient."""
    ref_logits = leaf(logits, reference_dtype(logits.dtype))
    loss = gce_loss(logits, target, reduction=reduction, **kwargs)
    expected = ref_gce_loss(ref_logits, target, reduction=reduction, **kwargs)
    assert_loss_close(loss, expected, logits.dtype)
    grad_out = torch.randn(expected.shape, generator=generator(5), dtype=expected.dtype)
    loss.backward(grad_out.to(loss.dtype))
    expected.backward(grad_out)
    assert_grad_close(logits.grad, ref_logits.grad, logits.dtype)


def test_registry_entry_points_at_the_public_api():
    spec = TOKEN_LOSSES["gce"]
    assert (spec.function, spec.linear_function, spec.module) == (gce_loss, linear_gce_loss, GCELoss)
    assert spec.extra_args == ()
    assert not spec.sequence_only


def test_every_form_has_the_same_default_q():
    defaults = {
        inspect.signature(f).parameters["q"].default
        for f in (gce_loss, linear_gce_loss, GCELoss, ref_gce_loss)
    }
    assert defaults == {0.7}


@pytest.mark.parametrize("q", [0.7, 0.5, 1.0])
@pytest.mark.parametrize("implementation", [gce_loss, ref_gce_loss], ids=["tunekit", "reference"])
def test_known_value_by_hand(implementation, q):
    rows = [[4.0, 5.0, 10.0], [1.0, 5.0, 4.0], [0.5, -1.0, 2.0]]
    labels = [2, 1, IGNORE]
    losses = []
    for row, label in zip(rows[:2], labels[:2], strict=True):
        p = math.exp(row[label]) / sum(math.exp(v) for v in row)
        losses.append((1 - p**q) / q)
    loss = implementation(torch.tensor(rows), torch.tensor(labels), q=q)
    assert loss.item() == pytest.approx(sum(losses) / 2, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# against the reference, over q


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize(("shape", "vocab"), [((), 127), ((37,), 127), ((3, 11), 1009)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_matches_reference(dtype, shape, vocab, q, reduction):
    logits = make_logits(shape, vocab, dtype=dtype)
    target = make_prompted_labels(*shape, vocab) if len(shape) == 2 else make_target(shape, vocab)
    check_against_reference(logits, target, q=q, reduction=reduction)


@pytest.mark.parametrize("q", QS)
def test_tiny_chunks_match_reference(q, tiny_chunks):
    tiny_chunks(127)
    check_against_reference(make_logits((5, 7), 127), make_prompted_labels(5, 7, 127), q=q, reduction="sum")


@pytest.mark.parametrize("q", QS)
def test_fused_matches_reference(q):
    hidden, weight, bias, target = fused_sample((37,), 1009)
    check_fused_against_reference("gce", hidden, weight, bias, target, q=q)


@pytest.mark.parametrize("q", [0.3, 1.0])
def test_fused_tiny_chunks_match_reference(q, tiny_chunks):
    tiny_chunks(31, fused_rows=8)
    hidden, weight, bias, target = fused_sample((5, 7), 31)
    check_fused_against_reference("gce", hidden, weight, bias, target, q=q, reduction="none")


# --------------------------------------------------------------------------------------------------
# the limits of q


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_small_q_is_cross_entropy(dtype):
    # (1 - p^q) / q = -log p - q log(p)^2 / 2 + O(q^2): q = 1e-6 is cross-entropy to ~1e-5 relative
    logits = make_logits((4, 9), 53, dtype=dtype)
    target = make_prompted_labels(4, 9, 53)
    twin = leaf(logits)
    gce = gce_loss(logits, target, q=1e-6, reduction="none")
    ce = cross_entropy(twin, target, reduction="none")
    torch.testing.assert_close(gce, ce, rtol=1e-4, atol=1e-6)
    gce.sum().backward()
    ce.sum().backward()
    torch.testing.assert_close(logits.grad, twin.grad, rtol=1e-4, atol=1e-6)


def test_small_q_deviates_from_cross_entropy_at_second_order():
    # the next terms of the expansion, checked in float64 where they are well above rounding: dropping the
    # q term is off by ~1e-3 relative, the q^3 term left out is ~1e-8
    q = 1e-3
    logits = make_logits((37,), 53, dtype=torch.float64, requires_grad=False)
    target = make_target((37,), 53, ignore_frac=0.0)
    log_p = torch.log_softmax(logits, -1).gather(-1, target[:, None])[:, 0]
    expected = -log_p - q * log_p**2 / 2 + q**2 * -(log_p**3) / 6
    torch.testing.assert_close(gce_loss(logits, target, q=q, reduction="none"), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_q_one_is_one_minus_p_target(dtype):
    logits = make_logits((4, 9), 53, dtype=dtype)
    target = make_prompted_labels(4, 9, 53)
    twin = leaf(logits)
    loss = gce_loss(logits, target, q=1.0, reduction="none")
    p_y = torch.softmax(twin, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    expected = torch.where(target != IGNORE, 1 - p_y, 0)
    torch.testing.assert_close(loss, expected)
    grad_out = torch.randn(target.shape, generator=generator(2), dtype=dtype)
    loss.backward(grad_out)
    expected.backward(grad_out)  # autograd through 1 - softmax: p_y * (p - onehot), independently
    torch.testing.assert_close(logits.grad, twin.grad)


# --------------------------------------------------------------------------------------------------
# saturated logits, dtypes, gradcheck


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_saturated_logits_give_loss_one_over_q_and_zero_gradient(q):
    # p_y ** q = exp(-20000 q) underflows to 0 even in float64: loss 1/q, gradient 0, no NaN; p_y = 1: loss 0
    logits = torch.tensor([[0.0, 20000.0, -50.0], [30000.0, 0.0, 1.0]], requires_grad=True)
    target = torch.tensor([0, 0])
    loss = gce_loss(logits, target, q=q, reduction="none")
    torch.testing.assert_close(loss.detach(), torch.tensor([1 / q, 0.0]))
    loss.sum().backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_large_logits_match_reference(q):
    logits = leaf(make_logits((3, 11), 29) * 500.0)
    check_against_reference(logits, make_prompted_labels(3, 11, 29), q=q, reduction="sum")
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("q", [0.3, 1.0])
def test_dtypes(dtype, q):
    logits = make_logits((3, 7), 53, dtype=dtype)
    target = make_prompted_labels(3, 7, 53)
    loss = gce_loss(logits, target, q=q)
    assert loss.dtype == reference_dtype(dtype)
    loss.backward()
    assert logits.grad.dtype == dtype
    expected = ref_gce_loss(logits.detach(), target, q=q)
    assert_loss_close(loss, expected, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_gradcheck_logits_form(q, reduction):
    logits = make_logits((2, 3), 7, dtype=torch.float64)
    target = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    assert torch.autograd.gradcheck(
        lambda z: gce_loss(z, target, q=q, reduction=reduction), (logits,), fast_mode=reduction != "none"
    )


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_gradcheck_fused_form(q):
    gen = generator(0)
    hidden = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(7, generator=gen, dtype=torch.float64, requires_grad=True)
    target = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    assert torch.autograd.gradcheck(
        lambda h, w, b: linear_gce_loss(h, w, target, bias=b, q=q, reduction="none"),
        (hidden, weight, bias),
        fast_mode=True,
    )


def test_gce_of_the_reference_agrees_with_torch_softmax_power():
    # the reference's exp(q * log_softmax) against the literal formula where p_y does not underflow
    logits = make_logits((4, 9), 23, dtype=torch.float64, requires_grad=False)
    target = make_prompted_labels(4, 9, 23)
    p_y = F.softmax(logits, -1).gather(-1, target.clamp(min=0)[..., None])[..., 0]
    literal = torch.where(target != IGNORE, (1 - p_y**0.5) / 0.5, 0)
    torch.testing.assert_close(ref_gce_loss(logits, target, q=0.5, reduction="none"), literal)


# --------------------------------------------------------------------------------------------------
# the module and the checks of q


def test_module_passes_its_hyperparameters():
    logits = make_logits((3, 8), 17)
    target = make_prompted_labels(3, 8, 17)
    target = target.masked_fill(target == IGNORE, 4)
    module = GCELoss(q=0.5, ignore_index=4, reduction="sum")
    assert repr(module) == "GCELoss(q=0.5, ignore_index=4, reduction='sum')"
    expected = ref_gce_loss(logits.detach(), target, q=0.5, ignore_index=4, reduction="sum")
    assert_loss_close(module(logits, target), expected, logits.dtype)
    assert_loss_close(module(logits, target, num_items_in_batch=5), expected / 5, logits.dtype)


BAD_QS = [0, 0.0, -0.5, 1.5, 1 + 1e-9, float("nan"), float("inf"), "0.5", None, True, torch.tensor(0.5)]


@pytest.mark.parametrize("bad", BAD_QS, ids=repr)
@pytest.mark.parametrize("form", ["logits", "fused", "module"])
def test_q_outside_0_1_or_not_a_number_raises_naming_it(form, bad):
    logits = make_logits((5,), 11)
    target = make_target((5,), 11)
    message = rf"q must be a number in \(0, 1\], got {re.escape(repr(bad))}"
    with pytest.raises(ValueError, match=message):
        if form == "logits":
            gce_loss(logits, target, q=bad)
        elif form == "fused":
            linear_gce_loss(torch.randn(5, 4), torch.randn(11, 4), target, q=bad)
        else:
            GCELoss(q=bad)
