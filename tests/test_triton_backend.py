"""The Triton backend (``TUNEKIT_BACKEND=triton``): every token objective, logits and fused-linear forms,
against the naive references of reference.py, values and gradients.

Without a GPU the kernels run in Triton's interpreter on CPU tensors (conftest sets ``TRITON_INTERPRET=1``);
on a machine with CUDA the same tests run the compiled kernels on the GPU. Every test here checks that the
Triton engine did run (the `kernel_calls` fixture), so a silent fall back to the PyTorch engine fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import (
    IGNORE,
    assert_grad_close,
    assert_loss_close,
    generator,
    leaf,
    make_prompted_labels,
    make_target,
    reference_dtype,
    twin_generator,
)
from reference import REFERENCES, ref_token_statistics
from tunekit.losses import _checks, _kernel_engine, cross_entropy, dece_loss, linear_cross_entropy, smile
from tunekit.losses._backend import token_backend
from tunekit.losses.registry import TOKEN_LOSSES
from tunekit.losses.statistics import recording_token_statistics

pytest.importorskip("triton", reason="the Triton backend needs triton (pip install 'tunekit[triton]')")

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
NAMES = sorted(TOKEN_LOSSES)
SUBSETS = ["sequence", "random", "reverse"]
HIDDEN = 16
# fp16 logits take the deferred path (the gradient computed in backward, under the loss scale)
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
_FUSED_LOSS_RTOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}
_FUSED_GRAD_RTOL = {torch.float32: 5e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.fixture(autouse=True)
def kernel_calls(monkeypatch):
    """Force the Triton backend and record each run of its engine; a test that ran none fails."""
    monkeypatch.setenv("TUNEKIT_BACKEND", "triton")
    calls = []
    run = _kernel_engine.KernelTokenLossJob.run

    def recording(job, *args, **kwargs):
        calls.append(job.math.kind)
        return run(job, *args, **kwargs)

    monkeypatch.setattr(_kernel_engine.KernelTokenLossJob, "run", recording)
    yield calls
    assert calls, "the Triton engine never ran: the call fell back to the PyTorch engine"


def on_device(tensor):
    return tensor.detach().to(DEVICE).requires_grad_(tensor.requires_grad)


def sample(shape, vocab, *, dtype=torch.float32, seed=0, ignore_frac=0.3):
    logits = torch.randn(*shape, vocab, generator=generator(seed), dtype=torch.float64) * 2
    if len(shape) == 2:
        target = make_prompted_labels(*shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    else:
        target = make_target(shape, vocab, seed=seed + 1, ignore_frac=ignore_frac)
    return logits.to(dtype).to(DEVICE).requires_grad_(True), target.to(DEVICE)


def fused_sample(shape, vocab, *, dtype=torch.float32, seed=0, bias=True):
    gen = generator(seed)
    hidden = torch.randn(*shape, HIDDEN, generator=gen, dtype=torch.float64)
    weight = torch.randn(vocab, HIDDEN, generator=gen, dtype=torch.float64) * (2.0 / HIDDEN**0.5)
    bias_ = torch.randn(vocab, generator=gen, dtype=torch.float64) * 0.5 if bias else None
    if len(shape) == 2:
        target = make_prompted_labels(*shape, vocab, seed=seed + 1)
    else:
        target = make_target(shape, vocab, seed=seed + 1)
    leaves = [
        None if t is None else t.to(dtype).to(DEVICE).requires_grad_(True) for t in (hidden, weight, bias_)
    ]
    return (*leaves, target.to(DEVICE))


def shapes(name):
    return [(3, 7)] if TOKEN_LOSSES[name].sequence_only else [(13,), (3, 7)]


def check_logits(name, logits, target, *extra, reduction="mean", **kwargs):
    """The Triton backend vs the reference on the upcast logits: loss and gradient."""
    dtype = logits.dtype
    ref_logits = leaf(logits, reference_dtype(dtype))
    ref_kwargs = twin_generator(kwargs)  # before the call draws from the generator
    loss = TOKEN_LOSSES[name].function(logits, target, *extra, reduction=reduction, **kwargs)
    expected = REFERENCES[name](ref_logits, target, *extra, reduction=reduction, **ref_kwargs)
    assert_loss_close(loss, expected, dtype)
    grad_out = torch.randn(expected.shape, generator=generator(5), dtype=expected.dtype).to(DEVICE)
    if dtype == torch.float16:
        grad_out = grad_out * 1024  # a loss scale: the deferred gradient must not overflow or underflow
    loss.backward(grad_out)
    expected.backward(grad_out)
    assert_grad_close(logits.grad, ref_logits.grad, dtype)


def check_fused(name, hidden, weight, bias, target, *extra, reduction="mean", **kwargs):
    dtype = hidden.dtype
    params = [t for t in (hidden, weight, bias) if t is not None]
    ref_params = [leaf(t, reference_dtype(dtype)) for t in params]
    ref_bias = ref_params[2] if bias is not None else None
    ref_kwargs = twin_generator(kwargs)
    loss = TOKEN_LOSSES[name].linear_function(
        hidden, weight, target, *extra, bias=bias, reduction=reduction, **kwargs
    )
    expected = REFERENCES[name](
        F.linear(ref_params[0], ref_params[1], ref_bias),
        target,
        *extra,
        reduction=reduction,
        **ref_kwargs,
    )
    assert_loss_close(loss, expected, dtype, rtol=_FUSED_LOSS_RTOL[dtype])
    grad_out = torch.randn(expected.shape, generator=generator(9), dtype=expected.dtype).to(DEVICE)
    loss.backward(grad_out)
    expected.backward(grad_out)
    for actual, reference in zip(params, ref_params, strict=True):
        assert_grad_close(actual.grad, reference.grad, dtype, rtol=_FUSED_GRAD_RTOL[dtype])


def with_generator(kwargs, seed=0):
    if kwargs.get("subset") == "random":
        return {**kwargs, "generator": generator(seed)}
    return kwargs


# --------------------------------------------------------------------------------------------------
# every objective, both forms, against the references


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_logits_form_matches_reference(name, dtype, reduction):
    for shape in shapes(name):
        logits, target = sample(shape, 37, dtype=dtype)  # odd vocabulary: a ragged last block
        check_logits(name, logits, target, *TOKEN_LOSSES[name].extra_args, reduction=reduction)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_fused_form_matches_reference(name, dtype, bias, reduction):
    for shape in shapes(name):
        hidden, weight, bias_, target = fused_sample(shape, 37, dtype=dtype, bias=bias)
        check_fused(name, hidden, weight, bias_, target, *TOKEN_LOSSES[name].extra_args, reduction=reduction)


@pytest.mark.parametrize("name", NAMES)
def test_vocabulary_over_several_blocks_matches_reference(name, monkeypatch):
    from tunekit.losses import triton_kernels

    monkeypatch.setattr(triton_kernels, "MAX_BLOCK", 16)  # 101 columns: 7 blocks, the last of 5
    logits, target = sample((3, 7), 101)
    check_logits(name, logits, target, *TOKEN_LOSSES[name].extra_args)
    hidden, weight, bias, target = fused_sample((3, 7), 101)
    check_fused(name, hidden, weight, bias, target, *TOKEN_LOSSES[name].extra_args, reduction="sum")


@pytest.mark.parametrize("name", NAMES)
def test_fused_chunks_of_a_few_rows_match_reference(name, monkeypatch):
    monkeypatch.setattr(_kernel_engine, "DEVICE_CHUNK_BYTES", 3 * 37 * 4 + 1)  # 3 rows a chunk, ragged
    hidden, weight, bias, target = fused_sample((5, 7), 37)
    check_fused(name, hidden, weight, bias, target, *TOKEN_LOSSES[name].extra_args, reduction="none")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("name", ["cross_entropy", "dece"])
def test_label_smoothing_matches_reference(name, label_smoothing):
    extra = TOKEN_LOSSES[name].extra_args
    logits, target = sample((37,), 211)
    check_logits(name, logits, target, *extra, label_smoothing=label_smoothing)
    hidden, weight, bias, target = fused_sample((37,), 211)
    check_fused(name, hidden, weight, bias, target, *extra, label_smoothing=label_smoothing)


@pytest.mark.parametrize(("epoch", "alpha_base"), [(1, 0.985), (5, 0.9), (40, 0.9), (3, 1.0)])
def test_dece_epochs_match_reference(epoch, alpha_base):
    logits, target = sample((3, 9), 37)
    check_logits("dece", logits, target, epoch, alpha_base=alpha_base)


@pytest.mark.parametrize("q", [1e-3, 0.3, 1.0])
def test_gce_q_matches_reference(q):
    logits, target = sample((3, 9), 37)
    check_logits("gce", logits, target, q=q)


@pytest.mark.parametrize("packed", [False, True], ids=["rows", "packed"])
@pytest.mark.parametrize("first_token_mle", [True, False])
@pytest.mark.parametrize("subset", SUBSETS)
def test_smile_subsets_match_reference(subset, first_token_mle, packed):
    kwargs = with_generator({"subset": subset, "first_token_mle": first_token_mle, "num_random": 3})
    if packed:
        kwargs["position_ids"] = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 1, 2, 3]] * 3, device=DEVICE)
    logits, target = sample((3, 11), 13)
    check_logits("smile", logits, target, **kwargs)
    hidden, weight, bias, target = fused_sample((3, 11), 13)
    check_fused("smile", hidden, weight, bias, target, **with_generator(kwargs))


def test_strided_logits_are_read_in_place():
    """logits[:, :-1] has no (T, V) view: the kernel addresses its rows through both strides."""
    logits, target = sample((3, 12), 37)
    loss = cross_entropy(logits[:, :-1], target[:, 1:], reduction="sum")
    loss.backward()
    expected_logits = leaf(logits)
    expected = REFERENCES["cross_entropy"](expected_logits[:, :-1], target[:, 1:], reduction="sum")
    expected.backward()
    assert_loss_close(loss, expected, torch.float32)
    assert_grad_close(logits.grad, expected_logits.grad, torch.float32)


@pytest.mark.parametrize("name", NAMES)
def test_all_ignored_batch_is_zero_with_zero_gradient(name):
    logits, _ = sample((2, 5), 37)
    target = torch.full((2, 5), IGNORE, device=DEVICE)
    loss = TOKEN_LOSSES[name].function(logits, target, *TOKEN_LOSSES[name].extra_args)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("name", NAMES)
def test_num_items_in_batch_divides_the_sum(name):
    extra = TOKEN_LOSSES[name].extra_args
    logits, target = sample((3, 7), 37)
    check_logits(name, logits, target, *extra, num_items_in_batch=torch.tensor(40, device=DEVICE))


def test_a_custom_ignore_index_outside_the_vocabulary():
    logits, target = sample((3, 7), 37)
    target = torch.where(target == IGNORE, 5000, target)
    for subset in SUBSETS:
        check_logits("smile", leaf(logits), target, **with_generator({"subset": subset}), ignore_index=5000)


def test_statistics_are_recorded_as_on_the_pytorch_engine():
    for name in NAMES:
        logits, target = sample((3, 7), 37)
        with recording_token_statistics() as recorded:
            TOKEN_LOSSES[name].function(logits, target, *TOKEN_LOSSES[name].extra_args).backward()
        entropy, is_top1 = ref_token_statistics(logits.detach().double(), target)
        torch.testing.assert_close(recorded[0].entropy.double(), entropy, rtol=1e-5, atol=1e-6)
        assert torch.equal(recorded[0].is_top1, is_top1)


def test_modules_and_evaluation_without_grad():
    logits, target = sample((3, 7), 37)
    with torch.no_grad():
        loss = dece_loss(logits, target, 2)
    expected = REFERENCES["dece"](logits.detach().float(), target, 2)
    torch.testing.assert_close(loss, expected, rtol=2e-5, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# no host synchronisation


class _SyncingOps(TorchDispatchMode):
    """Records what makes the host wait for the device: ops that read a value or find nonzeros, and
    `Tensor.tolist` (which reads values without dispatching an op on CPU tensors)."""

    SYNCING = (
        "aten::_local_scalar_dense",
        "aten::nonzero",
        "aten::is_nonzero",
        "aten::equal",
        "aten::masked_select",
    )

    def __init__(self):
        super().__init__()
        self.seen = []

    def __enter__(self):
        self._tolist = torch.Tensor.tolist

        def tolist(tensor):
            self.seen.append("tolist")
            return self._tolist(tensor)

        torch.Tensor.tolist = tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.seen.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@pytest.fixture
def as_on_an_accelerator(monkeypatch):
    """The value checks that sync run on CPU only (on accelerators behind TUNEKIT_SYNC_CHECKS): switch them
    off as an accelerator would, so that what remains is the engine's own work."""
    monkeypatch.setattr(_checks, "sync_checks_enabled", lambda device: False)
    monkeypatch.setattr(smile, "sync_checks_enabled", lambda device: False)


