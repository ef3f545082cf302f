"""Classification and regression objectives (focal, binary focal, dice, MSE + correlation) and R-Drop's KL:
values and gradients against the float64 references in reference.py, known values, equivalences with torch,
edge cases (saturated half-precision logits, all-ignored batches, absent classes, flat columns, devices),
and the contract every entry of ``tunekit.losses.registry.CLASSIFICATION_LOSSES`` shares.

Half-precision inputs are built in their dtype first; the reference then gets float64 copies of those
rounded values, so the comparisons measure tunekit's float32 arithmetic, not the input rounding.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import IGNORE, assert_grad_close, assert_loss_close, generator, leaf, make_target
from reference import (
    CLASSIFICATION_REFERENCES,
    ref_binary_focal_loss,
    ref_dice_loss,
    ref_focal_loss,
    ref_mse_corr_loss,
    ref_rdrop_kl,
)
from tunekit.losses import (
    BinaryFocalLoss,
    DiceLoss,
    FocalLoss,
    MSECorrLoss,
    RDropLoss,
    binary_focal_loss,
    dice_loss,
    focal_loss,
    mse_corr_loss,
    rdrop_kl,
)
from tunekit.losses.registry import CLASSIFICATION_LOSSES, PROBLEM_TYPES

DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
HALF_DTYPES = [torch.bfloat16, torch.float16]
REDUCTIONS = ["none", "mean", "sum"]
DICE_MODES = ["multiclass", "multilabel", "binary"]
REGISTRY_NAMES = sorted(CLASSIFICATION_LOSSES)


def dtype_id(dtype):
    return str(dtype).removeprefix("torch.")


def randn(*shape, dtype=torch.float32, seed=0, scale=2.0):
    """Leaf tensor of N(0, scale^2) values rounded to ``dtype``."""
    values = torch.randn(*shape, generator=generator(seed), dtype=torch.float64) * scale
    return values.to(dtype).requires_grad_()


def class_labels(shape, num_classes, *, seed=1, ignore_frac=0.25):
    """Integer labels of ``shape`` in [0, num_classes); the first is supervised, the last ignored."""
    target = make_target(shape, num_classes, seed=seed, ignore_frac=ignore_frac)
    flat = target.view(-1)
    flat[0] = num_classes - 1
    if flat.numel() > 1:
        flat[-1] = IGNORE
    return target


def binary_labels(shape, kind, *, seed=2):
    """0/1 labels as int64, bool or float, or soft labels in [0, 1] (with an exact 0 and 1 among them)."""
    values = torch.rand(shape, generator=generator(seed))
    if kind == "soft":
        flat = values.view(-1)
        flat[0], flat[-1] = 0.0, 1.0
        return values
    hard = values < 0.4
    return {"int": hard.long(), "bool": hard, "float": hard.float()}[kind]


def with_ignored(target, *, seed=3, frac=0.2):
    """A float binary / multi-label target with about ``frac`` of its elements set to IGNORE."""
    ignored = torch.rand(target.shape, generator=generator(seed)) < frac
    return target.float().masked_fill(ignored, IGNORE)


def check_against_reference(function, reference, *args, **kwargs):
    """Forward + backward through tunekit and the float64 reference; compare the losses and the gradients.

    The positional tensors that require grad are the differentiated inputs; the reference gets float64
    copies of them. 'none' backpropagates random weights per item, a scalar loss itself."""
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    dtype = inputs[0].dtype
    copies = {id(a): leaf(a, torch.float64) for a in inputs}
    ref_args = [copies.get(id(a), a) for a in args]
    loss = function(*args, **kwargs)
    expected = reference(*ref_args, **kwargs)
    assert_loss_close(loss, expected, dtype)
    if expected.dim():
        weights = torch.randn(expected.shape, generator=generator(5), dtype=torch.float64)
        (loss * weights.to(loss.dtype)).sum().backward()
        (expected * weights).sum().backward()
    else:
        loss.backward()
        expected.backward()
    for a in inputs:
        assert_grad_close(a.grad, copies[id(a)].grad, dtype)
    return loss


def dice_inputs(mode, layout, *, dtype=torch.float32, seed=0):
    """Logits and target with ignored positions for a dice mode; layout "items" is one position per
    sample ((B, C), or (B,) in binary mode), "tokens" (and the smaller "tiny") several ((B, N, C) or
    (B, N)); there the last sample has no supervised position at all."""
    batch, positions, classes = {"items": (5, 1, 4), "tokens": (3, 4, 5), "tiny": (3, 2, 3)}[layout]
    shape = (batch, classes) if layout == "items" else (batch, positions, classes)
    if mode == "binary":
        shape = shape[:-1]
    logits = randn(*shape, dtype=dtype, seed=seed)
    if mode == "multiclass":
        target = class_labels(shape[:-1], classes, seed=seed + 1)
    else:
        target = with_ignored(binary_labels(shape, "float", seed=seed + 1), seed=seed + 2)
    if layout != "items":
        target[-1] = IGNORE
    return logits, target


def registry_inputs(spec, *, dtype=torch.float32, seed=0):
    """Leaf logits (predictions) and labels of the kind the entry's problem_type takes."""
    logits = randn(6, 5, dtype=dtype, seed=seed)
    if spec.problem_type == "single_label_classification":
        return logits, class_labels((6,), 5, seed=seed + 1)
    if spec.problem_type == "multi_label_classification":
        return logits, binary_labels((6, 5), "float", seed=seed + 1)
    return logits, torch.randn(6, 5, generator=generator(seed + 1))


# --------------------------------------------------------------------------------------------------
# focal loss (softmax) against the reference


