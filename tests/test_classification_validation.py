"""Bad input to the classification / regression objectives raises ValueError naming the problem.

Covers focal (softmax and sigmoid), dice (three modes), MSE + correlation and R-Drop's KL: wrong types,
shapes, devices and target values in the functions; bad hyper-parameters in the functions and the module
constructors; the modules' buffers, repr and forward; the `CLASSIFICATION_LOSSES` registry; and the shared
checks and reduction they rely on.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import re
from collections.abc import Mapping

import pytest
import torch
from torch import nn

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
from tunekit.losses._checks import (
    check_flag,
    check_fraction,
    check_logits_and_target,
    check_non_negative,
    check_num_items,
    check_probability_targets,
    check_same_shape,
    check_target_range,
)
from tunekit.losses._reduction import reduce_losses
from tunekit.losses.focal import class_weights
from tunekit.losses.registry import CLASSIFICATION_LOSSES, PROBLEM_TYPES, ClassificationLossSpec

C = 3
IGNORE = -100
NAN, INF = float("nan"), float("inf")

FUNCTIONS = {
    "focal": focal_loss,
    "binary_focal": binary_focal_loss,
    "dice_multiclass": functools.partial(dice_loss, mode="multiclass"),
    "dice_multilabel": functools.partial(dice_loss, mode="multilabel"),
    "dice_binary": functools.partial(dice_loss, mode="binary"),
    "mse_corr": mse_corr_loss,
    "rdrop": rdrop_kl,
}
MODULES = {
    "focal": FocalLoss,
    "binary_focal": BinaryFocalLoss,
    "dice_multiclass": functools.partial(DiceLoss, mode="multiclass"),
    "dice_multilabel": functools.partial(DiceLoss, mode="multilabel"),
    "dice_binary": functools.partial(DiceLoss, mode="binary"),
    "mse_corr": MSECorrLoss,
    "rdrop": RDropLoss,
}
NAMES = list(FUNCTIONS)
# the names of the two positional arguments, as the error messages spell them
ARGS = {
    "focal": ("logits", "target"),
    "binary_focal": ("logits", "target"),
    "dice_multiclass": ("logits", "target"),
    "dice_multilabel": ("logits", "target"),
    "dice_binary": ("logits", "target"),
    "mse_corr": ("pred", "target"),
    "rdrop": ("logits_a", "logits_b"),
}
INTEGER_TARGETS = ["focal", "dice_multiclass"]
PROBABILITY_TARGETS = ["binary_focal", "dice_multilabel", "dice_binary"]
REAL_SECOND = [*PROBABILITY_TARGETS, "mse_corr", "rdrop"]  # second argument: any real-valued tensor
DICE = ["dice_multiclass", "dice_multilabel", "dice_binary"]
WITH_REDUCTION = ["focal", "binary_focal", *DICE, "rdrop"]
WITH_IGNORE_INDEX = ["focal", *DICE]
WITH_NUM_ITEMS = ["focal", "binary_focal", "rdrop"]


def valid_inputs(name):
    """A valid (first, second) pair for the objective; targets hold an ignored item where allowed."""
    gen = torch.Generator().manual_seed(0)
    if name in INTEGER_TARGETS:
        return torch.randn(4, C, generator=gen, requires_grad=True), torch.tensor([0, 2, IGNORE, 1])
    if name == "binary_focal":
        return torch.randn(4, C, generator=gen, requires_grad=True), torch.tensor(
            [[0.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
        )
    if name == "dice_multilabel":
        target = torch.randint(2, (4, C), generator=gen).float()
        target[2, 1] = IGNORE
        return torch.randn(4, C, generator=gen, requires_grad=True), target
    if name == "dice_binary":
        target = torch.randint(2, (4, 5), generator=gen).float()
        target[1, 3] = IGNORE
        return torch.randn(4, 5, generator=gen, requires_grad=True), target
    if name == "mse_corr":
        return torch.randn(6, generator=gen, requires_grad=True), torch.randn(6, generator=gen)
    assert name == "rdrop"
    return (
        torch.randn(2, 5, C, generator=gen, requires_grad=True),
        torch.randn(2, 5, C, generator=gen, requires_grad=True),
    )


def call(name, first, second, **kwargs):
    return FUNCTIONS[name](first, second, **kwargs)


def message_of(excinfo) -> str:
    return str(excinfo.value)


def test_valid_inputs_are_accepted():
    # guards the cases below: each of them differs from a call that works in one respect only
    for name in NAMES:
        first, second = valid_inputs(name)
        loss = call(name, first, second)
        assert loss.dim() == 0 and torch.isfinite(loss), name
        loss.backward()
        assert first.grad is not None and torch.isfinite(first.grad).all(), name
        module_loss = MODULES[name]()(*valid_inputs(name))
        assert torch.isfinite(module_loss), name


@pytest.mark.parametrize("name", [n for n in NAMES if ARGS[n][1] == "target"])
def test_target_is_passed_as_target(name):
    first, second = valid_inputs(name)
    expected = call(name, first, second)
    assert torch.equal(FUNCTIONS[name](first, target=second), expected)
    assert torch.equal(MODULES[name]()(first, target=second), expected)


# --------------------------------------------------------------------------------------------------
# types of the tensors


BAD_FIRST = {
    "int_tensor": lambda x: x.detach().round().long(),
    "complex": lambda x: x.detach().to(torch.complex64),
    "list": lambda x: x.tolist(),
    "None": lambda x: None,
}


@pytest.mark.parametrize("bad", list(BAD_FIRST))
@pytest.mark.parametrize("name", NAMES)
def test_first_argument_must_be_a_float_tensor(name, bad):
    first, second = valid_inputs(name)
    with pytest.raises(ValueError, match=rf"^{ARGS[name][0]} must be a floating-point tensor"):
        call(name, BAD_FIRST[bad](first), second)


BAD_INTEGER_TARGETS = {
    "float": lambda t: t.float(),
    "bool": lambda t: t > 0,
    "complex": lambda t: t.to(torch.complex64),
    "list": lambda t: t.tolist(),
    "None": lambda t: None,
}


@pytest.mark.parametrize("bad", list(BAD_INTEGER_TARGETS))
@pytest.mark.parametrize("name", INTEGER_TARGETS)
def test_class_index_target_must_be_an_integer_tensor(name, bad):
    logits, target = valid_inputs(name)
    with pytest.raises(ValueError, match=r"^target must be an integer tensor of class indices"):
        call(name, logits, BAD_INTEGER_TARGETS[bad](target))


BAD_REAL_SECOND = {
    "complex": lambda t: t.detach().to(torch.complex64),
    "list": lambda t: t.tolist(),
    "None": lambda t: None,
}


@pytest.mark.parametrize("bad", list(BAD_REAL_SECOND))
@pytest.mark.parametrize("name", REAL_SECOND)
def test_second_argument_must_be_a_real_tensor(name, bad):
    first, second = valid_inputs(name)
    with pytest.raises(ValueError, match=rf"^{ARGS[name][1]} must be a real-valued tensor"):
        call(name, first, BAD_REAL_SECOND[bad](second))


def test_rdrop_logits_b_must_be_floating_point():
    logits_a, logits_b = valid_inputs("rdrop")
    with pytest.raises(ValueError, match=r"^logits_b must be a floating-point tensor"):
        rdrop_kl(logits_a, logits_b.detach().round().long())


@pytest.mark.parametrize("name", ["binary_focal", "dice_multilabel", "dice_binary", "mse_corr"])
def test_bool_and_integer_targets_are_accepted_where_real_targets_are(name):
    first, second = valid_inputs(name)
    second = second.clamp(0, 1).round() if name != "mse_corr" else second.round()
    as_float = call(name, first, second.float())
    assert torch.equal(call(name, first, second.long()), as_float)
    if name != "mse_corr":
        assert torch.equal(call(name, first, second.bool()), as_float)


# --------------------------------------------------------------------------------------------------
# shapes


SHAPE_CHANGES = {
    "last_axis_shorter": lambda t: t[..., :-1],
    "extra_axis": lambda t: t.unsqueeze(-1),
    "fewer_items": lambda t: t[:-1],
}


@pytest.mark.parametrize("change", list(SHAPE_CHANGES))
@pytest.mark.parametrize("name", NAMES)
def test_mismatched_second_argument_shape_raises(name, change):
    first, second = valid_inputs(name)
    bad = SHAPE_CHANGES[change](second)
    with pytest.raises(ValueError, match=r"shape") as excinfo:
        call(name, first, bad)
    assert str(tuple(bad.shape)) in message_of(excinfo)


@pytest.mark.parametrize("name", INTEGER_TARGETS)
def test_class_index_target_of_the_logits_shape_raises(name):
    # the one-hot mistake: a target with the class axis
    logits, _ = valid_inputs(name)
    with pytest.raises(ValueError, match=r"need target of shape \(4,\)"):
        call(name, logits, torch.zeros(4, C, dtype=torch.long))


def test_mse_corr_regression_head_output_takes_flat_labels():
    # a num_labels=1 head gives (N, 1); Hugging Face labels are (N,)
    pred = torch.tensor([[0.1], [0.7], [0.3], [0.9], [0.2], [0.5]])
    target = torch.tensor([0.0, 1.0, 0.5, 0.8, 0.1, 0.4])
    assert mse_corr_loss(pred, target) == mse_corr_loss(pred, target.unsqueeze(1))


def test_mse_corr_column_target_against_flat_pred_raises():
    # (N,) against (N, 1) would broadcast to (N, N) in a naive MSE
    pred, target = valid_inputs("mse_corr")
    with pytest.raises(ValueError, match=r"pred of shape \(6,\) need target of the same shape"):
        mse_corr_loss(pred, target[:, None])


@pytest.mark.parametrize("shape", [(2, 4), (5, 2), (2, 5, C), (10,)], ids=str)
def test_rdrop_pad_mask_of_the_wrong_shape_raises(shape):
    logits_a, logits_b = valid_inputs("rdrop")
    with pytest.raises(ValueError, match=r"need pad_mask of the same shape"):
        rdrop_kl(logits_a, logits_b, pad_mask=torch.zeros(shape, dtype=torch.bool))


# --------------------------------------------------------------------------------------------------
# devices ('meta' stands in for an accelerator)


@pytest.mark.parametrize("moved", ["first", "second"])
@pytest.mark.parametrize("name", NAMES)
def test_arguments_on_different_devices_raise(name, moved):
    first, second = valid_inputs(name)
    if moved == "first":
        first = first.detach().to("meta")
    else:
        second = second.detach().to("meta")
    with pytest.raises(ValueError, match=r"are on (cpu|meta) but") as excinfo:
        call(name, first, second)
    message = message_of(excinfo)
    assert "meta" in message and "cpu" in message
    assert ARGS[name][0] in message and ARGS[name][1] in message


def test_rdrop_pad_mask_on_another_device_raises():
    logits_a, logits_b = valid_inputs("rdrop")
    with pytest.raises(ValueError, match=r"pad_mask is on meta"):
        rdrop_kl(logits_a, logits_b, pad_mask=torch.zeros(2, 5, dtype=torch.bool, device="meta"))


def test_everything_on_one_other_device_passes_the_checks():
    # the device checks compare devices, they do not insist on the CPU (no compute: meta is slow to warm up)
    logits = torch.empty(4, C, device="meta")
    assert check_logits_and_target(logits, torch.empty(4, dtype=torch.long, device="meta")) == C
    check_same_shape("logits", logits, "target", torch.empty(4, C, device="meta"))
    check_target_range(torch.full((4,), 10**6, device="meta"), C, IGNORE)  # value checks: CPU only by default


# --------------------------------------------------------------------------------------------------
# too few dimensions or classes, empty batches

SCALAR_CASES = [
    pytest.param(
        focal_loss, torch.tensor(1.0), torch.tensor(0), r"logits of shape \(\) need target", id="focal_0d"
    ),
    pytest.param(
        FUNCTIONS["dice_multiclass"],
        torch.randn(C),
        torch.tensor(0),
        r"multiclass dice needs logits \(B, \.\.\., C\)",
        id="dice_multiclass_1d",
    ),
    pytest.param(
        FUNCTIONS["dice_multiclass"],
        torch.tensor(1.0),
        torch.tensor(0),
        r"logits of shape \(\) need target",
        id="dice_multiclass_0d",
    ),
    pytest.param(
        FUNCTIONS["dice_multilabel"],
        torch.randn(C),
        torch.ones(C),
        r"multilabel dice needs logits of shape \(B, \.\.\., C\)",
        id="dice_multilabel_1d",
    ),
    pytest.param(
        FUNCTIONS["dice_binary"],
        torch.tensor(1.0),
        torch.tensor(1.0),
        r"binary dice needs logits of shape \(B, \.\.\.\)",
        id="dice_binary_0d",
    ),
    pytest.param(
        rdrop_kl,
        torch.tensor(1.0),
        torch.tensor(2.0),
        r"logits_a must have a non-empty class axis",
        id="rdrop_0d",
    ),
]


@pytest.mark.parametrize(("function", "first", "second", "match"), SCALAR_CASES)
def test_scalar_logits_where_a_class_axis_is_needed_raise(function, first, second, match):
    with pytest.raises(ValueError, match=match):
        function(first, second)


@pytest.mark.parametrize("num_classes", [1, 0])
def test_focal_needs_two_classes(num_classes):
    logits = torch.randn(4, num_classes, requires_grad=True)
    target = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"focal_loss needs at least 2 classes"):
        focal_loss(logits, target)
    with pytest.raises(ValueError, match=r"focal_loss needs at least 2 classes"):
        FocalLoss()(logits, target)


@pytest.mark.parametrize("shape", [(0,), (0, 2)], ids=str)
def test_mse_corr_empty_batch_is_zero_with_a_zero_gradient(shape):
    pred = torch.empty(shape, requires_grad=True)
    loss = mse_corr_loss(pred, torch.empty(shape))
    assert loss.item() == 0 and loss.dtype == torch.float32
    loss.backward()
    assert pred.grad.shape == shape


def test_mse_corr_0d_pred_raises():
    with pytest.raises(ValueError, match=r"pred must have a batch dimension, got shape \(\)"):
        mse_corr_loss(torch.tensor(1.0, requires_grad=True), torch.tensor(0.5))


def test_mse_corr_without_columns_raises():
    with pytest.raises(ValueError, match=r"pred"):
        mse_corr_loss(torch.empty(3, 0), torch.empty(3, 0))


@pytest.mark.parametrize("name", DICE)
def test_dice_on_an_empty_batch_is_zero_like_an_all_ignored_batch(name):
    logits = torch.empty((0, C) if name != "dice_binary" else (0, 5), requires_grad=True)
    target = torch.empty(logits.shape[:-1] if name == "dice_multiclass" else logits.shape)
    loss = call(name, logits, target.long() if name == "dice_multiclass" else target)
    assert loss.item() == 0


@pytest.mark.parametrize("name", ["dice_multiclass", "dice_multilabel"])
def test_dice_without_classes_raises(name):
    logits = torch.empty(4, 0)
    target = torch.full((4,), IGNORE) if name == "dice_multiclass" else torch.empty(4, 0)
    with pytest.raises(ValueError, match=r"logits|class"):
        call(name, logits, target)


@pytest.mark.parametrize("with_pad_mask", [True, False])
def test_rdrop_without_classes_raises(with_pad_mask):
    pad_mask = torch.zeros(2, dtype=torch.bool) if with_pad_mask else None
    with pytest.raises(ValueError, match=r"logits_a"):
        rdrop_kl(torch.empty(2, 0), torch.empty(2, 0), pad_mask=pad_mask)


# --------------------------------------------------------------------------------------------------
# target values


@pytest.mark.parametrize("bad", [C, -1, 10**6, IGNORE + 1])
@pytest.mark.parametrize("name", INTEGER_TARGETS)
def test_class_index_out_of_range_raises(name, bad):
    logits, target = valid_inputs(name)
    target = target.clone()
    target[0] = bad
    with pytest.raises(ValueError, match=rf"target contains {bad}, outside \[0, {C}\)"):
        call(name, logits, target)


@pytest.mark.parametrize("name", INTEGER_TARGETS)
def test_custom_ignore_index_makes_the_default_one_out_of_range(name):
    logits, target = valid_inputs(name)  # holds IGNORE
    with pytest.raises(ValueError, match=rf"target contains {IGNORE}.*ignore_index=-1"):
        call(name, logits, target, ignore_index=-1)
    custom = torch.where(target == IGNORE, -1, target)
    assert torch.equal(call(name, logits, custom, ignore_index=-1), call(name, logits, target))


@pytest.mark.parametrize(
    "bad", [2.0, -0.5, 1.0001, NAN, INF, float(IGNORE)], ids=["2", "-0.5", "1.0001", "nan", "inf", "ignore"]
)
@pytest.mark.parametrize("name", PROBABILITY_TARGETS)
def test_probability_target_outside_0_1_raises(name, bad):
    first, target = valid_inputs(name)
    target = target.clone()
    target.view(-1)[0] = bad
    if name in DICE and bad == IGNORE:  # dice takes ignore_index, and -100 is the default
        assert torch.isfinite(call(name, first, target))
        with pytest.raises(ValueError, match=rf"target contains {bad}.*or ignore_index=-1"):
            call(name, first, target, ignore_index=-1)
        return
    # the message shows the stored value: 1.0001 in float32 reads 1.00010001...
    with pytest.raises(ValueError, match=rf"^targets? contains {re.escape(str(bad))}.*; binary targets"):
        call(name, first, target)


@pytest.mark.parametrize("name", PROBABILITY_TARGETS)
def test_integer_probability_target_outside_0_1_raises(name):
    first, target = valid_inputs(name)
    target = target.clamp(0, 1).long()
    target.view(-1)[-1] = 2
    with pytest.raises(ValueError, match=r"targets? contains 2; binary targets must be in \[0, 1\]"):
        call(name, first, target)


@pytest.mark.parametrize("name", PROBABILITY_TARGETS)
def test_soft_labels_are_accepted(name):
    first, target = valid_inputs(name)
    soft = torch.where(target == IGNORE, target, target * 0.8 + 0.1)
    assert torch.isfinite(call(name, first, soft))


@pytest.mark.parametrize("name", DICE)
def test_dice_all_ignored_gives_zero(name):
    first, target = valid_inputs(name)
    loss = call(name, first, torch.full_like(target, IGNORE))
    assert loss.item() == 0
    loss.backward()
    assert torch.count_nonzero(first.grad) == 0


# --------------------------------------------------------------------------------------------------
# hyper-parameters: the functions and the module constructors

FOCAL_ALPHA_BAD = [
    -1.0,
    INF,
    NAN,
    True,
    [1.0, -1.0, 1.0],
    [1.0, NAN, 1.0],
    [1.0, INF, 1.0],
    [[1.0, 1.0, 1.0]],
    torch.ones(1, C),
    torch.tensor([True, False, True]),
    torch.tensor([1 + 0j, 1, 1]),
    torch.tensor([-1.0, 1.0, 1.0]),
]

HYPER_CASES = [
    *[("binary_focal", {"alpha": a}, "alpha") for a in (-0.1, 1.1, NAN, INF, True, "0.5", torch.tensor(0.5))],
    *[
        (n, {"gamma": g}, "gamma")
        for n in ("focal", "binary_focal")
        for g in (-1.0, INF, NAN, True, "2", None)
    ],
    *[("focal", {"alpha": a}, "alpha") for a in FOCAL_ALPHA_BAD],
    *[("dice_multiclass", {"mode": m}, "mode") for m in ("bogus", None, "Multiclass", "multi_class")],
    *[("dice_multiclass", {"smooth": s}, "smooth") for s in (-1.0, INF, NAN, True, None)],
    *[("dice_multilabel", {"self_adjusting": s}, "self_adjusting") for s in (-0.5, INF, NAN, True)],
    *[("dice_binary", {"square_denominator": f}, "square_denominator") for f in (1, 0, "yes", None)],
    *[("dice_multiclass", {"batch_dice": f}, "batch_dice") for f in (1, 0, "no")],
    *[("mse_corr", {"corr_weight": w}, "corr_weight") for w in (-1.0, INF, NAN, True, None)],
    *[("mse_corr", {"eps": e}, "eps") for e in (0, 0.0, -1e-8, INF, NAN, True)],
    *[(n, {"reduction": r}, "reduction") for n in WITH_REDUCTION for r in ("avg", "MEAN", None)],
    *[(n, {"ignore_index": i}, "ignore_index") for n in WITH_IGNORE_INDEX for i in (None, "x", 1.5, True)],
]


def _case_id(case):
    name, kwargs, _ = case
    ((key, value),) = kwargs.items()
    value = f"tensor{tuple(value.shape)}{value.dtype}" if isinstance(value, torch.Tensor) else repr(value)
    return f"{name}-{key}={value}"


@pytest.mark.parametrize(("name", "kwargs", "word"), HYPER_CASES, ids=[_case_id(c) for c in HYPER_CASES])
def test_function_rejects_bad_hyperparameter(name, kwargs, word):
    with pytest.raises(ValueError, match=rf"^{word} "):
        call(name, *valid_inputs(name), **kwargs)


@pytest.mark.parametrize(("name", "kwargs", "word"), HYPER_CASES, ids=[_case_id(c) for c in HYPER_CASES])
def test_module_constructor_rejects_bad_hyperparameter(name, kwargs, word):
    with pytest.raises(ValueError, match=rf"^{word} "):
        MODULES[name](**kwargs)


@pytest.mark.parametrize("alpha", ["abc", ["a", "b", "c"], [1.0, 1.0], [1.0] * (C + 1), []], ids=repr)
def test_focal_function_rejects_alpha_that_is_not_per_class_weights(alpha):
    logits, target = valid_inputs("focal")
    with pytest.raises(ValueError, match=r"^alpha "):
        focal_loss(logits, target, alpha=alpha)


@pytest.mark.parametrize("alpha", ["abc", object(), ["a", "b", "c"]], ids=["str", "object", "str_list"])
def test_focal_module_rejects_alpha_that_is_not_numbers(alpha):
    with pytest.raises(ValueError, match=r"^alpha "):
        FocalLoss(alpha=alpha)


def test_focal_module_alpha_of_the_wrong_length_raises_in_forward():
    module = FocalLoss(alpha=[1.0, 2.0])  # the class count is known only in forward
    with pytest.raises(ValueError, match=r"alpha needs one real weight per class \(3\), got shape \(2,\)"):
        module(*valid_inputs("focal"))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("binary_focal", {"alpha": None}),
        ("binary_focal", {"alpha": 0}),
        ("binary_focal", {"alpha": 1}),
        ("binary_focal", {"gamma": 0}),
        ("focal", {"alpha": 0.0}),
        ("focal", {"alpha": 3}),
        ("focal", {"alpha": (0, 1, 2)}),
        ("focal", {"alpha": torch.tensor([1, 2, 3])}),
        ("focal", {"alpha": torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)}),
        ("dice_multiclass", {"smooth": 0}),
        ("dice_binary", {"self_adjusting": 1, "square_denominator": True, "batch_dice": True}),
        ("mse_corr", {"corr_weight": 0, "eps": 1e-3}),
        ("focal", {"ignore_index": 0}),
        ("dice_multiclass", {"ignore_index": 0}),
    ],
    ids=repr,
)
def test_boundary_hyperparameters_are_accepted(name, kwargs):
    # the other side of the checks above: the ends of each range, ints for floats
    first, second = valid_inputs(name)
    if kwargs.get("ignore_index") == 0:
        second = torch.where(second == IGNORE, 0, second)
    assert torch.isfinite(call(name, first, second, **kwargs))
    assert isinstance(MODULES[name](**kwargs), nn.Module)


# --------------------------------------------------------------------------------------------------
# num_items_in_batch (the per-item objectives)

BAD_NUM_ITEMS = {
    "negative": -1,
    "negative_float": -0.5,
    "nan": NAN,
    "inf": INF,
    "bool": True,
    "str": "3",
    "negative_tensor": torch.tensor(-3),
    "nan_tensor": torch.tensor(NAN),
    "several": torch.tensor([2, 3]),
    "empty": torch.tensor([]),
}


@pytest.mark.parametrize("bad", list(BAD_NUM_ITEMS))
@pytest.mark.parametrize("name", WITH_NUM_ITEMS)
def test_bad_num_items_in_batch_raises(name, bad):
    with pytest.raises(ValueError, match=r"^num_items_in_batch must be"):
        call(name, *valid_inputs(name), num_items_in_batch=BAD_NUM_ITEMS[bad])


@pytest.mark.parametrize("name", WITH_NUM_ITEMS)
def test_num_items_in_batch_with_reduction_none_raises(name):
    with pytest.raises(ValueError, match=r"^num_items_in_batch .*reduction='none'"):
        call(name, *valid_inputs(name), reduction="none", num_items_in_batch=4)
    with pytest.raises(ValueError, match=r"^num_items_in_batch .*reduction='none'"):
        MODULES[name](reduction="none")(*valid_inputs(name), num_items_in_batch=4)


@pytest.mark.parametrize("n", [7, 7.0, torch.tensor(7), torch.tensor([7.0])], ids=repr)
@pytest.mark.parametrize("name", WITH_NUM_ITEMS)
def test_num_items_in_batch_divides_the_sum(name, n):
    inputs = valid_inputs(name)
    expected = call(name, *inputs, reduction="sum") / 7
    for reduction in ("mean", "sum"):
        torch.testing.assert_close(call(name, *inputs, reduction=reduction, num_items_in_batch=n), expected)


@pytest.mark.parametrize("name", WITH_NUM_ITEMS)
def test_num_items_in_batch_zero_is_not_a_division_by_zero(name):
    inputs = valid_inputs(name)
    torch.testing.assert_close(
        call(name, *inputs, num_items_in_batch=0), call(name, *inputs, reduction="sum")
    )


@pytest.mark.parametrize("name", [n for n in NAMES if n not in WITH_NUM_ITEMS])
def test_batch_level_objectives_take_no_num_items_in_batch(name):
    with pytest.raises(TypeError, match="num_items_in_batch"):  # a Python signature error, not validation
        call(name, *valid_inputs(name), num_items_in_batch=4)


# --------------------------------------------------------------------------------------------------
# R-Drop's pad_mask


@pytest.mark.parametrize(
    "mask",
    [torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.int32), torch.ones(2, 5)],
    ids=["int64_zeros", "int32_ones", "float_ones"],
)
def test_rdrop_attention_style_mask_is_rejected(mask):
    with pytest.raises(ValueError, match=r"^pad_mask must be a bool tensor.*attention_mask == 0"):
        rdrop_kl(*valid_inputs("rdrop"), pad_mask=mask)
    with pytest.raises(ValueError, match=r"attention_mask"):
        RDropLoss()(*valid_inputs("rdrop"), pad_mask=mask)


@pytest.mark.parametrize("mask", [[[True] * 5] * 2, 0, True], ids=["list", "int", "bool"])
def test_rdrop_pad_mask_that_is_not_a_tensor_is_rejected(mask):
    with pytest.raises(ValueError, match=r"^pad_mask must be a bool tensor"):
        rdrop_kl(*valid_inputs("rdrop"), pad_mask=mask)


def test_rdrop_pad_mask_excludes_the_masked_positions():
    logits_a, logits_b = valid_inputs("rdrop")
    pad_mask = torch.zeros(2, 5, dtype=torch.bool)
    pad_mask[1, 2:] = True
    per_position = rdrop_kl(logits_a, logits_b, reduction="none")
    masked = rdrop_kl(logits_a, logits_b, pad_mask=pad_mask, reduction="none")
    assert torch.equal(masked, torch.where(pad_mask, 0, per_position))
    torch.testing.assert_close(
        rdrop_kl(logits_a, logits_b, pad_mask=pad_mask), per_position[~pad_mask].mean()
    )
    fully_masked = rdrop_kl(logits_a, logits_b, pad_mask=torch.ones(2, 5, dtype=torch.bool))
    assert fully_masked.item() == 0


# --------------------------------------------------------------------------------------------------
# modules


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        (
            FocalLoss(gamma=1.5, alpha=0.3, ignore_index=-1, reduction="sum"),
            "FocalLoss(gamma=1.5, alpha=0.3, ignore_index=-1, reduction='sum')",
        ),
        (
            FocalLoss(alpha=[0.5, 1.0, 2.0]),
            "FocalLoss(gamma=2.0, alpha=(3 per-class weights), ignore_index=-100, reduction='mean')",
        ),
        (FocalLoss(), "FocalLoss(gamma=2.0, alpha=None, ignore_index=-100, reduction='mean')"),
        (
            BinaryFocalLoss(alpha=None, gamma=0.5, reduction="none"),
            "BinaryFocalLoss(alpha=None, gamma=0.5, reduction='none')",
        ),
        (
            DiceLoss(
                mode="multilabel",
                smooth=0.5,
                square_denominator=True,
                self_adjusting=1.0,
                batch_dice=True,
                ignore_index=-1,
                reduction="sum",
            ),
            "DiceLoss(mode='multilabel', smooth=0.5, square_denominator=True, self_adjusting=1.0, "
            "batch_dice=True, ignore_index=-1, reduction='sum')",
        ),
        (MSECorrLoss(corr_weight=0.5, eps=1e-6), "MSECorrLoss(corr_weight=0.5, eps=1e-06)"),
        (RDropLoss(reduction="sum"), "RDropLoss(reduction='sum')"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_repr_shows_the_hyperparameters(module, expected):
    assert repr(module) == expected


def test_focal_per_class_alpha_is_a_buffer():
    module = FocalLoss(alpha=[0.5, 1.0, 2.0])
    assert "alpha" in dict(module.named_buffers())
    assert list(module.state_dict()) == ["alpha"]
    assert module.alpha.dtype == torch.float32 and module.alpha.device.type == "cpu"
    assert torch.equal(module.alpha, torch.tensor([0.5, 1.0, 2.0]))
    assert list(module.parameters()) == []  # a buffer, not something the optimiser trains

    module.to(torch.float64)
    assert module.alpha.dtype == torch.float64
    module.to("meta")
    assert module.alpha.device.type == "meta" and module.alpha.dtype == torch.float64


def test_focal_alpha_buffer_survives_a_state_dict_round_trip():
    logits, target = valid_inputs("focal")
    source = FocalLoss(alpha=[0.5, 1.0, 2.0])
    restored = FocalLoss(alpha=[1.0, 1.0, 1.0])
    assert not torch.equal(restored(logits, target), source(logits, target))
    restored.load_state_dict(source.state_dict())
    assert torch.equal(restored.alpha, source.alpha)
    assert torch.equal(restored(logits, target), source(logits, target))


@pytest.mark.parametrize("alpha", [None, 0.5, 2])
def test_focal_scalar_alpha_is_not_a_buffer(alpha):
    module = FocalLoss(alpha=alpha)
    assert dict(module.named_buffers()) == {} and module.state_dict() == {}
    module.to(torch.float64)
    assert module.alpha == alpha and not isinstance(module.alpha, torch.Tensor)


def test_focal_module_moved_to_float64_matches_the_function():
    logits, target = valid_inputs("focal")
    logits = logits.detach().double()
    module = FocalLoss(alpha=[0.5, 1.0, 2.0]).to(torch.float64)
    loss = module(logits, target)
    assert loss.dtype == torch.float64
    assert torch.equal(loss, focal_loss(logits, target, alpha=[0.5, 1.0, 2.0]))


FORWARD_CASES = [
    ("focal", {"gamma": 1.0, "alpha": [0.5, 1.0, 2.0], "reduction": "sum"}, {"num_items_in_batch": 3}),
    ("focal", {"alpha": 0.25, "ignore_index": IGNORE, "reduction": "none"}, {}),
    ("binary_focal", {"alpha": 0.4, "gamma": 1.0}, {"num_items_in_batch": torch.tensor(5)}),
    ("binary_focal", {"alpha": None, "reduction": "none"}, {}),
    ("dice_multiclass", {"smooth": 0.5, "self_adjusting": 1.0, "reduction": "none"}, {}),
    ("dice_multilabel", {"square_denominator": True, "batch_dice": True}, {}),
    ("dice_binary", {"smooth": 0.0, "reduction": "sum"}, {}),
    ("mse_corr", {"corr_weight": 0.5, "eps": 1e-6}, {}),
    ("rdrop", {"reduction": "sum"}, {"num_items_in_batch": 4}),
    ("rdrop", {"reduction": "none"}, {"pad_mask": torch.eye(2, 5, dtype=torch.bool)}),
]


@pytest.mark.parametrize(("name", "hyper", "call_kwargs"), FORWARD_CASES, ids=lambda v: str(v)[:40])
def test_module_forward_equals_the_function(name, hyper, call_kwargs):
    first, second = valid_inputs(name)
    module_loss = MODULES[name](**hyper)(first, second, **call_kwargs)
    function_loss = call(name, first, second, **hyper, **call_kwargs)
    assert module_loss.shape == function_loss.shape
    assert torch.equal(module_loss, function_loss)


@pytest.mark.parametrize("name", NAMES)
def test_module_forward_validates_its_inputs(name):
    first, second = valid_inputs(name)
    with pytest.raises(ValueError, match=r"shape"):
        MODULES[name]()(first, second[..., :-1])


# --------------------------------------------------------------------------------------------------
# the registry


def registry_inputs(spec):
    """Labels for the spec's problem type, as a Hugging Face head would get them."""
    gen = torch.Generator().manual_seed(1)
    if spec.problem_type == "single_label_classification":
        return torch.randn(4, C, generator=gen, requires_grad=True), torch.tensor([0, 2, 1, 1])
    if spec.problem_type == "multi_label_classification":
        return torch.randn(4, C, generator=gen, requires_grad=True), torch.randint(
            2, (4, C), generator=gen
        ).float()
    return torch.randn(6, generator=gen, requires_grad=True), torch.randn(6, generator=gen)


