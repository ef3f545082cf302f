"""Bad input to the token losses raises ValueError naming the problem, in every form.

Each case is checked for the logits form and the fused-linear form of every registered objective (the
shared problems), or of the objectives the hyper-parameter belongs to; then the module constructors.
"""

from __future__ import annotations

import pytest
import torch

from conftest import IGNORE, generator, make_prompted_labels, target_shapes
from tunekit.losses import (
    BinaryFocalLoss,
    CrossEntropyLoss,
    DeCELoss,
    DiceLoss,
    FocalLoss,
    GCELoss,
    MSECorrLoss,
    RDropLoss,
    SMILELoss,
)
from tunekit.losses.registry import TOKEN_LOSSES

NAMES = sorted(TOKEN_LOSSES)
FORMS = ["logits", "fused"]
VOCAB, HIDDEN = 11, 8


def valid_inputs(name, form):
    """A valid (input, weight-or-None, target) triple for the objective and form."""
    shape = target_shapes(name)[-1]
    gen = generator(0)
    target = (
        make_prompted_labels(*shape, VOCAB) if len(shape) == 2 else torch.randint(VOCAB, shape, generator=gen)
    )
    if form == "logits":
        return torch.randn(*shape, VOCAB, generator=gen, requires_grad=True), None, target
    hidden = torch.randn(*shape, HIDDEN, generator=gen, requires_grad=True)
    return hidden, torch.randn(VOCAB, HIDDEN, generator=gen, requires_grad=True), target


def call(name, form, inputs, weight, target, *extra, **kwargs):
    """Call the objective's logits or fused form; ``extra`` defaults to the registry's extra_args."""
    spec = TOKEN_LOSSES[name]
    extra = extra or spec.extra_args
    if form == "logits":
        return spec.function(inputs, target, *extra, **kwargs)
    return spec.linear_function(inputs, weight, target, *extra, **kwargs)


def test_valid_inputs_are_accepted():
    # guards the cases below: each of them differs from a call that works in one respect only
    for name in NAMES:
        for form in FORMS:
            loss = call(name, form, *valid_inputs(name, form))
            assert torch.isfinite(loss)


# --------------------------------------------------------------------------------------------------
# problems every objective shares


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_mismatched_target_shape_raises(name, form):
    inputs, weight, target = valid_inputs(name, form)
    with pytest.raises(ValueError, match=r"(?i)shape"):
        call(name, form, inputs, weight, target[..., :-1])


@pytest.mark.parametrize("bad", [VOCAB, -1, 10**6])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_target_outside_vocabulary_raises(name, form, bad):
    inputs, weight, target = valid_inputs(name, form)
    target = target.clone()
    target.view(-1)[0] = bad
    with pytest.raises(ValueError, match=r"(?i)range|outside|vocab"):
        call(name, form, inputs, weight, target)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_default_ignore_index_is_out_of_range_with_a_custom_ignore_index(name, form):
    inputs, weight, target = valid_inputs(name, form)
    target = target.clone()
    target.view(-1)[0] = IGNORE
    with pytest.raises(ValueError, match=r"(?i)range|outside|vocab"):
        call(name, form, inputs, weight, target, ignore_index=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_float_target_raises(name, form):
    inputs, weight, target = valid_inputs(name, form)
    with pytest.raises(ValueError, match=r"(?i)integer|dtype|long"):
        call(name, form, inputs, weight, target.float())


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_integer_logits_raise(name, form):
    inputs, weight, target = valid_inputs(name, form)
    inputs = inputs.detach().round().long()
    weight = weight.detach().round().long() if weight is not None else None
    with pytest.raises(ValueError, match=r"(?i)float|dtype"):
        call(name, form, inputs, weight, target)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_unknown_reduction_raises(name, form):
    with pytest.raises(ValueError, match=r"(?i)reduction"):
        call(name, form, *valid_inputs(name, form), reduction="avg")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_num_items_in_batch_with_reduction_none_raises(name, form):
    with pytest.raises(ValueError, match=r"(?i)num_items_in_batch|none"):
        call(name, form, *valid_inputs(name, form), reduction="none", num_items_in_batch=4)


@pytest.mark.parametrize("num_items_in_batch", [-1, torch.tensor(-3)], ids=["int", "tensor"])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_negative_num_items_in_batch_raises(name, form, num_items_in_batch):
    with pytest.raises(ValueError, match=r"(?i)num_items_in_batch|negative"):
        call(name, form, *valid_inputs(name, form), num_items_in_batch=num_items_in_batch)


# --------------------------------------------------------------------------------------------------
# fused form: the weight and bias


@pytest.mark.parametrize("name", NAMES)
def test_fused_weight_of_the_wrong_hidden_size_raises(name):
    hidden, weight, target = valid_inputs(name, "fused")
    with pytest.raises(ValueError, match=r"(?i)shape|hidden|weight"):
        call(name, "fused", hidden, weight[:, :-1], target)


@pytest.mark.parametrize("name", NAMES)
def test_fused_weight_not_2d_raises(name):
    hidden, weight, target = valid_inputs(name, "fused")
    with pytest.raises(ValueError, match=r"(?i)shape|weight|2-?d|dim"):
        call(name, "fused", hidden, weight.unsqueeze(0), target)


@pytest.mark.parametrize("name", NAMES)
def test_fused_bias_of_the_wrong_size_raises(name):
    hidden, weight, target = valid_inputs(name, "fused")
    with pytest.raises(ValueError, match=r"(?i)shape|bias"):
        call(name, "fused", hidden, weight, target, bias=torch.zeros(VOCAB + 1))


# --------------------------------------------------------------------------------------------------
# hyper-parameters of the functions


@pytest.mark.parametrize("label_smoothing", [-0.1, 1.0, 1.5])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["cross_entropy", "dece"])
def test_label_smoothing_outside_0_1_raises(name, form, label_smoothing):
    with pytest.raises(ValueError, match=r"(?i)smoothing"):
        call(name, form, *valid_inputs(name, form), label_smoothing=label_smoothing)


