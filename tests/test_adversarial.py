"""FGM and PGD on the input embeddings of tiny transformers models (random weights, no download) and of a
plain module without ``get_input_embeddings``.

The references are independent of tunekit: gradients come from ``torch.autograd.grad`` on deep copies of
the model whose embedding is moved by hand (r = epsilon * g / ||g||, PGD's projected steps), and step()'s
gradients must equal clean + adversarial ones. Dropout is 0 everywhere, so every pass is deterministic.
"""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
import transformers
from torch import nn

from tiny_lm import make_gpt2
from tiny_models import bert_config, llama_config
from tunekit.tricks.adversarial import FGM, PGD, find_embedding_parameters

VOCAB = 40
HALF_TOLERANCE = {  # about one unit in the last place
    torch.float16: {"rtol": 2**-10, "atol": 2**-14},
    torch.bfloat16: {"rtol": 2**-7, "atol": 2**-10},
}
EMBEDDINGS = {
    "bert": "bert.embeddings.word_embeddings.weight",
    "llama": "model.embed_tokens.weight",
    "gpt2": "transformer.wte.weight",  # tied to lm_head.weight
}


class Tagger(nn.Module):
    """A token tagger with two embedding tables (words, characters) and no ``get_input_embeddings``."""

    def __init__(self, *, sparse: bool = False) -> None:
        super().__init__()
        self.words = nn.Embedding(VOCAB, 8, sparse=sparse)
        self.chars = nn.Embedding(12, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids, chars, labels):
        hidden = torch.tanh(self.words(ids) + self.chars(chars))  # (B, N, 8)
        return {"loss": F.cross_entropy(self.head(hidden).flatten(0, 1), labels.flatten())}


def make_model(kind: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if kind == "bert":
        config = bert_config(VOCAB, max_position_embeddings=16, num_labels=3)
        return transformers.BertForSequenceClassification(config)
    if kind == "llama":
        config = llama_config(VOCAB, num_key_value_heads=2, max_position_embeddings=16)
        return transformers.LlamaForCausalLM(config)
    if kind == "gpt2":
        return make_gpt2(vocab=VOCAB, positions=16, dropout=0.0, seed=seed)
    return Tagger(sparse=kind == "tagger-sparse")


def make_batch(kind: str, seed: int) -> dict[str, torch.Tensor]:
    """An odd-shaped (3, 7) batch for `kind`; the two models' inputs differ."""
    gen = torch.Generator().manual_seed(100 + seed)
    ids = torch.randint(1, VOCAB, (3, 7), generator=gen)
    if kind == "bert":
        mask = torch.ones(3, 7, dtype=torch.long)
        mask[1, 5:] = 0
        return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(3, (3,), generator=gen)}
    if kind in ("llama", "gpt2"):
        return {"input_ids": ids, "labels": ids}
    return {"ids": ids, "chars": torch.randint(12, (3, 7), generator=gen), "labels": ids % 3}


def names_of(kind: str) -> list[str]:
    return [EMBEDDINGS[kind]] if kind in EMBEDDINGS else ["words.weight", "chars.weight"]