SPECS = sorted(CLASSIFICATION_LOSSES)


@pytest.mark.parametrize("key", SPECS)
def test_registry_spec_is_consistent(key):
    spec = CLASSIFICATION_LOSSES[key]
    assert isinstance(spec, ClassificationLossSpec)
    assert spec.name == key
    assert spec.problem_type in PROBLEM_TYPES
    assert isinstance(spec.per_item, bool)
    module = spec.module(**spec.kwargs)
    assert isinstance(module, nn.Module) and type(module) is spec.module
    logits, labels = registry_inputs(spec)
    loss = spec.function(logits, labels, **spec.kwargs)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert torch.equal(module(logits, labels), loss)


def test_registry_covers_every_problem_type():
    assert {spec.problem_type for spec in CLASSIFICATION_LOSSES.values()} == set(PROBLEM_TYPES)


@pytest.mark.parametrize("key", SPECS)
def test_registry_per_item_matches_num_items_in_batch(key):
    spec = CLASSIFICATION_LOSSES[key]
    in_function = "num_items_in_batch" in inspect.signature(spec.function).parameters
    in_forward = "num_items_in_batch" in inspect.signature(spec.module.forward).parameters
    assert in_function == in_forward == spec.per_item
    if spec.per_item:
        logits, labels = registry_inputs(spec)
        total = spec.function(logits, labels, reduction="sum", **spec.kwargs)
        torch.testing.assert_close(
            spec.function(logits, labels, num_items_in_batch=5, **spec.kwargs), total / 5
        )
        torch.testing.assert_close(
            spec.module(**spec.kwargs)(logits, labels, num_items_in_batch=5), total / 5
        )