@pytest.mark.parametrize("epoch", [0, -1])
@pytest.mark.parametrize("form", FORMS)
def test_dece_epoch_below_one_raises(form, epoch):
    with pytest.raises(ValueError, match=r"(?i)epoch"):
        call("dece", form, *valid_inputs("dece", form), epoch)


@pytest.mark.parametrize("alpha_base", [0.0, -0.5, 1.5])
@pytest.mark.parametrize("form", FORMS)
def test_dece_alpha_base_outside_0_1_raises(form, alpha_base):
    with pytest.raises(ValueError, match=r"(?i)alpha"):
        call("dece", form, *valid_inputs("dece", form), alpha_base=alpha_base)


@pytest.mark.parametrize("form", FORMS)
def test_smile_unknown_subset_raises(form):
    with pytest.raises(ValueError, match=r"(?i)subset"):
        call("smile", form, *valid_inputs("smile", form), subset="all")


@pytest.mark.parametrize("form", FORMS)
def test_smile_negative_num_random_raises(form):
    with pytest.raises(ValueError, match=r"(?i)num_random"):
        call("smile", form, *valid_inputs("smile", form), subset="random", num_random=-1)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("leading", [(), (7,), (2, 3, 7)], ids=["0d", "1d", "3d"])
def test_smile_needs_batch_by_sequence_labels(form, leading):
    width = VOCAB if form == "logits" else HIDDEN
    inputs = torch.randn(*leading, width, requires_grad=True)
    weight = torch.randn(VOCAB, HIDDEN) if form == "fused" else None
    labels = torch.randint(VOCAB, leading)
    with pytest.raises(ValueError, match=r"(?i)3-?d|2-?d|dim|shape|\(B, N"):
        call("smile", form, inputs, weight, labels)


# --------------------------------------------------------------------------------------------------
# modules


@pytest.mark.parametrize(
    ("module", "kwargs", "word"),
    [
        (CrossEntropyLoss, {"label_smoothing": -0.1}, "smoothing"),
        (CrossEntropyLoss, {"label_smoothing": 1.0}, "smoothing"),
        (CrossEntropyLoss, {"reduction": "avg"}, "reduction"),
        (DeCELoss, {"label_smoothing": 1.0}, "smoothing"),
        (DeCELoss, {"alpha_base": 0.0}, "alpha"),
        (DeCELoss, {"alpha_base": 1.5}, "alpha"),
        (DeCELoss, {"reduction": "avg"}, "reduction"),
        (SMILELoss, {"subset": "all"}, "subset"),
        (SMILELoss, {"num_random": -1}, "num_random"),
        (SMILELoss, {"reduction": "avg"}, "reduction"),
    ],
)
def test_module_constructor_rejects_bad_hyperparameters(module, kwargs, word):
    with pytest.raises(ValueError, match=rf"(?i){word}"):
        module(**kwargs)