@pytest.mark.parametrize("form", ["logits", "fused"])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("cross_entropy", {"label_smoothing": 0.1}), ("dece", {}), ("gce", {})]
    + [("smile", {"subset": subset}) for subset in SUBSETS],
    ids=lambda value: value if isinstance(value, str) else value.get("subset", ""),
)
def test_forward_and_gradient_need_no_host_sync(name, kwargs, form, as_on_an_accelerator):
    """Forward computes the loss and the gradient; none of it waits for the device, except fused SMILE
    "sequence", which reads its subsets' sizes once so as to multiply by the subsets' weight rows alone."""
    extra = TOKEN_LOSSES[name].extra_args
    kwargs = with_generator(kwargs)
    if form == "logits":
        logits, target = sample((3, 7), 37)
        call = lambda: TOKEN_LOSSES[name].function(logits, target, *extra, **kwargs)  # noqa: E731
    else:
        hidden, weight, bias, target = fused_sample((3, 7), 37)
        call = lambda: TOKEN_LOSSES[name].linear_function(hidden, weight, target, *extra, bias=bias, **kwargs)  # noqa: E731
    with _SyncingOps() as mode:
        loss = call()
    expected = ["tolist"] if form == "fused" and kwargs.get("subset") == "sequence" else []
    assert mode.seen == expected
    loss.backward()


