"""Token-level losses (logits form): values and gradients against the naive references in reference.py.

Shared semantics are parametrised over the registry ``tunekit.losses.registry.TOKEN_LOSSES``, so a newly
registered objective is exercised too; per-objective tests follow.
"""

from __future__ import annotations

import math

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
    target_shapes,
    twin_generator,
)
from reference import REFERENCES, ref_cross_entropy, ref_dece_loss, ref_smile_loss
from tunekit.losses import (
    CrossEntropyLoss,
    DeCELoss,
    SMILELoss,
    cross_entropy,
    dece_loss,
    linear_cross_entropy,
    linear_dece_loss,
    linear_smile_loss,
    smile_loss,
)
from tunekit.losses.registry import TOKEN_LOSSES

NAMES = sorted(TOKEN_LOSSES)
REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [torch.float32, torch.bfloat16]
SUBSETS = ["sequence", "random", "reverse"]


def sample(shape, vocab, *, dtype=torch.float32, seed=0, ignore_frac=0.3):
    """Logits (*shape, vocab) and targets of ``shape``; 2-D targets get masked prompts and an empty row."""
    logits = make_logits(shape, vocab, dtype=dtype, seed=seed)
    if len(shape) == 2:
        target = make_prompted_labels(*shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    else:
        target = make_target(shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    return logits, target


def check_against_reference(name, logits, target, *extra, reduction="mean", **kwargs):
    """Forward + backward through tunekit and the reference on the same values; compare both."""
    function = TOKEN_LOSSES[name].function
    reference = REFERENCES[name]
    dtype = logits.dtype
    ref_logits = leaf(logits, reference_dtype(dtype))
    ref_kwargs = twin_generator(kwargs)

    loss = function(logits, target, *extra, reduction=reduction, **kwargs)
    expected = reference(ref_logits, target, *extra, reduction=reduction, **ref_kwargs)
    assert_loss_close(loss, expected, dtype)

    if reduction == "none":  # a random upstream gradient per token
        grad_out = torch.randn(expected.shape, generator=generator(5), dtype=expected.dtype)
        loss.backward(grad_out.to(loss.dtype))
        expected.backward(grad_out)
    else:
        loss.backward()
        expected.backward()
    assert_grad_close(logits.grad, ref_logits.grad, dtype)


def with_generator(kwargs, seed=0):
    """Fresh, identically seeded generator for each call of a SMILE 'random' loss."""
    if kwargs.get("subset") == "random":
        return {**kwargs, "generator": generator(seed)}
    return kwargs


# --------------------------------------------------------------------------------------------------
# registry


def test_registry_lists_the_token_objectives():
    assert {"cross_entropy", "dece", "smile"} <= set(TOKEN_LOSSES)


@pytest.mark.parametrize(
    ("name", "function", "linear_function", "module", "extra_args"),
    [
        ("cross_entropy", cross_entropy, linear_cross_entropy, CrossEntropyLoss, ()),
        ("dece", dece_loss, linear_dece_loss, DeCELoss, (1,)),
        ("smile", smile_loss, linear_smile_loss, SMILELoss, ()),
    ],
)
def test_registry_entry_points_at_the_public_api(name, function, linear_function, module, extra_args):
    spec = TOKEN_LOSSES[name]
    assert spec.function is function
    assert spec.linear_function is linear_function
    assert spec.module is module
    assert tuple(spec.extra_args) == extra_args


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_objective_has_a_reference(name):
    assert name in REFERENCES, f"add a naive reference for {name!r} to tests/reference.py"


# --------------------------------------------------------------------------------------------------
# known values and cross-checks of the references themselves

SEED_004_LOGITS = [[4.0, 5.0, 10.0], [1.0, 5.0, 4.0], [1.0, 15.0, 4.0]]
SEED_004_TARGET = [2, 1, 1]


@pytest.mark.parametrize(
    ("label_smoothing", "expected"), [(0.0, 0.11191823333501816), (0.001, 0.11647378653287888)]
)
@pytest.mark.parametrize("implementation", [cross_entropy, ref_cross_entropy], ids=["tunekit", "reference"])
def test_cross_entropy_known_values_from_seed_004(implementation, label_smoothing, expected):
    logits = torch.tensor(SEED_004_LOGITS)
    target = torch.tensor(SEED_004_TARGET)
    loss = implementation(logits, target, label_smoothing=label_smoothing)
    assert abs(loss.item() - expected) < 1e-6


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_reference_cross_entropy_agrees_with_torch(label_smoothing, reduction):
    logits, target = sample((4, 9), 23, dtype=torch.float64)
    expected = F.cross_entropy(
        logits.transpose(1, 2), target, label_smoothing=label_smoothing, reduction=reduction
    )
    actual = ref_cross_entropy(logits, target, label_smoothing=label_smoothing, reduction=reduction)
    torch.testing.assert_close(actual, expected)


def _log_softmax_at(row, index, allowed=None):
    allowed = range(len(row)) if allowed is None else allowed
    return row[index] - math.log(sum(math.exp(row[j]) for j in allowed))


@pytest.mark.parametrize("implementation", [dece_loss, ref_dece_loss], ids=["tunekit", "reference"])
def test_dece_known_value_by_hand(implementation):
    rows = [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    labels = [0, 2]
    alpha, eps = 0.9**2, 0.1
    losses = []
    for row, label in zip(rows, labels, strict=True):
        p = [math.exp(_log_softmax_at(row, j)) for j in range(3)]
        t = [1 - eps if j == label else eps / 2 for j in range(3)]
        losses.append(-sum(t[j] * math.log(alpha * p[j] + (1 - alpha) * t[j]) for j in range(3)))
    loss = implementation(torch.tensor(rows), torch.tensor(labels), 2, alpha_base=0.9, label_smoothing=eps)
    assert loss.item() == pytest.approx(sum(losses) / 2, rel=1e-6)


SMILE_ROW = [
    [0.3, 1.2, -0.7, 2.0, 0.1],
    [1.5, -0.2, 0.4, 0.9, -1.1],
    [0.0, 0.8, 1.1, -0.5, 0.6],
    [2.2, 0.3, -0.4, 0.7, 1.0],
]


@pytest.mark.parametrize("implementation", [smile_loss, ref_smile_loss], ids=["tunekit", "reference"])
@pytest.mark.parametrize(
    ("subset", "first_token_mle", "allowed_at"),
    [
        # labels [-100, 1, 3, 1]: the sequence's ids are {1, 3}; its first supervised position is 1
        ("sequence", True, {1: None, 2: {1, 3}, 3: {1, 3}}),
        ("sequence", False, {1: {1, 3}, 2: {1, 3}, 3: {1, 3}}),
        ("reverse", True, {1: None, 2: {0, 2, 4, 3}, 3: {0, 2, 4, 1}}),
        ("reverse", False, {1: {0, 2, 4, 1}, 2: {0, 2, 4, 3}, 3: {0, 2, 4, 1}}),
    ],
)
def test_smile_known_value_by_hand(implementation, subset, first_token_mle, allowed_at):
    labels = [IGNORE, 1, 3, 1]
    expected = (
        -sum(_log_softmax_at(SMILE_ROW[i], labels[i], allowed) for i, allowed in allowed_at.items()) / 3
    )
    loss = implementation(
        torch.tensor([SMILE_ROW]), torch.tensor([labels]), subset=subset, first_token_mle=first_token_mle
    )
    assert loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("implementation", [smile_loss, ref_smile_loss], ids=["tunekit", "reference"])
def test_smile_keeps_vocabulary_id_zero_in_the_subset(implementation):
    # seed 002's BLIP code drops id 0 (the pad id) from the subset; tunekit must not
    logits = torch.tensor([SMILE_ROW[:3]])
    labels = torch.tensor([[0, 2, IGNORE]])
    expected = -(_log_softmax_at(SMILE_ROW[0], 0, {0, 2}) + _log_softmax_at(SMILE_ROW[1], 2, {0, 2})) / 2
    loss = implementation(logits, labels, first_token_mle=False)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_dece_without_decay_or_smoothing_is_cross_entropy():
    logits, target = sample((5, 8), 31)
    dece = dece_loss(logits, target, 3, alpha_base=1.0, label_smoothing=0.0)
    torch.testing.assert_close(dece, cross_entropy(logits, target))


@pytest.mark.parametrize("implementation", [dece_loss, ref_dece_loss], ids=["tunekit", "reference"])
def test_dece_without_decay_is_cross_entropy_smoothed_over_the_other_classes(implementation):
    # alpha = 1: -sum_j t_j log p_j with eps/(V-1) off the label == CE smoothed with eps * V / (V-1)
    vocab, eps = 31, 0.1
    logits, target = sample((5, 8), vocab)
    dece = implementation(logits, target, 2, alpha_base=1.0, label_smoothing=eps)
    expected = F.cross_entropy(logits.transpose(1, 2), target, label_smoothing=eps * vocab / (vocab - 1))
    torch.testing.assert_close(dece, expected)


@pytest.mark.parametrize("first_token_mle", [True, False])
def test_smile_sequence_covering_the_vocabulary_is_cross_entropy(first_token_mle):
    vocab = 6
    logits = make_logits((2, 9), vocab)
    labels = torch.arange(18).reshape(2, 9) % vocab  # each sequence holds every id
    labels[0, :2] = IGNORE
    loss = smile_loss(logits, labels, first_token_mle=first_token_mle)
    torch.testing.assert_close(loss, cross_entropy(logits, labels))


# --------------------------------------------------------------------------------------------------
# grid against the references


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize(("shape", "vocab"), [((), 127), ((37,), 127), ((3, 11), 1009)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cross_entropy_matches_reference(dtype, shape, vocab, label_smoothing, reduction):
    logits, target = sample(shape, vocab, dtype=dtype)
    check_against_reference(
        "cross_entropy", logits, target, reduction=reduction, label_smoothing=label_smoothing
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize(("shape", "vocab"), [((), 127), ((37,), 127), ((3, 11), 1009)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_dece_matches_reference(dtype, shape, vocab, label_smoothing, reduction):
    logits, target = sample(shape, vocab, dtype=dtype)
    check_against_reference("dece", logits, target, 1, reduction=reduction, label_smoothing=label_smoothing)


@pytest.mark.parametrize("alpha_base", [0.985, 0.5, 1.0])
@pytest.mark.parametrize("epoch", [1, 2, 10, 100])
def test_dece_epoch_schedule_matches_reference(epoch, alpha_base):
    logits, target = sample((4, 9), 127)
    check_against_reference("dece", logits, target, epoch, alpha_base=alpha_base)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize(("shape", "vocab"), [((3, 19), 127), ((4, 13), 7)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_smile_matches_reference(dtype, shape, vocab, subset, first_token_mle, reduction):
    # rows after the first start with a masked prompt; the last row has no supervised label at all
    logits, labels = sample(shape, vocab, dtype=dtype)
    kwargs = with_generator({"subset": subset, "first_token_mle": first_token_mle})  # num_random=10
    check_against_reference("smile", logits, labels, reduction=reduction, **kwargs)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_large_odd_shape_matches_reference(name, dtype):
    # 1269 rows of a prime vocabulary: several default-size chunks and a ragged last one
    logits, target = sample((3, 423), 1009, dtype=dtype)
    check_against_reference(name, logits, target, *TOKEN_LOSSES[name].extra_args)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_tiny_chunks_match_reference(name, reduction, tiny_chunks):
    vocab = 127
    tiny_chunks(vocab)
    logits, target = sample((5, 7), vocab)
    check_against_reference(name, logits, target, *TOKEN_LOSSES[name].extra_args, reduction=reduction)


@pytest.mark.parametrize("subset", SUBSETS)
def test_smile_subsets_with_tiny_chunks_match_reference(subset, tiny_chunks):
    vocab = 13
    tiny_chunks(vocab)
    logits, labels = sample((4, 11), vocab)
    kwargs = with_generator({"subset": subset, "num_random": 4})
    check_against_reference("smile", logits, labels, **kwargs)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("name", ["cross_entropy", "dece"])
def test_label_smoothing_with_tiny_chunks_matches_reference(name, label_smoothing, tiny_chunks):
    vocab = 127
    tiny_chunks(vocab)
    logits, target = sample((2, 9), vocab, dtype=torch.bfloat16)
    extra = TOKEN_LOSSES[name].extra_args
    check_against_reference(name, logits, target, *extra, label_smoothing=label_smoothing)


def test_dece_gradient_is_zero_through_the_clamp():
    # p < 1e-7 for the -30 logits: the clamp cuts their path, as autograd through the formula does
    logits = torch.tensor([[0.0, -30.0, 5.0, -30.0], [-30.0, 2.0, 1.0, 0.5]], requires_grad=True)
    target = torch.tensor([1, 0])
    check_against_reference("dece", logits, target, 1, reduction="sum")


@pytest.mark.parametrize("name", NAMES)
def test_custom_ignore_index_matches_reference(name):
    # pad id as ignore_index (seed 000's convention): labels equal to it are ignored
    logits, target = sample((3, 8), 17)
    target = target.masked_fill(target == IGNORE, 0)
    extra = TOKEN_LOSSES[name].extra_args
    check_against_reference(name, logits, target, *extra, ignore_index=0, reduction="none")


# --------------------------------------------------------------------------------------------------
# shared semantics, every registered objective


@pytest.mark.parametrize("name", NAMES)
def test_none_reduction_has_target_shape_and_zero_at_ignored(name):
    for shape in target_shapes(name):
        logits, target = sample(shape, 11)
        loss = TOKEN_LOSSES[name].function(logits, target, *TOKEN_LOSSES[name].extra_args, reduction="none")
        assert loss.shape == target.shape
        assert torch.all(loss[target == IGNORE] == 0)
        assert torch.all(loss[target != IGNORE] >= 0)


@pytest.mark.parametrize("name", NAMES)
def test_mean_is_sum_over_supervised_count(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    per_token = spec.function(logits, target, *spec.extra_args, reduction="none")
    total = spec.function(logits, target, *spec.extra_args, reduction="sum")
    mean = spec.function(logits, target, *spec.extra_args, reduction="mean")
    count = int((target != IGNORE).sum())
    torch.testing.assert_close(total, per_token.sum())
    torch.testing.assert_close(mean, per_token.sum() / count)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["int", "tensor"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_num_items_in_batch_divides_the_sum(name, reduction, as_tensor):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    num_items = torch.tensor(37) if as_tensor else 37
    loss = spec.function(logits, target, *spec.extra_args, reduction=reduction, num_items_in_batch=num_items)
    ref_logits = leaf(logits)
    expected = REFERENCES[name](ref_logits, target, *spec.extra_args, reduction="sum") / 37
    assert_loss_close(loss, expected, logits.dtype)
    loss.backward()
    expected.backward()
    assert_grad_close(logits.grad, ref_logits.grad, logits.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_num_items_in_batch_zero_counts_as_one(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    loss = spec.function(logits, target, *spec.extra_args, num_items_in_batch=0)
    torch.testing.assert_close(loss, spec.function(logits, target, *spec.extra_args, reduction="sum"))


@pytest.mark.parametrize("num_items_in_batch", [None, 0, 5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_gives_exact_zero_and_zero_grad(name, dtype, reduction, num_items_in_batch):
    if reduction == "none" and num_items_in_batch is not None:
        num_items_in_batch = None  # not allowed with "none"; covered in test_loss_validation
    spec = TOKEN_LOSSES[name]
    shape = target_shapes(name)[-1]
    logits = make_logits(shape, 11, dtype=dtype)
    target = torch.full(shape, IGNORE)
    loss = spec.function(
        logits, target, *spec.extra_args, reduction=reduction, num_items_in_batch=num_items_in_batch
    )
    assert loss.dtype == torch.float32
    assert loss.shape == (target.shape if reduction == "none" else ())
    assert torch.equal(loss.detach(), torch.zeros_like(loss))
    loss.sum().backward()
    assert logits.grad is not None
    assert logits.grad.dtype == dtype
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_computes_in_float32(name, dtype):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 53, dtype=dtype, ignore_frac=0.1)
    loss = spec.function(logits, target, *spec.extra_args, reduction="none")
    assert loss.dtype == torch.float32
    loss.sum().backward()
    assert logits.grad.dtype == dtype
    expected = REFERENCES[name](logits.detach().float(), target, *spec.extra_args, reduction="none")
    assert_loss_close(loss, expected, dtype)


@pytest.mark.parametrize("name", NAMES)
def test_float64_stays_float64(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11, dtype=torch.float64)
    loss = spec.function(logits, target, *spec.extra_args)
    assert loss.dtype == torch.float64
    loss.backward()
    assert logits.grad.dtype == torch.float64
    expected = REFERENCES[name](logits.detach(), target, *spec.extra_args)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_inputs_are_not_modified(name, reduction):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11, dtype=torch.bfloat16)
    logits_before, target_before = logits.detach().clone(), target.clone()
    loss = spec.function(logits, target, *spec.extra_args, reduction=reduction)
    loss.sum().backward()
    assert torch.equal(logits.detach(), logits_before)
    assert torch.equal(target, target_before)


@pytest.mark.parametrize("name", NAMES)
def test_no_grad_gives_a_result_without_grad_fn(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    with torch.no_grad():
        loss = spec.function(logits, target, *spec.extra_args)
    assert loss.grad_fn is None
    assert not loss.requires_grad
    torch.testing.assert_close(loss, spec.function(logits, target, *spec.extra_args).detach())


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_logits_without_grad_give_a_result_without_grad_fn(name, reduction):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    logits = logits.detach()
    loss = spec.function(logits, target, *spec.extra_args, reduction=reduction)
    assert loss.grad_fn is None
    assert not loss.requires_grad


@pytest.mark.parametrize("name", NAMES)
def test_none_reduction_sum_backward_matches_reference(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 29)
    ref_logits = leaf(logits)
    spec.function(logits, target, *spec.extra_args, reduction="none").sum().backward()
    REFERENCES[name](ref_logits, target, *spec.extra_args, reduction="none").sum().backward()
    assert_grad_close(logits.grad, ref_logits.grad, logits.dtype)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("name", NAMES)
def test_scaled_scalar_loss_backward_matches_reference(name, reduction):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 29)
    ref_logits = leaf(logits)
    (spec.function(logits, target, *spec.extra_args, reduction=reduction) * 3.7).backward()
    (REFERENCES[name](ref_logits, target, *spec.extra_args, reduction=reduction) * 3.7).backward()
    assert_grad_close(logits.grad, ref_logits.grad, logits.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_non_contiguous_shifted_logits_match_reference(name):
    # the causal-LM shift: logits[:, :-1] and labels[:, 1:] are views, not contiguous
    logits, labels = sample((3, 10), 23)
    shifted_logits, shifted_labels = logits[:, :-1, :], labels[:, 1:]
    assert not shifted_logits.is_contiguous()
    ref_logits = leaf(logits)
    extra = TOKEN_LOSSES[name].extra_args
    loss = TOKEN_LOSSES[name].function(shifted_logits, shifted_labels, *extra)
    expected = REFERENCES[name](ref_logits[:, :-1, :], shifted_labels, *extra)
    assert_loss_close(loss, expected, logits.dtype)
    loss.backward()
    expected.backward()
    assert_grad_close(logits.grad, ref_logits.grad, logits.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_large_logits_stay_finite_and_match_reference(name):
    logits, target = sample(target_shapes(name)[-1], 29)
    logits = leaf(logits * 500.0)  # softmax saturates: p is 0 or 1 in float32 almost everywhere
    check_against_reference(name, logits, target, *TOKEN_LOSSES[name].extra_args, reduction="sum")
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", NAMES)
def test_gradient_accumulation_with_num_items_equals_the_whole_batch_mean(name):
    # the Hugging Face convention: micro-batches divide their sums by the global batch's token count
    spec = TOKEN_LOSSES[name]
    logits, target = sample((4, 9), 19)
    num_items = int((target != IGNORE).sum())
    whole = spec.function(logits, target, *spec.extra_args)
    parts = [
        spec.function(logits[i : i + 2], target[i : i + 2], *spec.extra_args, num_items_in_batch=num_items)
        for i in (0, 2)
    ]
    torch.testing.assert_close(parts[0] + parts[1], whole)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_logits_form(name, reduction):
    spec = TOKEN_LOSSES[name]
    logits = make_logits((2, 3), 7, dtype=torch.float64)
    target = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    # the full Jacobian for the per-token losses; a random projection of it (fast mode) for the reductions
    assert torch.autograd.gradcheck(
        lambda z: spec.function(z, target, *spec.extra_args, reduction=reduction),
        (logits,),
        fast_mode=reduction != "none",
    )


@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
def test_gradcheck_smile_subsets(subset, first_token_mle):
    logits = make_logits((2, 3), 7, dtype=torch.float64)
    labels = make_prompted_labels(2, 3, 7, ignore_frac=0.2)
    kwargs = {"subset": subset, "first_token_mle": first_token_mle, "num_random": 2, "reduction": "none"}
    assert torch.autograd.gradcheck(
        lambda z: smile_loss(z, labels, **with_generator(kwargs)), (logits,), fast_mode=True
    )


@pytest.mark.parametrize("name", NAMES)
def test_module_with_defaults_matches_function(name):
    spec = TOKEN_LOSSES[name]
    logits, target = sample(target_shapes(name)[-1], 11)
    module = spec.module()
    assert isinstance(module, torch.nn.Module)
    expected = spec.function(logits, target, *spec.extra_args)
    torch.testing.assert_close(module(logits, target), expected)
    total = spec.function(logits, target, *spec.extra_args, reduction="sum")
    torch.testing.assert_close(module(logits, target, num_items_in_batch=9), total / 9)


# --------------------------------------------------------------------------------------------------
# SMILE: the random subset's draw


def test_smile_random_draws_once_from_the_generator():
    logits, labels = sample((3, 7), 50)
    used, expected = generator(3), generator(3)
    smile_loss(logits, labels, subset="random", num_random=4, generator=used)
    torch.randint(50, (3, 7, 4), generator=expected)
    assert torch.equal(used.get_state(), expected.get_state())


def test_smile_random_without_generator_uses_the_global_rng():
    logits, labels = sample((3, 7), 50)
    torch.manual_seed(11)
    loss = smile_loss(logits, labels, subset="random", num_random=4)
    torch.manual_seed(11)
    expected = ref_smile_loss(logits.detach(), labels, subset="random", num_random=4)
    assert_loss_close(loss, expected, logits.dtype)


def test_smile_random_depends_on_the_draw():
    logits, labels = sample((3, 7), 50)
    first = smile_loss(logits, labels, subset="random", num_random=4, generator=generator(0))
    second = smile_loss(logits, labels, subset="random", num_random=4, generator=generator(1))
    assert not torch.allclose(first, second)


# --------------------------------------------------------------------------------------------------
# modules


def test_cross_entropy_module_passes_its_hyperparameters():
    logits, target = sample((3, 8), 17)
    target = target.masked_fill(target == IGNORE, 4)
    module = CrossEntropyLoss(label_smoothing=0.2, ignore_index=4, reduction="sum")
    expected = ref_cross_entropy(
        logits.detach(), target, label_smoothing=0.2, ignore_index=4, reduction="sum"
    )
    assert_loss_close(module(logits, target), expected, logits.dtype)
    assert_loss_close(module(logits, target, num_items_in_batch=5), expected / 5, logits.dtype)


def test_dece_module_epoch_defaults_to_one_and_set_epoch_changes_it():
    logits, target = sample((3, 8), 17)
    module = DeCELoss(alpha_base=0.9, label_smoothing=0.1, reduction="sum")
    assert module.epoch == 1
    kwargs = {"alpha_base": 0.9, "label_smoothing": 0.1, "reduction": "sum"}
    assert_loss_close(
        module(logits, target), ref_dece_loss(logits.detach(), target, 1, **kwargs), torch.float32
    )
    module.set_epoch(4)
    assert module.epoch == 4
    assert_loss_close(
        module(logits, target), ref_dece_loss(logits.detach(), target, 4, **kwargs), torch.float32
    )


def test_dece_module_forward_leaves_its_state_alone():
    logits, target = sample((3, 8), 17)
    module = DeCELoss()
    module.set_epoch(3)
    first = module(logits, target)
    second = module(logits, target)
    assert module.epoch == 3
    torch.testing.assert_close(first, second)


def test_dece_module_epoch_survives_state_dict():
    logits, target = sample((3, 8), 17)
    saved = DeCELoss(alpha_base=0.9)
    saved.set_epoch(7)
    restored = DeCELoss(alpha_base=0.9)
    restored.load_state_dict(saved.state_dict())
    assert int(restored.epoch) == 7
    torch.testing.assert_close(restored(logits, target), dece_loss(logits, target, 7, alpha_base=0.9))


@pytest.mark.parametrize("subset", SUBSETS)
def test_smile_module_passes_its_hyperparameters(subset):
    logits, labels = sample((3, 9), 13)
    kwargs = {"subset": subset, "num_random": 2, "first_token_mle": False, "reduction": "sum"}
    module = SMILELoss(**kwargs)
    loss = module(logits, labels, generator=generator(4))
    expected = ref_smile_loss(logits.detach(), labels, generator=generator(4), **kwargs)
    assert_loss_close(loss, expected, logits.dtype)
    loss = module(logits, labels, num_items_in_batch=3, generator=generator(4))
    assert_loss_close(loss, expected / 3, logits.dtype)


# --------------------------------------------------------------------------------------------------
# mixed precision with a loss scale, inputs changed before backward, a vanishing DeCE alpha


@pytest.mark.parametrize("form", ["logits", "fused"])
@pytest.mark.parametrize("name", NAMES)
def test_fp16_gradients_survive_a_grad_scaler_loss_scale(name, form):
    # GradScaler multiplies the loss by 65536 (inf in fp16): a gradient scaled in fp16 would overflow, and
    # one pre-divided by the token count would underflow to 0 before the scale reaches it
    scale = 65536.0
    shape = target_shapes(name)[-1]
    target = make_prompted_labels(*shape, 53) if len(shape) == 2 else make_target(shape, 53)
    spec = TOKEN_LOSSES[name]
    if form == "logits":
        inputs = (make_logits(shape, 53, dtype=torch.float16) * 4).detach().requires_grad_()
        loss = spec.function(inputs, target, *spec.extra_args)
        reference_inputs = leaf(inputs, torch.float32)
        expected = REFERENCES[name](reference_inputs, target, *spec.extra_args)
    else:
        gen = generator(3)
        inputs = torch.randn(*shape, 16, generator=gen).half().requires_grad_()
        weight = torch.randn(53, 16, generator=gen).half().requires_grad_()
        loss = spec.linear_function(inputs, weight, target, *spec.extra_args)
        reference_inputs, reference_weight = leaf(inputs, torch.float32), leaf(weight, torch.float32)
        logits = (reference_inputs @ reference_weight.T).half().float()  # the fp16 matmul, rounded
        expected = REFERENCES[name](logits, target, *spec.extra_args)
    (loss * scale).backward()
    (expected * scale).backward()
    assert inputs.grad.dtype == torch.float16
    assert torch.isfinite(inputs.grad).all()
    expected_grad = reference_inputs.grad.half().float()  # what an exact gradient rounds to in fp16
    torch.testing.assert_close(inputs.grad.float(), expected_grad, rtol=2e-2, atol=2e-2 * scale / 1000)


@pytest.mark.parametrize("name", NAMES)
def test_inputs_changed_in_place_before_backward_are_reported(name):
    # reduction="none" computes the gradient in backward, from the inputs: it must not read changed ones
    spec = TOKEN_LOSSES[name]
    shape = target_shapes(name)[-1]
    target = make_prompted_labels(*shape, 29)
    logits = make_logits(shape, 29).requires_grad_()
    loss = spec.function(logits, target, *spec.extra_args, reduction="none")
    with torch.no_grad():
        logits.mul_(3.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.sum().backward()


@pytest.mark.parametrize("alpha_base, epoch", [(0.01, 200), (0.5, 2000)])
def test_dece_with_a_vanishing_alpha_has_finite_zero_gradient(alpha_base, epoch):
    # alpha = alpha_base ** epoch underflows to (nearly) 0: q is the smoothed target and nothing is learnt
    logits = make_logits((6,), 17).requires_grad_()
    target = torch.arange(6) % 17
    loss = dece_loss(logits, target, epoch, alpha_base=alpha_base)
    loss.backward()
    expected = ref_dece_loss(logits.detach(), target, epoch, alpha_base=alpha_base)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().max() < 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_engine_as_on_an_accelerator_matches_reference(name, monkeypatch, tiny_chunks):
    """Off CPU the PyTorch engine never reads row indices on the host (no runs read as views, ignored rows
    zeroed without finding them): the same values and gradients, over several chunks."""
    from tunekit.losses import _engine

    monkeypatch.setattr(_engine, "reads_rows_on_host", lambda device: False)
    tiny_chunks(127)
    for kwargs in ({}, {"subset": "random"}, {"subset": "reverse"}) if name == "smile" else ({},):
        logits, target = sample((3, 11), 127)
        check_against_reference(
            name, logits, target, *TOKEN_LOSSES[name].extra_args, **with_generator(kwargs)
        )