# every module, with a valid value for its first option: FocalLoss(0.25, 2.0) would otherwise set gamma=0.25
POSITIONAL_OPTIONS = [
    (CrossEntropyLoss, (0.1,)),
    (DeCELoss, (0.9,)),
    (GCELoss, (0.5,)),
    (SMILELoss, ("random",)),
    (FocalLoss, (0.25, 2.0)),
    (BinaryFocalLoss, (0.25,)),
    (DiceLoss, ("binary",)),
    (MSECorrLoss, (1.0,)),
    (RDropLoss, ("sum",)),
]


@pytest.mark.parametrize(
    ("module", "args"), POSITIONAL_OPTIONS, ids=[m.__name__ for m, _ in POSITIONAL_OPTIONS]
)
def test_module_options_are_keyword_only(module, args):
    with pytest.raises(TypeError, match="positional"):
        module(*args)


def test_smile_target_is_passed_as_target():
    inputs, _, target = valid_inputs("smile", "logits")
    expected = TOKEN_LOSSES["smile"].function(inputs, target)
    assert torch.equal(TOKEN_LOSSES["smile"].function(inputs, target=target), expected)
    assert torch.equal(SMILELoss()(inputs, target=target), expected)
    hidden, weight, target = valid_inputs("smile", "fused")
    expected = TOKEN_LOSSES["smile"].linear_function(hidden, weight, target)
    assert torch.equal(TOKEN_LOSSES["smile"].linear_function(hidden, weight, target=target), expected)


@pytest.mark.parametrize("epoch", [0, -1])
def test_dece_module_rejects_epoch_below_one(epoch):
    logits, _, target = valid_inputs("dece", "logits")
    module = DeCELoss()
    with pytest.raises(ValueError, match=r"(?i)epoch"):  # when set, or at the latest in forward
        module.set_epoch(epoch)
        module(logits, target)


@pytest.mark.parametrize("name", NAMES)
def test_module_forward_rejects_num_items_with_reduction_none(name):
    logits, _, target = valid_inputs(name, "logits")
    with pytest.raises(ValueError, match=r"(?i)num_items_in_batch|none"):
        TOKEN_LOSSES[name].module(reduction="none")(logits, target, num_items_in_batch=3)


# --------------------------------------------------------------------------------------------------
# values that are the right type but meaningless, or the wrong type altogether


@pytest.mark.parametrize("bad", [None, "x", 1.5, True])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", NAMES)
def test_non_integer_ignore_index_raises(name, form, bad):
    with pytest.raises(ValueError, match="ignore_index"):
        call(name, form, *valid_inputs(name, form), ignore_index=bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), torch.tensor(float("nan"))])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_num_items_in_batch_raises(name, bad):
    with pytest.raises(ValueError, match="num_items_in_batch"):
        call(name, "logits", *valid_inputs(name, "logits"), num_items_in_batch=bad)


@pytest.mark.parametrize("name", NAMES)
def test_empty_vocabulary_raises(name):
    _, _, target = valid_inputs(name, "logits")
    empty = torch.empty(*target.shape, 0, requires_grad=True)
    with pytest.raises(ValueError, match="classes"):
        call(name, "logits", empty, None, torch.full_like(target, IGNORE))


def test_dece_needs_two_classes_in_both_forms():
    target = torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TOKEN_LOSSES["dece"].function(torch.randn(3, 1), target, 1)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TOKEN_LOSSES["dece"].linear_function(torch.randn(3, 4), torch.randn(1, 4), target, 1)


@pytest.mark.parametrize("epoch", [float("inf"), float("nan")])
def test_dece_non_finite_epoch_raises(epoch):
    inputs, _, target = valid_inputs("dece", "logits")
    with pytest.raises(ValueError, match="epoch"):
        TOKEN_LOSSES["dece"].function(inputs, target, epoch)


@pytest.mark.parametrize("name", NAMES)
def test_fused_bias_of_another_dtype_raises(name):
    hidden, weight, target = valid_inputs(name, "fused")
    with pytest.raises(ValueError, match="bias"):
        call(name, "fused", hidden, weight, target, bias=torch.zeros(VOCAB, dtype=torch.float64))


def test_smile_generator_of_the_wrong_type_raises():
    inputs, _, target = valid_inputs("smile", "logits")
    with pytest.raises(ValueError, match="generator"):
        TOKEN_LOSSES["smile"].function(inputs, target, subset="random", generator=1)


@pytest.mark.parametrize("bad", ["no", 0, None])
def test_smile_first_token_mle_must_be_a_flag(bad):
    inputs, _, target = valid_inputs("smile", "logits")
    with pytest.raises(ValueError, match="first_token_mle"):
        TOKEN_LOSSES["smile"].function(inputs, target, first_token_mle=bad)
    with pytest.raises(ValueError, match="first_token_mle"):
        SMILELoss(first_token_mle=bad)