@pytest.mark.parametrize("leading", [(7,), (3, 11), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("num_classes", [2, 5, 37])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_focal_matches_reference(dtype, num_classes, leading):
    logits = randn(*leading, num_classes, dtype=dtype)
    target = class_labels(leading, num_classes)
    alpha = torch.linspace(0.25, 2.0, num_classes)
    for reduction in REDUCTIONS:
        logits.grad = None
        check_against_reference(
            focal_loss, ref_focal_loss, logits, target, gamma=2.0, alpha=alpha, reduction=reduction
        )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha_kind", ["none", "float", "list", "tensor"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_focal_alpha_and_gamma_match_reference(dtype, alpha_kind, gamma):
    alpha = {
        "none": None,
        "float": 0.25,
        "list": [0.5, 1.0, 2.0, 0.0, 1.5],  # a class of weight 0, too
        "tensor": torch.tensor([0.5, 1.0, 2.0, 0.0, 1.5], dtype=torch.float64),
    }[alpha_kind]
    logits = randn(3, 11, 5, dtype=dtype, seed=4)
    target = class_labels((3, 11), 5, seed=5)
    for reduction in REDUCTIONS:
        logits.grad = None
        check_against_reference(
            focal_loss, ref_focal_loss, logits, target, gamma=gamma, alpha=alpha, reduction=reduction
        )


def test_focal_custom_ignore_index_matches_reference():
    logits = randn(4, 6, 5)
    target = class_labels((4, 6), 5)
    target = torch.where(target == IGNORE, 3, target)  # class 3 is the ignored id now
    assert (target == 3).any() and (target != 3).any()
    loss = check_against_reference(
        focal_loss, ref_focal_loss, logits, target, ignore_index=3, alpha=[1.0, 2.0, 0.5, 9.0, 1.0]
    )
    assert loss.item() > 0


# --------------------------------------------------------------------------------------------------
# binary focal loss against the reference


@pytest.mark.parametrize("labels", ["int", "bool", "float", "soft"])
@pytest.mark.parametrize("shape", [(9,), (4, 6), (2, 3, 5)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_binary_focal_matches_reference(dtype, shape, labels):
    logits = randn(*shape, dtype=dtype)
    targets = binary_labels(shape, labels)
    check_against_reference(binary_focal_loss, ref_binary_focal_loss, logits, targets, reduction="none")


@pytest.mark.parametrize("gamma", [0.0, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25, 1.0])
@pytest.mark.parametrize("labels", ["float", "soft"])
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_binary_focal_alpha_and_gamma_match_reference(dtype, labels, alpha, gamma):
    logits = randn(4, 6, dtype=dtype, seed=6)
    targets = binary_labels((4, 6), labels, seed=7)
    for reduction in REDUCTIONS:
        logits.grad = None
        check_against_reference(
            binary_focal_loss,
            ref_binary_focal_loss,
            logits,
            targets,
            alpha=alpha,
            gamma=gamma,
            reduction=reduction,
        )


@pytest.mark.parametrize("labels", ["soft", "hard"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_focal_gradient_reaches_targets(reduction, labels):
    # targets (a teacher's probabilities, or exact 0/1 labels) may require grad too; at exact 0/1 the
    # derivative of the focusing factor with respect to t must not be lost
    logits = randn(4, 6, dtype=torch.float64, seed=8)
    targets = torch.rand(4, 6, generator=generator(9), dtype=torch.float64).clamp(0.05, 0.95)
    if labels == "hard":
        targets = targets.round()
    targets.requires_grad_()
    check_against_reference(binary_focal_loss, ref_binary_focal_loss, logits, targets, reduction=reduction)
    if labels == "soft":  # finite differences would step hard labels out of [0, 1]
        assert torch.autograd.gradcheck(
            lambda x, t: binary_focal_loss(x, t, gamma=2.0, reduction=reduction), (logits.detach(), targets)
        )


# --------------------------------------------------------------------------------------------------
# dice loss against the reference


@pytest.mark.parametrize("self_adjusting", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("square_denominator", [False, True], ids=["linear", "square"])
@pytest.mark.parametrize("batch_dice", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("mode", DICE_MODES)
def test_dice_options_match_reference(mode, batch_dice, square_denominator, self_adjusting):
    logits, target = dice_inputs(mode, "tokens", dtype=torch.float64)
    for smooth, reduction in itertools.product([0.1, 1.0], REDUCTIONS):  # each with a fresh gradient
        logits.grad = None
        check_against_reference(
            dice_loss,
            ref_dice_loss,
            logits,
            target,
            mode=mode,
            batch_dice=batch_dice,
            square_denominator=square_denominator,
            self_adjusting=self_adjusting,
            smooth=smooth,
            reduction=reduction,
        )


@pytest.mark.parametrize("layout", ["items", "tokens"])
@pytest.mark.parametrize("mode", DICE_MODES)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_dice_dtypes_and_layouts_match_reference(dtype, mode, layout):
    logits, target = dice_inputs(mode, layout, dtype=dtype, seed=8)
    for reduction in REDUCTIONS:
        logits.grad = None
        check_against_reference(  # also compares the shapes: (B, C), (B,) binary, () reduced
            dice_loss,
            ref_dice_loss,
            logits,
            target,
            mode=mode,
            self_adjusting=0.5,
            square_denominator=True,
            reduction=reduction,
        )


@pytest.mark.parametrize("mode", ["multilabel", "binary"])
def test_dice_soft_targets_match_reference(mode):
    logits, _ = dice_inputs(mode, "tokens", seed=9)
    target = with_ignored(binary_labels(logits.shape, "soft", seed=10), seed=11)
    for reduction in REDUCTIONS:
        logits.grad = None
        check_against_reference(
            dice_loss, ref_dice_loss, logits, target, mode=mode, self_adjusting=1.0, reduction=reduction
        )


def test_dice_none_shapes():
    logits, target = dice_inputs("multiclass", "tokens")
    assert dice_loss(logits, target, reduction="none").shape == (3, 5)
    assert dice_loss(logits, target, reduction="none", batch_dice=True).shape == (5,)
    logits, target = dice_inputs("binary", "tokens")
    assert dice_loss(logits, target, mode="binary", reduction="none").shape == (3,)
    assert dice_loss(logits, target, mode="binary", reduction="none", batch_dice=True).shape == ()


# --------------------------------------------------------------------------------------------------
# MSE + correlation and R-Drop's KL against the references


@pytest.mark.parametrize("corr_weight", [0.0, 0.5, 1.5, 4.0])
@pytest.mark.parametrize("shape", [(9,), (7, 3)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_mse_corr_matches_reference(dtype, shape, corr_weight):
    pred = randn(*shape, dtype=dtype, scale=1.0)
    noise = torch.randn(shape, generator=generator(9), dtype=torch.float64)
    target = (pred.detach().double() + noise).to(dtype)  # correlated with pred, r about 0.7
    check_against_reference(mse_corr_loss, ref_mse_corr_loss, pred, target, corr_weight=corr_weight)


RDROP_REDUCTIONS = [("none", None), ("mean", None), ("sum", None), ("mean", 4), ("sum", torch.tensor(0))]


@pytest.mark.parametrize("masked", [False, True], ids=["unpadded", "pad_mask"])
@pytest.mark.parametrize("shape", [(5, 7), (2, 6, 11)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
def test_rdrop_matches_reference(dtype, shape, masked):
    logits_a = randn(*shape, dtype=dtype, seed=10)
    logits_b = randn(*shape, dtype=dtype, seed=11)
    pad_mask = None
    if masked:
        pad_mask = torch.rand(shape[:-1], generator=generator(12)) < 0.3
        pad_mask.view(-1)[0] = True
    for reduction, num_items_in_batch in RDROP_REDUCTIONS:  # both logits' gradients, each time afresh
        logits_a.grad = logits_b.grad = None
        check_against_reference(
            rdrop_kl,
            ref_rdrop_kl,
            logits_a,
            logits_b,
            pad_mask=pad_mask,
            reduction=reduction,
            num_items_in_batch=num_items_in_batch,
        )


def test_rdrop_class_masked_in_both_passes_adds_nothing():
    # -inf logits in both passes (a masked class): p = q = 0 there, not (-inf) - (-inf) = NaN
    logits_a = torch.tensor([[1.0, float("-inf"), 0.5], [0.3, 0.0, -2.0]], requires_grad=True)
    logits_b = torch.tensor([[0.2, float("-inf"), 0.1], [0.1, 0.9, -1.0]], requires_grad=True)
    loss = rdrop_kl(logits_a, logits_b, reduction="none")
    loss.sum().backward()
    assert torch.isfinite(loss).all()
    expected = rdrop_kl(logits_a.detach()[:1, [0, 2]], logits_b.detach()[:1, [0, 2]], reduction="none")
    torch.testing.assert_close(loss.detach()[:1], expected)
    torch.testing.assert_close(
        loss.detach()[1:], ref_rdrop_kl(logits_a[1:], logits_b[1:], reduction="none").float()
    )
    for grad in (logits_a.grad, logits_b.grad):
        assert torch.isfinite(grad).all()
        assert grad[0, 1] == 0


def test_rdrop_of_two_close_passes_matches_reference():
    # the real use: two dropout masks give nearby logits, the KL is small and made of cancelling terms
    logits_a = randn(4, 9, 13)
    noise = torch.randn(4, 9, 13, generator=generator(13)) * 1e-2
    logits_b = (logits_a.detach() + noise).requires_grad_()
    loss = rdrop_kl(logits_a, logits_b, reduction="sum")
    reference_a, reference_b = leaf(logits_a, torch.float64), leaf(logits_b, torch.float64)
    expected = ref_rdrop_kl(reference_a, reference_b, reduction="sum")
    assert 0 < expected.item() < 1e-2
    # relative to the small KL itself, not to the logits: float32 keeps about 4 digits of it
    torch.testing.assert_close(loss.double(), expected.detach(), rtol=1e-4, atol=0)
    loss.backward()
    expected.backward()
    assert_grad_close(logits_a.grad, reference_a.grad, torch.float32, rtol=1e-4)
    assert_grad_close(logits_b.grad, reference_b.grad, torch.float32, rtol=1e-4)


# --------------------------------------------------------------------------------------------------
# gradcheck in float64


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize(
    "alpha",
    [None, 0.7, [0.5, 2.0, 1.0, 0.25], torch.tensor([0.5, 2.0, 1.0, 0.25])],
    ids=["no_alpha", "float", "list", "tensor"],
)
def test_gradcheck_focal(alpha, gamma):
    logits = randn(2, 3, 4, dtype=torch.float64, seed=14)
    target = class_labels((2, 3), 4, seed=15)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda z, reduction=reduction: focal_loss(
                z, target, gamma=gamma, alpha=alpha, reduction=reduction
            ),
            (logits,),
        )


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("labels", ["float", "soft"])
def test_gradcheck_binary_focal(labels, alpha, gamma):
    logits = randn(3, 4, dtype=torch.float64, seed=16)
    targets = binary_labels((3, 4), labels, seed=17)
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(
            lambda z, reduction=reduction: binary_focal_loss(
                z, targets, alpha=alpha, gamma=gamma, reduction=reduction
            ),
            (logits,),
        )


@pytest.mark.parametrize("batch_dice", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("square_denominator", [False, True], ids=["linear", "square"])
@pytest.mark.parametrize("self_adjusting", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("mode", DICE_MODES)
def test_gradcheck_dice(mode, self_adjusting, square_denominator, batch_dice):
    # the per-term losses ('none'): the reductions are fixed linear maps of them, checked above
    logits, target = dice_inputs(mode, "tiny", dtype=torch.float64, seed=18)
    kwargs = {
        "mode": mode,
        "self_adjusting": self_adjusting,
        "square_denominator": square_denominator,
        "batch_dice": batch_dice,
        "smooth": 0.5,
        "reduction": "none",
    }
    assert torch.autograd.gradcheck(lambda z: dice_loss(z, target, **kwargs), (logits,))


@pytest.mark.parametrize("flat_target_column", [False, True], ids=["varying", "flat_target"])
@pytest.mark.parametrize("shape", [(6,), (5, 3)], ids=str)
def test_gradcheck_mse_corr(shape, flat_target_column):
    pred = randn(*shape, dtype=torch.float64, seed=19)
    target = torch.randn(shape, generator=generator(20), dtype=torch.float64)
    if flat_target_column:  # r = 0 for any pred: a smooth function of pred
        (target if target.dim() == 1 else target[:, 0]).fill_(0.7)
    assert torch.autograd.gradcheck(lambda z: mse_corr_loss(z, target, corr_weight=1.5), (pred,))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("masked", [False, True], ids=["unpadded", "pad_mask"])
def test_gradcheck_rdrop(masked, reduction):
    logits_a = randn(2, 3, 5, dtype=torch.float64, seed=21)
    logits_b = randn(2, 3, 5, dtype=torch.float64, seed=22)
    pad_mask = torch.tensor([[False, True, False], [False, False, True]]) if masked else None
    assert torch.autograd.gradcheck(
        lambda a, b: rdrop_kl(a, b, pad_mask=pad_mask, reduction=reduction), (logits_a, logits_b)
    )


# --------------------------------------------------------------------------------------------------
# known values


def test_binary_focal_known_value():
    logits = torch.tensor([[0.3992, 0.2232, 0.6435], [0.3800, 0.3044, 0.3241]])
    labels = torch.tensor([[0, 1, 1], [1, 0, 1]])
    loss = binary_focal_loss(logits, labels, alpha=0.25, gamma=2.0, reduction="mean")
    assert abs(loss.item() - 0.0908353) < 1e-6
    assert abs(ref_binary_focal_loss(logits, labels).item() - 0.0908353) < 1e-6


def test_mse_corr_known_value_is_pearson_not_a_biased_unbiased_mixture():
    pred = torch.tensor([[0.1], [0.2], [0.2], [0.8], [0.4]])
    target = torch.tensor([[0.0], [1.0], [0.0], [0.0], [1.0]])
    loss = mse_corr_loss(pred, target, corr_weight=1.5).item()
    assert abs(loss - 2.0341) < 1e-4
    assert abs(loss - 1.9949) > 1e-2  # the seed's value: a covariance and standard deviations of two kinds
    # by hand: r is scale-free, so any consistent normalisation gives it
    p, t = [v[0] for v in pred.tolist()], [v[0] for v in target.tolist()]
    mp, mt = sum(p) / 5, sum(t) / 5
    cov = sum((a - mp) * (b - mt) for a, b in zip(p, t, strict=True))
    r = cov / math.sqrt(sum((a - mp) ** 2 for a in p) * sum((b - mt) ** 2 for b in t))
    mse = sum((a - b) ** 2 for a, b in zip(p, t, strict=True)) / 5
    assert loss == pytest.approx(mse + 1.5 * (1 - r), abs=1e-6)


def test_rdrop_known_value_is_the_symmetric_kl_by_hand():
    a, b = [1.0, 0.0, -1.0], [0.5, 0.2, -0.3]

    def softmax(row):
        total = sum(math.exp(v) for v in row)
        return [math.exp(v) / total for v in row]

    p, q = softmax(a), softmax(b)
    kl_pq = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    kl_qp = sum(qi * math.log(qi / pi) for pi, qi in zip(p, q, strict=True))
    loss = rdrop_kl(torch.tensor(a), torch.tensor(b)).item()
    assert abs(loss - 0.101810) < 1e-6
    assert loss == pytest.approx((kl_pq + kl_qp) / 2, abs=1e-7)


def test_focal_docstring_example_by_hand():
    rows, alpha = [[2.0, 0.0, -1.0], [0.0, 3.0, 0.5]], [0.5, 1.0, 2.0]
    p0 = math.exp(2.0) / sum(math.exp(v) for v in rows[0])
    expected = -alpha[0] * (1 - p0) ** 2 * math.log(p0)  # the second item is ignored; mean over one
    loss = focal_loss(torch.tensor(rows), torch.tensor([0, IGNORE]), alpha=alpha)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------------------------------
# equivalences with torch and between layouts


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
def test_focal_without_focusing_or_alpha_is_cross_entropy(dtype, reduction):
    logits = randn(3, 8, 6, dtype=dtype, seed=23)
    target = class_labels((3, 8), 6, seed=24)
    reference_logits = leaf(logits)
    loss = focal_loss(logits, target, gamma=0.0, alpha=None, reduction=reduction)
    expected = F.cross_entropy(reference_logits.transpose(1, 2), target, reduction=reduction)
    torch.testing.assert_close(loss, expected)
    weights = torch.randn(loss.shape, generator=generator(25), dtype=dtype)
    (loss * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad)


def test_focal_with_per_class_alpha_sums_like_weighted_cross_entropy():
    logits = randn(13, 4, dtype=torch.float64, seed=26)
    target = class_labels((13,), 4, seed=27)
    alpha = torch.tensor([0.25, 1.0, 3.0, 0.5], dtype=torch.float64)
    reference_logits = leaf(logits)
    loss = focal_loss(logits, target, gamma=0.0, alpha=alpha, reduction="sum")
    expected = F.cross_entropy(reference_logits, target, weight=alpha, reduction="sum")
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad)
    # "mean" divides by the supervised count, not by the sum of the labels' alphas as cross_entropy does
    mean = focal_loss(logits, target, gamma=0.0, alpha=alpha)
    torch.testing.assert_close(mean, expected / int((target != IGNORE).sum()))
    assert not torch.allclose(mean, F.cross_entropy(logits, target, weight=alpha))


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("labels", ["float", "soft"])
def test_binary_focal_without_focusing_or_alpha_is_bce_with_logits(labels, reduction):
    logits = randn(5, 7, dtype=torch.float64, seed=28)
    targets = binary_labels((5, 7), labels, seed=29)
    reference_logits = leaf(logits)
    loss = binary_focal_loss(logits, targets, gamma=0.0, alpha=None, reduction=reduction)
    expected = F.binary_cross_entropy_with_logits(reference_logits, targets.double(), reduction=reduction)
    torch.testing.assert_close(loss, expected)
    weights = torch.randn(loss.shape, generator=generator(30), dtype=torch.float64)
    (loss * weights).sum().backward()
    (expected * weights).sum().backward()
    torch.testing.assert_close(logits.grad, reference_logits.grad)


@pytest.mark.parametrize("masked", [False, True], ids=["unpadded", "pad_mask"])
def test_rdrop_sum_is_the_papers_kl_div_sum_over_two(masked):
    logits_a, logits_b = randn(3, 5, 8, seed=31), randn(3, 5, 8, seed=32)
    pad_mask = torch.rand(3, 5, generator=generator(33)) < 0.4 if masked else torch.zeros(3, 5, dtype=bool)
    # the R-Drop paper's compute_kl_loss
    p_loss = F.kl_div(F.log_softmax(logits_a, dim=-1), F.softmax(logits_b, dim=-1), reduction="none")
    q_loss = F.kl_div(F.log_softmax(logits_b, dim=-1), F.softmax(logits_a, dim=-1), reduction="none")
    p_loss = p_loss.masked_fill(pad_mask.unsqueeze(-1), 0.0).sum()
    q_loss = q_loss.masked_fill(pad_mask.unsqueeze(-1), 0.0).sum()
    expected = (p_loss + q_loss) / 2
    loss = rdrop_kl(logits_a, logits_b, pad_mask=pad_mask if masked else None, reduction="sum")
    torch.testing.assert_close(loss, expected)
    grads = torch.autograd.grad(loss, (logits_a, logits_b))
    expected_grads = torch.autograd.grad(expected, (logits_a, logits_b))
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("objective", ["focal", "binary_focal", "rdrop"])
def test_token_layout_equals_the_flattened_call(objective, reduction):
    batch, length, classes = 3, 7, 5
    logits = randn(batch, length, classes, seed=34)
    if objective == "focal":
        target = class_labels((batch, length), classes, seed=35)
        layout = focal_loss(logits, target, alpha=[1.0, 0.5, 2.0, 1.0, 0.25], reduction=reduction)
        flat = focal_loss(
            logits.reshape(-1, classes),
            target.reshape(-1),
            alpha=[1.0, 0.5, 2.0, 1.0, 0.25],
            reduction=reduction,
        )
    elif objective == "binary_focal":
        targets = binary_labels((batch, length, classes), "float", seed=35)
        layout = binary_focal_loss(logits, targets, reduction=reduction)
        flat = binary_focal_loss(logits.reshape(-1), targets.reshape(-1), reduction=reduction)
    else:
        other = randn(batch, length, classes, seed=36)
        pad_mask = torch.rand(batch, length, generator=generator(37)) < 0.3
        layout = rdrop_kl(logits, other, pad_mask=pad_mask, reduction=reduction)
        flat = rdrop_kl(
            logits.reshape(-1, classes),
            other.reshape(-1, classes),
            pad_mask=pad_mask.reshape(-1),
            reduction=reduction,
        )
    if reduction == "none":
        assert layout.shape == logits.shape[: 3 if objective == "binary_focal" else 2]
        flat = flat.reshape(layout.shape)
    torch.testing.assert_close(layout, flat)


# --------------------------------------------------------------------------------------------------
# saturated half-precision logits


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("magnitude", [100.0, 60000.0])
def test_binary_focal_fp16_saturated_logits_match_closed_forms(magnitude, gamma):
    # a wrong, saturated prediction: BCE = |x|, p_t = 0 so the factor is 1, and the gradient is
    # alpha_t * sign(x); a right one: loss and gradient underflow to 0
    x = torch.tensor([magnitude, magnitude, -magnitude, -magnitude], dtype=torch.float16, requires_grad=True)
    t = torch.tensor([0.0, 1.0, 0.0, 1.0])
    loss = binary_focal_loss(x, t, alpha=0.25, gamma=gamma, reduction="none")
    assert loss.dtype == torch.float32
    expected = torch.tensor([0.75 * magnitude, 0.0, 0.0, 0.25 * magnitude])
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    assert x.grad.dtype == torch.float16
    assert torch.isfinite(x.grad).all()
    torch.testing.assert_close(x.grad.float(), torch.tensor([0.75, 0.0, 0.0, -0.25]), rtol=1e-3, atol=1e-6)
    # "mean" too: no overflow in the fp16 gradient
    x.grad = None
    binary_focal_loss(x, t, alpha=0.25, gamma=gamma).backward()
    torch.testing.assert_close(
        x.grad.float(), torch.tensor([0.75, 0.0, 0.0, -0.25]) / 4, rtol=1e-3, atol=1e-6
    )


@pytest.mark.parametrize("alpha", [None, [0.5, 1.0, 2.0]], ids=["no_alpha", "per_class"])
@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("magnitude", [100.0, 60000.0])
def test_focal_fp16_saturated_logits_match_closed_forms(magnitude, gamma, alpha):
    # rows [v, -v, 0]: p = (1, 0, 0); label 1 costs 2v, label 2 costs v (the factor is 1), label 0 nothing;
    # the gradient of a wrong row is softmax - one_hot = e_0 - e_label
    x = torch.tensor([[magnitude, -magnitude, 0.0]] * 3, dtype=torch.float16, requires_grad=True)
    target = torch.tensor([0, 1, 2])
    weights = torch.tensor([1.0, 1.0, 1.0] if alpha is None else alpha)
    loss = focal_loss(x, target, gamma=gamma, alpha=alpha, reduction="none")
    assert loss.dtype == torch.float32
    expected = torch.tensor([0.0, 2 * magnitude, magnitude]) * weights
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-6, atol=1e-6)
    loss.sum().backward()
    assert x.grad.dtype == torch.float16
    assert torch.isfinite(x.grad).all()
    expected_grad = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0], [1.0, 0.0, -1.0]])
    expected_grad = expected_grad * weights.unsqueeze(-1)
    # the focusing factor's gradient adds and subtracts float32 terms of size gamma * -log p_y = gamma * 2v
    # (through softmax(others) and softmax(all)) that cancel exactly in the limit; their rounding (2^-24
    # relative) survives: nothing at v = 100 (fp16 rounding of 1/3 dominates), ~3e-3 at v = 60000
    atol = 1e-6 + gamma * 2 * magnitude * 2**-23 * max(weights).item()
    torch.testing.assert_close(x.grad.float(), expected_grad, rtol=1e-3, atol=atol)
    x.grad = None
    focal_loss(x, target, gamma=gamma, alpha=alpha).backward()
    torch.testing.assert_close(x.grad.float(), expected_grad / 3, rtol=1e-3, atol=atol)


# --------------------------------------------------------------------------------------------------
# all-ignored batches


def assert_exact_zero_with_zero_grad(loss, inputs, reduction, none_shape):
    assert loss.shape == (none_shape if reduction == "none" else ())
    assert torch.equal(loss.detach(), torch.zeros_like(loss))
    loss.sum().backward()
    for x in inputs:
        assert x.grad is not None
        assert x.grad.dtype == x.dtype
        assert torch.equal(x.grad, torch.zeros_like(x))  # zero, not NaN


@pytest.mark.parametrize("num_items_in_batch", [None, 0, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dtype_id)
def test_focal_all_ignored_gives_exact_zero(dtype, reduction, num_items_in_batch):
    if reduction == "none":
        num_items_in_batch = None
    logits = randn(2, 3, 4, dtype=dtype)
    target = torch.full((2, 3), IGNORE)
    loss = focal_loss(
        logits, target, alpha=[1.0, 2.0, 0.5, 1.0], reduction=reduction, num_items_in_batch=num_items_in_batch
    )
    assert_exact_zero_with_zero_grad(loss, [logits], reduction, (2, 3))


@pytest.mark.parametrize("smooth", [0.0, 1.0])
@pytest.mark.parametrize("batch_dice", [False, True], ids=["per_sample", "batch"])
@pytest.mark.parametrize("mode", DICE_MODES)
def test_dice_all_ignored_gives_exact_zero(mode, batch_dice, smooth):
    logits, target = dice_inputs(mode, "tokens", dtype=torch.bfloat16)
    target = torch.full_like(target, IGNORE)
    classes = () if mode == "binary" else (logits.shape[-1],)
    none_shape = classes if batch_dice else (logits.shape[0], *classes)
    for reduction in REDUCTIONS:
        logits.grad = None
        loss = dice_loss(
            logits,
            target,
            mode=mode,
            batch_dice=batch_dice,
            smooth=smooth,
            self_adjusting=0.5,
            reduction=reduction,
        )
        assert loss.dtype == torch.float32
        assert_exact_zero_with_zero_grad(loss, [logits], reduction, none_shape)


@pytest.mark.parametrize("num_items_in_batch", [None, 0, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_rdrop_all_padded_gives_exact_zero(reduction, num_items_in_batch):
    if reduction == "none":
        num_items_in_batch = None
    logits_a, logits_b = (
        randn(2, 3, 5, dtype=torch.bfloat16, seed=1),
        randn(2, 3, 5, dtype=torch.bfloat16, seed=2),
    )
    pad_mask = torch.ones(2, 3, dtype=torch.bool)
    loss = rdrop_kl(
        logits_a, logits_b, pad_mask=pad_mask, reduction=reduction, num_items_in_batch=num_items_in_batch
    )
    assert loss.dtype == torch.float32
    assert_exact_zero_with_zero_grad(loss, [logits_a, logits_b], reduction, (2, 3))


# --------------------------------------------------------------------------------------------------
# dice: absent classes, smooth = 0


@pytest.mark.parametrize("self_adjusting", [0.0, 0.5])
@pytest.mark.parametrize("batch_dice", [False, True], ids=["per_sample", "batch"])
def test_dice_absent_class_term_is_its_false_positive_mass(batch_dice, self_adjusting):
    # (B, C) sequence classification; class 4 never occurs, and each sample holds one class only
    smooth = 0.7
    logits = randn(6, 5, dtype=torch.float64, seed=38)
    target = torch.tensor([0, 1, 2, 3, 0, 1])
    loss = check_against_reference(
        dice_loss,
        ref_dice_loss,
        logits,
        target,
        batch_dice=batch_dice,
        self_adjusting=self_adjusting,
        smooth=smooth,
        reduction="none",
    )
    assert torch.isfinite(loss).all()
    p = logits.detach().softmax(-1)
    q = (1 - p) ** self_adjusting * p
    if batch_dice:
        mass = q[:, 4].sum()
        assert loss[4].item() == pytest.approx((mass / (mass + smooth)).item(), rel=1e-12)
    else:
        absent = F.one_hot(target, 5) == 0
        torch.testing.assert_close(loss.detach()[absent], (q / (q + smooth))[absent], rtol=1e-12, atol=0)


def test_dice_smooth_zero_stays_finite():
    # ordinary logits: the reference's 2 sum(q y) / (sum q + sum y) agrees
    logits, target = dice_inputs("multiclass", "tokens", dtype=torch.float64, seed=39)
    check_against_reference(dice_loss, ref_dice_loss, logits, target, smooth=0.0, reduction="sum")
    # saturated: class 1 is absent and its probability is exactly 0, a 0 / 0 term without the floor;
    # documented as 1 - 0 = 1 whatever the prediction
    for mode in DICE_MODES:
        if mode == "multiclass":
            logits = torch.tensor([[200.0, -200.0], [300.0, -300.0]], requires_grad=True)
            target = torch.tensor([0, 0])
        else:
            logits = torch.tensor([[-200.0, -300.0], [-250.0, -120.0]], requires_grad=True)
            target = torch.zeros(2, 2)
            if mode == "binary":
                logits, target = logits[:, 0].detach().requires_grad_(), target[:, 0]
        for self_adjusting in (0.0, 0.5, 1.0):
            logits.grad = None
            loss = dice_loss(
                logits,
                target,
                mode=mode,
                smooth=0.0,
                self_adjusting=self_adjusting,
                batch_dice=False,  # per sample: the absent class is absent from each sample
                reduction="none",
            )
            assert torch.isfinite(loss).all()
            loss.sum().backward()
            assert torch.isfinite(logits.grad).all()
            if mode == "multiclass":  # self-adjusting: q = (1 - p)^a p = 0 at p = 1, so class 0 costs 1
                present = 0.0 if self_adjusting == 0 else 1.0
                torch.testing.assert_close(loss.detach(), torch.tensor([[present, 1.0], [present, 1.0]]))
            else:  # nothing is positive anywhere: every term is 1
                torch.testing.assert_close(loss.detach(), torch.ones_like(loss))


# --------------------------------------------------------------------------------------------------
# MSE + correlation: columns without variation


def mse_only_grad(pred, target):
    """The gradient of mean((pred - target)^2) with respect to pred."""
    return 2 * (pred.detach().double() - target.double()) / pred.numel()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=dtype_id)
def test_mse_corr_flat_columns_have_r_zero_and_mse_gradient_only(dtype):
    gen = generator(40)
    pred_values = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    target = torch.randn(5, 5, generator=gen, dtype=torch.float64)
    pred_values[:, 0] = 0.3  # constant prediction
    target[:, 1] = -0.2  # constant target
    pred_values[:, 2] = 1000.1  # constant at a large offset: its float mean need not equal 1000.1
    target[:, 3] = 1000.1
    pred = pred_values.to(dtype).requires_grad_()
    target = target.to(dtype)
    loss = mse_corr_loss(pred, target, corr_weight=1.5)
    assert torch.isfinite(loss)
    x, y = pred.detach().double(), target.double()
    r4 = torch.corrcoef(torch.stack([x[:, 4], y[:, 4]]))[0, 1]
    expected = ((x - y) ** 2).mean() + 1.5 * (4 * 1.0 + (1 - r4)) / 5  # r = 0 on columns 0 to 3
    assert_loss_close(loss, expected, dtype)
    assert_loss_close(loss, ref_mse_corr_loss(x, y, corr_weight=1.5), dtype)
    loss.backward()
    assert torch.isfinite(pred.grad).all()
    assert_grad_close(pred.grad[:, :4], mse_only_grad(pred, target)[:, :4], dtype)
    assert not torch.allclose(pred.grad[:, 4].double(), mse_only_grad(pred, target)[:, 4])


def test_mse_corr_eps_is_the_threshold_on_the_correlation_denominator():
    # a column with a little variation: r is computed while sqrt(sum a^2 * sum b^2) > eps, else 0
    pred = torch.tensor([0.0, 1e-3, 3e-3, 2e-3, 4e-3], dtype=torch.float64)
    target = torch.tensor([0.0, 2e-3, 1e-3, 5e-3, 3e-3], dtype=torch.float64)
    a, b = pred - pred.mean(), target - target.mean()
    denominator = math.sqrt(float((a * a).sum() * (b * b).sum()))
    r = torch.corrcoef(torch.stack([pred, target]))[0, 1]
    mse = ((pred - target) ** 2).mean()
    computed = mse_corr_loss(pred, target, corr_weight=1.0, eps=denominator / 2)
    torch.testing.assert_close(computed, mse + 1 - r)
    flat = mse_corr_loss(pred, target, corr_weight=1.0, eps=denominator * 2)
    torch.testing.assert_close(flat, mse + 1)


@pytest.mark.parametrize("shape", [(1,), (1, 3)], ids=str)
def test_mse_corr_batch_of_one(shape):
    pred = randn(*shape, seed=41)
    target = torch.randn(shape, generator=generator(42))
    loss = mse_corr_loss(pred, target, corr_weight=2.0)
    torch.testing.assert_close(loss, F.mse_loss(pred, target) + 2.0)  # r = 0: each column adds 1
    loss.backward()
    torch.testing.assert_close(pred.grad.double(), mse_only_grad(pred, target))


# --------------------------------------------------------------------------------------------------
# per-class alpha: device and dtype


def test_per_class_alpha_follows_the_logits_dtype():
    alpha64 = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    target = torch.tensor([0, 2, 1, IGNORE])
    for dtype, loss_dtype in [
        (torch.float32, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float64, torch.float64),
    ]:
        logits = randn(4, 3, dtype=dtype)
        for alpha in (alpha64, [0.5, 1.0, 2.0], alpha64.float()):
            loss = focal_loss(logits, target, alpha=alpha)
            assert loss.dtype == loss_dtype  # a float64 alpha does not promote a float32 loss
            logits.grad = None
            loss.backward()
            assert logits.grad.dtype == dtype


def test_per_class_alpha_is_moved_to_the_logits_device(monkeypatch):
    # a CPU alpha (tensor or list) and logits elsewhere: 'meta' stands in for an accelerator here
    monkeypatch.delenv("TUNEKIT_SYNC_CHECKS", raising=False)
    logits = torch.randn(4, 3, device="meta", requires_grad=True)
    target = torch.zeros(4, dtype=torch.long, device="meta")
    for alpha in (torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64), [0.5, 1.0, 2.0]):
        for reduction in REDUCTIONS:
            loss = focal_loss(logits, target, alpha=alpha, reduction=reduction)
            assert loss.device.type == "meta"
            assert loss.dtype == torch.float32
            (grad,) = torch.autograd.grad(loss.sum(), logits)
            assert grad.device.type == "meta"
            assert grad.shape == logits.shape


def test_focal_module_alpha_buffer_follows_the_module(monkeypatch):
    monkeypatch.delenv("TUNEKIT_SYNC_CHECKS", raising=False)
    module = FocalLoss(alpha=[0.5, 1.0, 2.0])
    assert "alpha" in dict(module.named_buffers())
    assert module.alpha.device.type == "cpu"
    module = module.to("meta")
    assert module.alpha.device.type == "meta"
    logits = torch.randn(4, 3, device="meta", requires_grad=True)
    loss = module(logits, torch.zeros(4, dtype=torch.long, device="meta"))
    assert loss.device.type == "meta"
    assert torch.autograd.grad(loss, logits)[0].device.type == "meta"


def test_focal_module_alpha_survives_state_dict():
    logits, target = randn(6, 3), class_labels((6,), 3)
    saved = FocalLoss(alpha=[0.5, 1.0, 2.0])
    restored = FocalLoss(alpha=[1.0, 1.0, 1.0])
    restored.load_state_dict(saved.state_dict())
    torch.testing.assert_close(restored(logits, target), focal_loss(logits, target, alpha=[0.5, 1.0, 2.0]))


# --------------------------------------------------------------------------------------------------
# num_items_in_batch (the per-item objectives)


def per_item_call(objective, dtype=torch.float32):
    """(function of **kwargs, its differentiated inputs, the number of items that count) for a per-item
    objective on fixed data."""
    if objective == "focal":
        logits, target = randn(3, 7, 5, dtype=dtype, seed=43), class_labels((3, 7), 5, seed=44)
        alpha = [1.0, 0.5, 2.0, 1.0, 0.25]
        return (
            (lambda **kw: focal_loss(logits, target, alpha=alpha, **kw)),
            [logits],
            int((target != IGNORE).sum()),
        )
    if objective == "binary_focal":
        logits, targets = randn(3, 7, dtype=dtype, seed=43), binary_labels((3, 7), "soft", seed=44)
        return (lambda **kw: binary_focal_loss(logits, targets, **kw)), [logits], targets.numel()
    logits_a, logits_b = randn(3, 7, 5, dtype=dtype, seed=43), randn(3, 7, 5, dtype=dtype, seed=44)
    pad_mask = torch.rand(3, 7, generator=generator(45)) < 0.3
    call = lambda **kw: rdrop_kl(logits_a, logits_b, pad_mask=pad_mask, **kw)  # noqa: E731
    return call, [logits_a, logits_b], int((~pad_mask).sum())


@pytest.mark.parametrize("as_tensor", [False, True], ids=["int", "tensor"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("objective", ["focal", "binary_focal", "rdrop"])
def test_num_items_in_batch_divides_the_sum(objective, reduction, as_tensor):
    call, inputs, _ = per_item_call(objective)
    total = call(reduction="sum")
    loss = call(reduction=reduction, num_items_in_batch=torch.tensor(37) if as_tensor else 37)
    torch.testing.assert_close(loss, total / 37)
    grads = torch.autograd.grad(loss, inputs)
    expected_grads = torch.autograd.grad(total / 37, inputs)
    for grad, expected_grad in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(grad, expected_grad)
    # zero counts as one
    num_items = torch.tensor(0) if as_tensor else 0
    torch.testing.assert_close(call(reduction=reduction, num_items_in_batch=num_items), total)


@pytest.mark.parametrize("objective", ["focal", "binary_focal", "rdrop"])
def test_mean_is_the_sum_over_the_items_that_count(objective):
    call, _, count = per_item_call(objective)
    total = call(reduction="sum")
    torch.testing.assert_close(call(), total / count)
    torch.testing.assert_close(call(num_items_in_batch=count), call())
    torch.testing.assert_close(call(reduction="none").sum(), total)


# --------------------------------------------------------------------------------------------------
# modules


@pytest.mark.parametrize(
    ("module", "function", "labels", "kwargs", "forward_kwargs"),
    [
        (
            FocalLoss,
            focal_loss,
            "class",
            {"gamma": 0.5, "alpha": [1.0, 0.5, 2.0, 1.0, 0.25], "ignore_index": 2},
            {},
        ),
        (
            FocalLoss,
            focal_loss,
            "class",
            {"gamma": 1.0, "alpha": 0.3, "reduction": "sum"},
            {"num_items_in_batch": 7},
        ),
        (
            BinaryFocalLoss,
            binary_focal_loss,
            "binary",
            {"alpha": None, "gamma": 0.5, "reduction": "none"},
            {},
        ),
        (
            BinaryFocalLoss,
            binary_focal_loss,
            "binary",
            {"alpha": 0.6, "gamma": 3.0},
            {"num_items_in_batch": 9},
        ),
        (
            DiceLoss,
            dice_loss,
            "binary",
            {"mode": "multilabel", "smooth": 0.2, "square_denominator": True},
            {},
        ),
        (DiceLoss, dice_loss, "class", {"self_adjusting": 1.0, "batch_dice": True, "ignore_index": 2}, {}),
        (MSECorrLoss, mse_corr_loss, "real", {"corr_weight": 0.3, "eps": 1e-6}, {}),
        (RDropLoss, rdrop_kl, "logits", {"reduction": "sum"}, {"num_items_in_batch": 4}),
        (RDropLoss, rdrop_kl, "logits", {"reduction": "none"}, {"pad_mask": torch.tensor([True, False] * 3)}),
    ],
    ids=[
        "focal-per_class-ignore_index",
        "focal-float_alpha-num_items",
        "binary_focal-none",
        "binary_focal-num_items",
        "dice-multilabel-square",
        "dice-batch-self_adjusting",
        "mse_corr",
        "rdrop-num_items",
        "rdrop-pad_mask",
    ],
)
def test_module_passes_its_hyperparameters(module, function, labels, kwargs, forward_kwargs):
    logits = randn(6, 5, seed=46)
    ignored = class_labels((6,), 5, seed=47) == IGNORE  # these become the modules' ignore_index=2
    second = {
        "class": class_labels((6,), 5, seed=47).masked_fill(ignored, 2),
        "binary": binary_labels((6, 5), "float", seed=47),
        "real": torch.randn(6, 5, generator=generator(47)),
        "logits": randn(6, 5, seed=47),
    }[labels]
    loss = module(**kwargs)(logits, second, **forward_kwargs)
    expected = function(logits, second, **kwargs, **forward_kwargs)
    torch.testing.assert_close(loss, expected)
    assert loss.requires_grad


# --------------------------------------------------------------------------------------------------
# every entry of CLASSIFICATION_LOSSES


def test_registry_lists_the_classification_objectives():
    assert {"cross_entropy", "focal", "dice", "binary_focal", "multilabel_dice", "mse_corr"} <= set(
        CLASSIFICATION_LOSSES
    )
    assert CLASSIFICATION_LOSSES["focal"].function is focal_loss
    assert CLASSIFICATION_LOSSES["binary_focal"].module is BinaryFocalLoss
    assert CLASSIFICATION_LOSSES["multilabel_dice"].kwargs["mode"] == "multilabel"


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_registry_entry_is_consistent(name):
    spec = CLASSIFICATION_LOSSES[name]
    assert spec.name == name
    assert spec.problem_type in PROBLEM_TYPES
    assert name in CLASSIFICATION_REFERENCES, f"add a naive reference for {name!r} to tests/reference.py"
    assert spec.per_item == (name in {"cross_entropy", "focal", "binary_focal"})


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_registry_entry_computes_in_float32_and_leaves_inputs_alone(name, dtype):
    spec = CLASSIFICATION_LOSSES[name]
    logits, labels = registry_inputs(spec, dtype=dtype)
    logits_before, labels_before = logits.detach().clone(), labels.clone()
    loss = spec.function(logits, labels, **spec.kwargs)
    assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert loss.dim() == 0
    loss.backward()
    assert logits.grad is not None
    assert logits.grad.dtype == dtype
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.detach(), logits_before)
    assert torch.equal(labels, labels_before)
    assert labels.dtype == labels_before.dtype
    expected = CLASSIFICATION_REFERENCES[name](logits.detach().double(), labels, **spec.kwargs)
    assert_loss_close(loss, expected, dtype)


@pytest.mark.parametrize("name", REGISTRY_NAMES)
def test_registry_module_equals_function(name):
    spec = CLASSIFICATION_LOSSES[name]
    logits, labels = registry_inputs(spec, seed=48)
    module = spec.module(**spec.kwargs)
    assert isinstance(module, torch.nn.Module)
    torch.testing.assert_close(module(logits, labels), spec.function(logits, labels, **spec.kwargs))


@pytest.mark.parametrize("name", [name for name in REGISTRY_NAMES if CLASSIFICATION_LOSSES[name].per_item])
def test_registry_per_item_entries_take_num_items_in_batch(name):
    spec = CLASSIFICATION_LOSSES[name]
    logits, labels = registry_inputs(spec, seed=49)
    total = spec.function(logits, labels, **spec.kwargs, reduction="sum")
    loss = spec.function(logits, labels, **spec.kwargs, num_items_in_batch=11)
    torch.testing.assert_close(loss, total / 11)
    torch.testing.assert_close(spec.module(**spec.kwargs)(logits, labels, num_items_in_batch=11), total / 11)


@pytest.mark.parametrize("dtype", HALF_DTYPES, ids=dtype_id)
def test_caller_tensors_are_not_modified(dtype):
    # the alpha tensor, both R-Drop passes and the pad mask too
    alpha = torch.tensor([0.5, 1.0, 2.0, 0.25, 1.0], dtype=torch.float64)
    logits, target = randn(4, 5, dtype=dtype), class_labels((4,), 5)
    other, pad_mask = randn(4, 5, dtype=dtype, seed=3), torch.tensor([False, True, False, False])
    saved = [t.detach().clone() for t in (alpha, logits, target, other, pad_mask)]
    for reduction in REDUCTIONS:
        focal_loss(logits, target, alpha=alpha, reduction=reduction).sum().backward()
        rdrop_kl(logits, other, pad_mask=pad_mask, reduction=reduction).sum().backward()
    for before, after in zip(saved, (alpha, logits, target, other, pad_mask), strict=True):
        assert torch.equal(before, after.detach())
        assert before.dtype == after.dtype
    assert logits.grad.dtype == other.grad.dtype == dtype