@pytest.mark.parametrize("key", SPECS)
def test_registry_kwargs_are_read_only(key):
    spec = CLASSIFICATION_LOSSES[key]
    assert isinstance(spec.kwargs, Mapping)
    before = dict(spec.kwargs)
    with pytest.raises(TypeError):
        spec.kwargs["mode"] = "binary"
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.kwargs = {}
    assert dict(CLASSIFICATION_LOSSES[key].kwargs) == before


def test_registry_dice_specs_fix_their_mode():
    # a classification head has one position per sample: the registry's dice sums over the batch
    assert dict(CLASSIFICATION_LOSSES["dice"].kwargs) == {"mode": "multiclass", "batch_dice": True}
    assert dict(CLASSIFICATION_LOSSES["multilabel_dice"].kwargs) == {"mode": "multilabel", "batch_dice": True}
    assert dict(CLASSIFICATION_LOSSES["focal"].kwargs) == {}


# --------------------------------------------------------------------------------------------------
# the shared checks and reduction


@pytest.mark.parametrize(
    ("check", "args", "kwargs", "match"),
    [
        (check_fraction, ("p", True), {"zero_ok": True, "one_ok": True}, r"^p must be a number in \[0, 1\]"),
        (check_fraction, ("p", 0.0), {"zero_ok": False, "one_ok": True}, r"^p must be a number in \(0, 1\]"),
        (check_fraction, ("p", 1), {"zero_ok": True, "one_ok": False}, r"^p must be a number in \[0, 1\)"),
        (check_non_negative, ("w", -1e-9), {}, r"^w must be a finite number >= 0"),
        (check_non_negative, ("w", 0), {"positive": True}, r"^w must be a finite number > 0"),
        (check_flag, ("f", 1), {}, r"^f must be True or False, got 1"),
        (check_num_items, (-1, "mean"), {}, r"^num_items_in_batch must be a finite non-negative number"),
        (check_num_items, (2, "none"), {}, r"^num_items_in_batch .*reduction='none'"),
    ],
    ids=[
        "fraction_bool",
        "fraction_zero",
        "fraction_one",
        "negative",
        "zero",
        "flag_int",
        "num_items",
        "none",
    ],
)
def test_shared_checks_name_the_value(check, args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        check(*args, **kwargs)


def test_shared_checks_accept_valid_values():
    check_fraction("p", 0, zero_ok=True, one_ok=False)
    check_non_negative("w", 0)
    check_flag("f", False)
    check_num_items(None, "none")
    check_num_items(torch.tensor(3.0), "sum")
    check_same_shape("a", torch.zeros(2), "b", torch.zeros(2, dtype=torch.bool))
    check_target_range(torch.tensor([0, 1, -100]), 2, -100)
    check_probability_targets(torch.tensor([0.0, 0.5, 1.0]))
    check_probability_targets(torch.tensor([0.0, -100.0]), ignore_index=-100)
    with pytest.raises(ValueError, match=r"target contains -100.0; binary targets must be in \[0, 1\]$"):
        check_probability_targets(torch.tensor([0.0, -100.0]))


def test_class_weights_checks_then_moves():
    like = torch.empty(0, dtype=torch.float64)
    assert class_weights(None, C, like) is None
    scalar = class_weights(2, C, like)
    assert scalar.shape == () and scalar.dtype == torch.float64 and scalar.item() == 2
    per_class = class_weights([1, 2, 3], C, like)
    assert per_class.dtype == torch.float64 and per_class.tolist() == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match=r"^alpha needs one real weight per class \(3\), got shape \(2,\)"):
        class_weights([1.0, 2.0], C, like)


def test_reduce_losses_weights():
    losses = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    valid = torch.tensor([[True, False, True], [False, False, True]])
    assert reduce_losses(losses, valid, "sum").item() == 10
    assert reduce_losses(losses, valid, "mean").item() == pytest.approx(10 / 3)
    assert reduce_losses(losses, None, "mean").item() == pytest.approx(21 / 6)
    assert reduce_losses(losses, valid, "mean", num_items_in_batch=4).item() == pytest.approx(2.5)
    assert reduce_losses(losses, valid, "sum", num_items_in_batch=0).item() == 10  # max(1, n)
    none = reduce_losses(losses, valid, "none")
    assert none.shape == losses.shape and torch.equal(none, torch.where(valid, losses, 0))


def test_reduce_losses_all_invalid_is_zero_with_zero_gradient():
    losses = torch.tensor([1.0, 2.0], requires_grad=True)
    valid = torch.zeros(2, dtype=torch.bool)
    for reduction in ("mean", "sum"):
        out = reduce_losses(losses, valid, reduction)
        assert out.item() == 0 and not math.isnan(out.item())
        (grad,) = torch.autograd.grad(out, losses)
        assert torch.count_nonzero(grad) == 0