def loss_of(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return model(**batch)["loss"]


def dense(grad: torch.Tensor) -> torch.Tensor:
    return grad.to_dense() if grad.layout != torch.strided else grad


# ---- the independent reference ----


def grads_at(model, batch, deltas):
    """Loss and name -> gradient of a deep copy of `model` with parameters moved by `deltas` (name -> r)."""
    model = copy.deepcopy(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, delta in deltas.items():
            params[name].copy_(params[name] + delta)
    loss = loss_of(model, batch)
    names = [name for name, p in params.items() if p.requires_grad]
    grads = torch.autograd.grad(loss, [params[name] for name in names], allow_unused=True)
    return loss.detach(), {
        name: torch.zeros_like(params[name]) if g is None else dense(g)
        for name, g in zip(names, grads, strict=True)
    }


def reference_fgm(model, batch, names, epsilon):
    """(adversarial loss, clean + adversarial gradients) with r = epsilon * g / ||g|| per tensor."""
    _, clean = grads_at(model, batch, {})
    deltas = {name: epsilon * clean[name] / clean[name].norm() for name in names}
    loss, adversarial = grads_at(model, batch, deltas)
    return loss, {name: clean[name] + adversarial[name] for name in clean}


def reference_pgd(model, batch, names, epsilon, step_size, steps):
    """(last adversarial loss, clean + last adversarial gradients) after K projected steps."""
    _, clean = grads_at(model, batch, {})
    grads = clean
    deltas = {name: torch.zeros_like(clean[name]) for name in names}
    for _ in range(steps):
        for name in names:
            delta = deltas[name] + step_size * grads[name] / grads[name].norm()
            if delta.norm() > epsilon:
                delta = epsilon * delta / delta.norm()
            deltas[name] = delta
        loss, grads = grads_at(model, batch, deltas)
    return loss, {name: clean[name] + grads[name] for name in clean}


def make_attack(method: str, model: nn.Module, kind: str, **kwargs):
    names = None if kind in EMBEDDINGS else names_of(kind)
    if method == "fgm":
        return FGM(model, kwargs.get("epsilon", 0.7), param_names=names)
    epsilon, steps = kwargs.get("epsilon", 0.7), kwargs.get("steps", 3)
    return PGD(model, epsilon, step_size=0.3, steps=steps, param_names=names)


def reference(method, model, batch, kind, epsilon=0.7, steps=3):
    if method == "fgm":
        return reference_fgm(model, batch, names_of(kind), epsilon)
    return reference_pgd(model, batch, names_of(kind), epsilon, 0.3, steps)


def assert_grads_close(model: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        want = expected[name]
        scale = float(want.abs().max())
        torch.testing.assert_close(dense(param.grad), want, rtol=1e-4, atol=1e-5 * max(scale, 1e-3), msg=name)


def snapshot(model: nn.Module) -> dict[str, tuple[nn.Parameter, int, torch.Tensor]]:
    return {name: (p, p.data_ptr(), p.detach().clone()) for name, p in model.named_parameters()}


def assert_restored(model: nn.Module, saved) -> None:
    """Bit-identical weights, in the same Parameter objects and storage (optimizer state stays valid)."""
    for name, param in model.named_parameters():
        same, pointer, value = saved[name]
        assert param is same and param.data_ptr() == pointer, name
        assert torch.equal(param, value), name


# ---- finding the embedding ----


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2"])
def test_finds_the_embedding_through_get_input_embeddings(kind):
    model = make_model(kind)
    fgm = FGM(model)
    assert fgm.param_names == (EMBEDDINGS[kind],)
    names = [name for name, _ in model.named_parameters()]
    if kind != "bert":  # the copy-pasted FGM's substring would match nothing and perturb nothing
        assert not [name for name in names if "word_embeddings" in name]
    with pytest.raises(ValueError, match="'word_embeddings' is not a parameter"):
        FGM(model, param_names=["word_embeddings"])  # no substring matching
    loss_of(model, make_batch(kind, 0)).backward()
    embedding = model.get_input_embeddings().weight
    before = embedding.detach().clone()
    with fgm.perturbed() as moved:
        assert moved == (EMBEDDINGS[kind],)
        assert not torch.equal(embedding, before)
    assert torch.equal(embedding, before)


def test_a_module_without_get_input_embeddings_needs_exact_names():
    model = Tagger()
    with pytest.raises(ValueError, match=r"get_input_embeddings\(\)"):
        FGM(model)
    assert FGM(model, param_names=["words.weight"]).param_names == ("words.weight",)
    assert PGD(model, param_names="chars.weight").param_names == ("chars.weight",)  # one name as a str
    for bad in ("words", "embeddings.weight", "module.words.weight", "words.weight "):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            FGM(model, param_names=[bad])
    with pytest.raises(ValueError, match=r"close names: \['words.weight'"):
        FGM(model, param_names=["module.words.weight"])
    for bad in ([], [3], ("words.weight", 3)):
        with pytest.raises(ValueError, match="param_names must be a non-empty list"):
            FGM(model, param_names=bad)
    with pytest.raises(ValueError, match=r"model must be a torch\.nn\.Module, got dict"):
        FGM({"words.weight": model.words.weight})


def test_frozen_embeddings_are_refused():
    model = Tagger()
    model.words.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"'words\.weight' does not require grad"):
        PGD(model, param_names=["chars.weight", "words.weight"])
    bert = make_model("bert")
    bert.get_input_embeddings().weight.requires_grad_(False)  # e.g. a LoRA-frozen base
    with pytest.raises(ValueError, match=re.escape(f"{EMBEDDINGS['bert']!r} does not require grad")):
        FGM(bert)


# ---- the perturbation and the restoration ----


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2", "tagger"])
def test_fgm_moves_each_embedding_by_epsilon_along_its_unit_gradient(kind):
    model, epsilon = make_model(kind), 0.7
    loss_of(model, make_batch(kind, 0)).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    saved = snapshot(model)
    with FGM(model, epsilon, param_names=names_of(kind)).perturbed() as moved:
        assert moved == tuple(names_of(kind))
        for name, param in model.named_parameters():
            origin = saved[name][2]
            if name in moved:
                g = grads[name]
                expected = origin + epsilon * g / torch.linalg.vector_norm(g)
                torch.testing.assert_close(param.detach(), expected, rtol=1e-6, atol=1e-7)
                assert math.isclose(float((param.detach() - origin).norm()), epsilon, rel_tol=1e-4)
            else:
                assert torch.equal(param, origin), name
    assert_restored(model, saved)
    for name, param in model.named_parameters():  # the gradients are the caller's
        assert torch.equal(param.grad, grads[name]), name


def test_pgd_projects_onto_the_epsilon_ball():
    model, batch = make_model("llama"), make_batch("llama", 0)
    embedding = model.get_input_embeddings().weight
    origin = embedding.detach().clone()
    loss_of(model, batch).backward()
    radii = []
    with PGD(model, epsilon=0.5, step_size=0.2, steps=5).perturbed() as steps:
        for _ in steps:
            radii.append(float((embedding.detach() - origin).norm()))
            loss_of(model, batch).backward()
    assert math.isclose(radii[0], 0.2, rel_tol=1e-5)  # step_size * g / ||g||
    assert radii[1] > radii[0]
    assert all(r <= 0.5 * (1 + 1e-6) for r in radii)
    assert math.isclose(radii[-1], 0.5, rel_tol=1e-5)  # 5 steps of 0.2 reach the boundary
    assert torch.equal(embedding, origin)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_weights_and_gradients_are_restored_through_an_exception(method):
    model, batch = make_model("gpt2"), make_batch("gpt2", 0)
    attack = make_attack(method, model, "gpt2")
    loss_of(model, batch).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    saved = snapshot(model)
    with pytest.raises(RuntimeError, match="inside"), attack.perturbed() as steps:
        for k in steps if method == "pgd" else [0, 1]:
            loss_of(model, batch).backward()  # adversarial gradients, then the failure
            if k == 1:
                raise RuntimeError("inside")
    assert_restored(model, saved)
    if method == "pgd":  # PGD had zeroed them: all put back, no partial adversarial gradients
        for name, param in model.named_parameters():
            assert torch.equal(param.grad, grads[name]), name


def test_pgd_step_restores_through_a_failing_closure_and_a_break():
    model, batch = make_model("bert"), make_batch("bert", 0)
    pgd = PGD(model, steps=3)
    _, clean = grads_at(model, batch, {})
    saved = snapshot(model)
    calls = []

    def closure():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("closure failed")
        return loss_of(model, batch)

    with pytest.raises(RuntimeError, match="closure failed"):
        pgd.step(loss_of(model, batch), closure)
    assert_restored(model, saved)
    assert_grads_close(model, clean)  # the clean backward happened; the adversarial ones are gone
    with pytest.raises(ValueError, match="closure must return the adversarial loss as a tensor, got dict"):
        pgd.step(loss_of(model, batch), lambda: {"loss": loss_of(model, batch)})
    assert_restored(model, saved)
    model.zero_grad()
    loss_of(model, batch).backward()
    with pgd.perturbed() as steps:
        for _ in steps:
            loss_of(model, batch).backward()
            break
    assert_restored(model, saved)
    assert_grads_close(model, clean)


# ---- gradients of step() against the reference ----


@pytest.mark.parametrize("kind", ["bert", "llama", "gpt2", "tagger", "tagger-sparse"])
@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_step_leaves_clean_plus_adversarial_gradients(method, kind):
    model, batch = make_model(kind), make_batch(kind, 0)
    expected_loss, expected = reference(method, model, batch, kind)
    attack = make_attack(method, model, kind)
    saved = snapshot(model)
    calls = []

    def closure():
        calls.append(1)
        return loss_of(model, batch)

    loss = attack.step(loss_of(model, batch), closure)
    assert len(calls) == (1 if method == "fgm" else 3)  # K forward (and backward) passes
    assert not loss.requires_grad
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert_grads_close(model, expected)
    assert_restored(model, saved)


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_step_backpropagates_through_the_given_backward(method):
    model, batch = make_model("llama"), make_batch("llama", 0)
    _, expected = reference(method, model, batch, "llama", steps=2)
    attack = make_attack(method, model, "llama", steps=2)
    backwards = []

    def backward(loss):  # like a loss scale or a 1 / accumulation-steps factor
        backwards.append(1)
        (0.25 * loss).backward()

    attack.step(loss_of(model, batch), lambda: loss_of(model, batch), backward=backward)
    assert len(backwards) == (2 if method == "fgm" else 3)
    # the direction g / ||g|| does not depend on the scale: gradients are the reference's, scaled
    assert_grads_close(model, {name: 0.25 * g for name, g in expected.items()})


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_gradient_accumulation(method):
    """Two micro-batches: each attack follows its own gradient, and earlier gradients are kept."""
    model = make_model("bert")
    batches = [make_batch("bert", 0), make_batch("bert", 1)]
    expected = [reference(method, model, batch, "bert")[1] for batch in batches]
    attack = make_attack(method, model, "bert")
    for batch in batches:
        attack.step(loss_of(model, batch), lambda batch=batch: loss_of(model, batch))
    assert_grads_close(model, {name: expected[0][name] + expected[1][name] for name in expected[0]})


def test_the_direction_under_accumulation_is_the_current_micro_batch_gradient():
    model, name = make_model("llama"), EMBEDDINGS["llama"]
    batches = [make_batch("llama", 0), make_batch("llama", 1)]
    _, clean = grads_at(model, batches[1], {})
    fgm = FGM(model, epsilon=0.7)
    embedding = model.get_input_embeddings().weight
    origin = embedding.detach().clone()
    loss_of(model, batches[0]).backward()  # an earlier micro-batch's gradient, still in .grad
    before = fgm.grad_snapshot()
    loss_of(model, batches[1]).backward()
    with fgm.perturbed(grads_before=before):
        expected = origin + 0.7 * clean[name] / clean[name].norm()
        torch.testing.assert_close(embedding.detach(), expected, rtol=1e-5, atol=1e-6)
    with fgm.perturbed():  # without the snapshot the attack follows the sum of both micro-batches
        assert not torch.allclose(embedding.detach(), expected, rtol=1e-3, atol=1e-4)


# ---- missing, zero and non-finite gradients ----


@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_missing_zero_and_non_finite_gradients_are_skipped(method):
    model = Tagger()
    attack = make_attack(method, model, "tagger")
    saved = snapshot(model)

    def moved_inside() -> set[str]:
        with attack.perturbed() as steps:
            for _ in [0] if method == "fgm" else steps:
                moved = {n for n, p in model.named_parameters() if not torch.equal(p, saved[n][2])}
                assert all(torch.isfinite(p).all() for p in model.parameters())
        assert_restored(model, saved)
        return moved

    assert moved_inside() == set()  # no backward yet: every .grad is None
    loss_of(model, make_batch("tagger", 0)).backward()
    assert moved_inside() == {"words.weight", "chars.weight"}
    for bad in (0.0, math.nan, math.inf):
        with torch.no_grad():
            model.words.weight.grad.fill_(bad)
        assert moved_inside() == {"chars.weight"}, bad


def test_pgd_step_with_nan_gradients_keeps_the_weights_finite():
    model, batch = Tagger(), make_batch("tagger", 0)
    model.words.weight.register_hook(lambda g: torch.full_like(g, math.nan))
    pgd = PGD(model, steps=3, param_names=["words.weight"])
    saved = snapshot(model)
    calls = []
    pgd.step(loss_of(model, batch), lambda: calls.append(1) or loss_of(model, batch))
    assert len(calls) == 3
    assert_restored(model, saved)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["fgm", "pgd"])
def test_half_precision_embedding(method, dtype):
    """The norm of a gradient of 30000s, 3e5, overflows in fp16 (max 65504): it is taken in fp32."""
    model = nn.Embedding(10, 10, dtype=dtype)
    origin = model.weight.detach().clone()
    model.weight.grad = torch.full_like(model.weight, 30000.0)
    attack = (FGM if method == "fgm" else PGD)(model, epsilon=0.5, param_names="weight")
    with attack.perturbed() as steps:
        if method == "pgd":
            next(iter(steps))  # the first step, of size step_size
        size = 0.5 if method == "fgm" else 0.3
        expected = origin.float() + size / 10.0  # g / ||g|| = 1 / 10 everywhere
        torch.testing.assert_close(model.weight.detach().float(), expected, **HALF_TOLERANCE[dtype])
    assert torch.equal(model.weight, origin)


# ---- wrapped models and options ----


def test_ddp_and_data_parallel_wrappers_are_looked_through(process_group):
    model, batch = make_model("gpt2"), make_batch("gpt2", 0)
    assert FGM(nn.DataParallel(model)).param_names == (EMBEDDINGS["gpt2"],)
    _, expected = reference("pgd", model, batch, "gpt2")
    wrapped = nn.parallel.DistributedDataParallel(model)
    pgd = PGD(wrapped, epsilon=0.7, step_size=0.3, steps=3)
    assert pgd.param_names == (EMBEDDINGS["gpt2"],)
    assert find_embedding_parameters(wrapped)[EMBEDDINGS["gpt2"]] is model.transformer.wte.weight
    pgd.step(loss_of(wrapped, batch), lambda: loss_of(wrapped, batch))
    assert_grads_close(model, expected)


BAD_OPTIONS = (
    [("FGM", "epsilon", v) for v in (0, -1.0, math.nan, math.inf, True, "1")]
    + [("PGD", "epsilon", 0.0)]
    + [("PGD", "step_size", v) for v in (0.0, -0.1, math.nan, None)]
    + [("PGD", "steps", v) for v in (0, -1, 2.5, True, "3")]
)


@pytest.mark.parametrize(("method", "option", "value"), BAD_OPTIONS)
def test_bad_options_raise_naming_the_value(method, option, value):
    attack = {"FGM": FGM, "PGD": PGD}[method]
    with pytest.raises(ValueError, match=rf"^{option} must be .*, got {re.escape(repr(value))}$"):
        attack(Tagger(), **{option: value}, param_names="words.weight")
