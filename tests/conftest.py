"""Shared helpers and fixtures: one intra-op thread for the whole suite, a single-process gloo group, and for
the loss tests seeded data, tolerances by dtype and tiny chunks."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist

# Without a GPU the Triton kernels run in Triton's interpreter (tests/test_triton_backend.py). Triton reads
# the flag when a kernel is defined, so it is set before anything imports triton.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

IGNORE = -100

# Leading (target) shapes every objective accepts, and the 3-D-only ones SMILE accepts.
ANY_TARGET_SHAPES = [(), (13,), (3, 7)]
SEQUENCE_TARGET_SHAPES = [(3, 7)]


def target_shapes(name: str) -> list[tuple[int, ...]]:
    """Target shapes to exercise for a registered objective; the last one is (B, N).

    Objectives flagged ``sequence_only`` in the registry (SMILE) take (B, N) labels only.
    """
    from tunekit.losses.registry import TOKEN_LOSSES

    sequence_only = getattr(TOKEN_LOSSES[name], "sequence_only", name == "smile")
    return SEQUENCE_TARGET_SHAPES if sequence_only else ANY_TARGET_SHAPES


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def twin_generator(kwargs: dict) -> dict:
    """``kwargs`` with its ``generator`` (if any) replaced by a copy in the same state.

    Lets tunekit and the reference each draw the same random subset from identically seeded generators.
    """
    if kwargs.get("generator") is None:
        return kwargs
    twin = torch.Generator()
    twin.set_state(kwargs["generator"].get_state())
    return {**kwargs, "generator": twin}


def make_logits(
    shape: tuple[int, ...],
    vocab: int,
    *,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    scale: float = 2.0,
    requires_grad: bool = True,
) -> torch.Tensor:
    """Leaf logits of shape (*shape, vocab), N(0, scale^2), rounded to ``dtype``."""
    values = torch.randn(*shape, vocab, generator=generator(seed), dtype=torch.float64) * scale
    return values.to(dtype).requires_grad_(requires_grad)


def make_target(
    shape: tuple[int, ...],
    vocab: int,
    *,
    seed: int = 1,
    ignore_frac: float = 0.3,
    ignore_index: int = IGNORE,
) -> torch.Tensor:
    """Random int64 targets in [0, vocab) with about ``ignore_frac`` of them set to ``ignore_index``."""
    gen = generator(seed)
    target = torch.randint(vocab, shape, generator=gen)
    ignored = torch.rand(shape, generator=gen) < ignore_frac
    target[ignored] = ignore_index
    return target


def make_prompted_labels(
    batch: int,
    length: int,
    vocab: int,
    *,
    seed: int = 1,
    ignore_frac: float = 0.3,
    ignore_index: int = IGNORE,
) -> torch.Tensor:
    """(B, N) labels like decoder-only fine-tuning produces.

    Row b has a masked prompt of ``b % length`` positions (so the first supervised position is not 0 for
    b > 0), then ~``ignore_frac`` random ignored positions; when batch >= 3 the last row is entirely
    ignored (a sequence with no supervised label).
    """
    labels = make_target(
        (batch, length), vocab, seed=seed, ignore_frac=ignore_frac, ignore_index=ignore_index
    )
    for b in range(batch):
        labels[b, : b % length] = ignore_index
        supervised = (labels[b] != ignore_index).nonzero()
        if len(supervised) == 0:  # keep at least one supervised label in the non-empty rows
            labels[b, -1] = (b * 7) % vocab
    if batch >= 3:
        labels[-1] = ignore_index
    return labels


def leaf(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A detached copy (optionally cast), requiring grad: the reference's own input."""
    out = tensor.detach().clone()
    if dtype is not None:
        out = out.to(dtype)
    return out.requires_grad_(True)


def reference_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype losses are computed in: float64 stays, everything else is float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# relative tolerance of a result computed from inputs of the given dtype, compared against the
# float32 (float64) reference on the same (upcast) values
_LOSS_RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
# gradients come back in the input dtype, so they carry its rounding (bf16: 8 mantissa bits)
_GRAD_RTOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def assert_loss_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, *, rtol=None) -> None:
    """Compare losses; ``dtype`` is the input dtype (losses of half inputs are computed in float32)."""
    assert actual.dtype == reference_dtype(dtype), (
        f"loss dtype {actual.dtype}, expected {reference_dtype(dtype)}"
    )
    assert actual.shape == expected.shape
    rtol = _LOSS_RTOL[dtype] if rtol is None else rtol
    scale = float(expected.detach().abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(
        actual.detach(), expected.detach().to(actual.dtype), rtol=rtol, atol=rtol * max(scale, 1e-3)
    )


def assert_grad_close(
    actual: torch.Tensor | None, expected: torch.Tensor | None, dtype: torch.dtype, *, rtol=None
):
    """Compare gradients with an absolute tolerance relative to the gradient's scale.

    The scale has a floor of 1e-4 so that gradients that all but vanish (saturated softmax) are compared
    against something meaningful rather than against their own rounding noise.
    """
    assert actual is not None, "no gradient reached the input"
    assert expected is not None
    assert actual.dtype == dtype, f"gradient dtype {actual.dtype}, expected the input dtype {dtype}"
    rtol = _GRAD_RTOL[dtype] if rtol is None else rtol
    expected = expected.to(torch.float64)
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual.to(torch.float64), expected, rtol=rtol, atol=rtol * max(scale, 1e-4))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Run the suite on one intra-op thread, and restore the count after it.

    Every tensor and model here is tiny, so they run fastest on one thread: more only add the intra-op
    pool's overhead and synchronisation, and on a busy machine the pool's workers contend for the cores and
    a step can take 10-100x longer (float64 log_softmax took milliseconds a call, and
    test_classification_losses.py 80 s instead of 10 s).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def process_group(tmp_path):
    """A gloo process group of this process alone (rank 0 of 1), destroyed after the test."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture(autouse=True)
def _seed_global_rng():
    torch.manual_seed(0)


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Call with the vocabulary size: shrinks the engine's chunk budgets to 3 rows (+1 element) of it, and
    the fused path's to ``fused_rows`` rows (larger than 3: its chunks' math runs in pieces of 3 rows).

    Several chunks and a ragged last chunk are then exercised on small inputs.
    """
    from tunekit.losses import _engine

    def shrink(vocab: int, fused_rows: int = 3) -> None:
        monkeypatch.setattr(_engine, "CHUNK_ELEMENTS", vocab * 3 + 1)
        monkeypatch.setattr(_engine, "FUSED_CHUNK_ELEMENTS", vocab * fused_rows + 1)

    return shrink