def test_packed_smile_syncs_once_to_count_its_sequences(as_on_an_accelerator):
    logits, target = sample((3, 7), 37)
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2, 3]] * 3, device=DEVICE)
    with _SyncingOps() as mode:
        smile.smile_loss(logits, target, position_ids=position_ids)
    assert mode.seen == ["aten::_local_scalar_dense"]


# --------------------------------------------------------------------------------------------------
# choosing the backend


def test_backend_choice(monkeypatch):
    cpu = torch.device("cpu")
    assert token_backend(cpu, torch.float32) == "triton"  # forced (the autouse fixture)
    assert token_backend(cpu, torch.float64) == "torch"  # the kernels compute in fp32: gradcheck stays exact
    monkeypatch.setenv("TUNEKIT_BACKEND", "auto")
    assert token_backend(cpu, torch.float32) == "torch"
    monkeypatch.setenv("TUNEKIT_BACKEND", "torch")
    assert token_backend(torch.device("cuda"), torch.bfloat16) == "torch"
    monkeypatch.setenv("TUNEKIT_BACKEND", "cuda")
    with pytest.raises(ValueError, match="TUNEKIT_BACKEND must be one of auto, torch, triton, got 'cuda'"):
        token_backend(cpu, torch.float32)
    monkeypatch.setenv("TUNEKIT_BACKEND", "triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    if DEVICE.type == "cpu":
        with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
            token_backend(cpu, torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    cross_entropy(*sample((4,), 5))  # the fixture's check: this call ran the kernels


def test_fp64_runs_the_pytorch_engine_even_when_triton_is_forced(kernel_calls):
    logits, target = sample((4,), 5, dtype=torch.float64)
    loss = cross_entropy(logits, target)
    assert kernel_calls == []
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    linear_cross_entropy(*fused_sample((4,), 5)[:2], fused_sample((4,), 5)[3])  # the fixture's check


# --------------------------------------------------------------------------------------------------
# found by review: each a reproduction of what the first kernels got wrong


def on_the_pytorch_engine(monkeypatch, function, *args, **kwargs):
    monkeypatch.setenv("TUNEKIT_BACKEND", "torch")
    try:
        return function(*args, **kwargs)
    finally:
        monkeypatch.setenv("TUNEKIT_BACKEND", "triton")


def test_unsigned_targets_keep_their_ignored_positions(monkeypatch):
    """-1 marked ignored rows; on a uint8 target it wrapped to 255, a class."""
    logits = torch.randn(2, 3, 11, generator=generator(0)).to(DEVICE)
    target = torch.tensor([[1, 255, 2], [255, 4, 5]], dtype=torch.uint8, device=DEVICE)
    loss = cross_entropy(logits, target, ignore_index=255, label_smoothing=0.1, reduction="none")
    expected = on_the_pytorch_engine(
        monkeypatch, cross_entropy, logits, target, ignore_index=255, label_smoothing=0.1, reduction="none"
    )
    torch.testing.assert_close(loss, expected)
    assert loss[0, 1] == 0 and loss[1, 0] == 0


@pytest.mark.parametrize("form", ["logits", "fused"])
def test_empty_batch_with_random_subsets(form):
    target = torch.zeros(2, 0, dtype=torch.long, device=DEVICE)
    if form == "logits":
        inputs = [torch.randn(2, 0, 5, device=DEVICE, requires_grad=True)]
        loss = smile.smile_loss(inputs[0], target, subset="random")
    else:
        inputs = [torch.randn(2, 0, 4, device=DEVICE, requires_grad=True), torch.randn(5, 4, device=DEVICE)]
        loss = smile.linear_smile_loss(inputs[0], inputs[1], target, subset="random")
    loss.backward()
    assert loss.item() == 0.0 and inputs[0].grad.shape == inputs[0].shape


def test_statistics_of_a_single_token():
    logits = torch.randn(9, generator=generator(0)).to(DEVICE).requires_grad_()
    target = torch.tensor(4, device=DEVICE)
    with recording_token_statistics() as recorded:
        cross_entropy(logits, target)
    entropy, is_top1 = ref_token_statistics(logits.detach().double(), target)
    torch.testing.assert_close(recorded[0].entropy.double(), entropy, rtol=1e-5, atol=1e-6)
    assert torch.equal(recorded[0].is_top1, is_top1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_dece_loss_of_non_finite_logits_is_nan(bad):
    """clamping the probabilities at DeCE's floor dropped a NaN: a diverged model got a finite loss."""
    logits = torch.zeros(2, 6, device=DEVICE)
    logits[0, 3] = bad
    loss = dece_loss(logits, torch.tensor([1, 2], device=DEVICE), 2.0, reduction="none")
    assert loss[0].isnan() and loss[1].isfinite()


@pytest.mark.parametrize("subset", SUBSETS)
def test_smile_drops_non_finite_logits_outside_the_subset(subset, monkeypatch):
    """The mask used to be added: +inf + -inf is NaN. A dropped logit now counts for nothing, as when the
    PyTorch engine gathers the subset."""
    logits = torch.zeros(1, 3, 6, device=DEVICE, requires_grad=True)
    target = torch.tensor([[1, 2, 3]], device=DEVICE)
    with torch.no_grad():
        logits[0, 2, 5 if subset != "reverse" else 1] = float("inf")  # outside the position's subset
    kwargs = {"subset": subset, "reduction": "none", "num_random": 2}
    loss = smile.smile_loss(logits, target, **with_generator(kwargs))
    loss.sum().backward()
    if subset == "random":  # whether id 5 was drawn depends on the draw: compare with the PyTorch engine
        expected = on_the_pytorch_engine(
            monkeypatch, smile.smile_loss, logits, target, **with_generator(kwargs)
        )
        torch.testing.assert_close(loss, expected, equal_nan=True)
    else:
        assert loss.isfinite().all() and logits.grad.isfinite().all()


# --------------------------------------------------------------------------------------------------
# the engine's contract, on this backend too


def test_compiled_caller_matches_eager_across_shapes():
    """torch.compile runs the objective eagerly (a graph break) and recompiles nothing per shape."""
    torch._dynamo.reset()

    def step(logits, target):
        return dece_loss(logits * 2, target, 1, label_smoothing=0.1) + 1

    compiled = torch.compile(step, backend="eager", dynamic=True)
    for shape in [(3, 7), (2, 5)]:
        logits, target = sample(shape, 37)
        twin = leaf(logits)
        loss, expected = compiled(logits, target), step(twin, target)
        loss.backward()
        expected.backward()
        torch.testing.assert_close(loss, expected)
        torch.testing.assert_close(logits.grad, twin.grad)


def test_second_backward_through_a_retained_graph_recomputes():
    logits, target = sample((3, 7), 37)
    loss = smile.smile_loss(logits, target, subset="reverse")
    loss.backward(retain_graph=True)
    first = logits.grad.clone()
    logits.grad.zero_()  # the handed-out buffer: a second backward must not read it
    loss.backward(torch.tensor(2.0, device=DEVICE))
    torch.testing.assert_close(logits.grad, 2 * first)


def test_meta_inputs_run_the_stand_in_even_when_triton_is_forced(kernel_calls):
    hidden = torch.randn(2, 5, 11, device="meta", requires_grad=True)
    loss = linear_cross_entropy(
        hidden, torch.randn(7, 11, device="meta"), torch.zeros(2, 5, dtype=torch.long, device="meta")
    )
    assert loss.device.type == "meta" and kernel_calls == []
    cross_entropy(*sample((4,), 5))  # the fixture's check


@pytest.mark.parametrize("q", [0.05, 0.5, 1.0])
def test_gce_of_saturated_logits_matches_reference(q):
    """Logits of +-2000: q log p_y of -100 made exp denormal, and the first expm1 took its (inexact) log."""
    logits, target = sample((3, 11), 29)
    check_logits("gce", leaf(logits.detach() * 500), target, q=q, reduction="sum")


def test_cross_entropy_of_saturated_logits_matches_reference():
    logits, target = sample((3, 11), 29)
    check_logits("cross_entropy", leaf(logits.detach() * 500), target, label_smoothing=0.1, reduction="sum")


def test_token_statistics_functions():
    """token_statistics and its fused form run a statistics-only pass, which had no kernel math at first."""
    from tunekit.losses import linear_token_statistics, token_statistics

    logits, target = sample((3, 7), 37)
    entropy, is_top1 = token_statistics(logits, target)
    expected_entropy, expected_top1 = ref_token_statistics(logits.detach().double(), target)
    torch.testing.assert_close(entropy.double(), expected_entropy, rtol=1e-5, atol=1e-6)
    assert torch.equal(is_top1, expected_top1)
    hidden, weight, bias, target = fused_sample((3, 7), 37)
    entropy, is_top1 = linear_token_statistics(hidden, weight, target, bias=bias)
    expected_entropy, _ = ref_token_statistics(F.linear(hidden, weight, bias).detach().double(), target)
    torch.testing.assert_close(entropy.double(), expected_entropy, rtol=1e-5, atol=1e-6)
