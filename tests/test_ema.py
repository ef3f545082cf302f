"""Exponential moving average of the weights (`tunekit.tricks.EMA`) on real models, no mocks.

The averages are checked against an independent float64 loop over the training steps that applies

    decay_t = 0                                                        (the first update_after_step calls)
    decay_t = min(decay, max(min_decay, 1 - (1 + k / gamma) ** -power))   (warm-up; decay without it)
    average = decay_t * average + (1 - decay_t) * weight                  (every update_every-th call)

with k the calls since update_after_step, on a model with batch norm (running statistics averaged, the
integer ``num_batches_tracked`` copied); against hand-worked numbers; and bit for bit against
``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``. Then half-precision weights (fp32
averages), swapping the averages in and out, ``copy_to``, saving and resuming, ``trainable_only``,
DistributedDataParallel, a tiny BERT trained with AdamW, and bad options.
"""

from __future__ import annotations

import copy
import itertools
import math
import re

import pytest
import torch
import transformers
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from tiny_models import bert_config
from tunekit.tricks import EMA


def make_net(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3)).to(dtype)


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the model's parameters and buffers, by name."""
    return {
        name: t.detach().clone()
        for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
    }


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
    """One optimizer step on a fixed batch for `step` (the same data in every run)."""
    gen = torch.Generator().manual_seed(1000 + step)
    dtype = next(model.parameters()).dtype
    x = torch.randn(16, 4, generator=gen).to(dtype)
    target = torch.randn(16, 3, generator=gen).to(dtype)
    optimizer.zero_grad()
    nn.functional.mse_loss(model(x).float(), target.float()).backward()
    optimizer.step()


def run(model, steps, ema=None, *, start=0, optimizer=None, lr=0.05):
    """Train `steps` steps (updating `ema` after each); return the snapshots after each step."""
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    snapshots = []
    for step in range(start, start + steps):
        train_step(model, optimizer, step)
        if ema is not None:
            ema.update(model)
        snapshots.append(tensors(model))
    return snapshots


def reference_average(
    initial, snapshots, decay, *, warmup=True, gamma=1.0, power=2 / 3, min_decay=0.0, after=0, every=1
):
    """The averages after the last snapshot, in float64 (integer tensors: the last copy)."""
    average = {name: t.double() if t.is_floating_point() else t.clone() for name, t in initial.items()}
    for call, weights in enumerate(snapshots, start=1):
        k = call - after
        if k <= 0:
            decay_t = 0.0
        elif call % every != 0:
            continue
        elif warmup:
            decay_t = min(decay, max(min_decay, 1 - (1 + k / gamma) ** -power))
        else:
            decay_t = decay
        for name, weight in weights.items():
            if weight.is_floating_point():
                average[name] = decay_t * average[name] + (1 - decay_t) * weight.double()
            else:
                average[name] = weight.clone()
    return average


def assert_averages_close(ema: EMA, expected: dict[str, torch.Tensor], *, rtol: float, atol: float) -> None:
    assert set(ema.averages) == set(expected)
    for name, want in expected.items():
        got = ema.averages[name]
        if want.is_floating_point():
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=atol, msg=name)
        else:
            assert got.dtype == want.dtype and torch.equal(got, want), name


# --- the averages ------------------------------------------------------------------------------------------

SCHEDULES = {
    "warmup-defaults": dict(decay=0.99),
    "warmup-clipped-both-ends": dict(decay=0.9, power=0.75, min_decay=0.5, after=3, every=2),
    "no-warmup-after-every": dict(decay=0.8, warmup=False, after=2, every=3),
    "warmup-gamma-power": dict(decay=0.95, gamma=10.0, power=1.0, min_decay=0.1, after=5),
    "decay-zero": dict(decay=0.0, every=2),
}
TOLERANCE = {torch.float64: (1e-12, 1e-14), torch.float32: (2e-6, 1e-6)}


def ema_options(decay, *, warmup=True, gamma=1.0, power=2 / 3, min_decay=0.0, after=0, every=1):
    return dict(
        decay=decay,
        warmup=warmup,
        warmup_gamma=gamma,
        warmup_power=power,
        min_decay=min_decay,
        update_after_step=after,
        update_every=every,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_matches_a_float64_loop_over_the_steps(schedule, dtype):
    options = SCHEDULES[schedule]
    model = make_net(dtype)
    initial = tensors(model)
    ema = EMA(model, **ema_options(**options))
    snapshots = run(model, 30, ema)
    expected = reference_average(initial, snapshots, **options)
    assert_averages_close(ema, expected, rtol=TOLERANCE[dtype][0], atol=TOLERANCE[dtype][1])
    assert ema.num_updates == 30
    # batch norm's statistics are averaged, its step counter copied, the averages are not the weights
    assert {"1.running_mean", "1.running_var", "1.num_batches_tracked"} <= set(ema.averages)
    assert ema.averages["1.num_batches_tracked"].dtype == torch.int64
    if options["decay"] > 0:
        assert not torch.allclose(ema.averages["1.running_mean"], model[1].running_mean)
        assert not torch.allclose(ema.averages["0.weight"], model[0].weight)


def test_hand_worked_numbers():
    """A one-weight model set to t before call t; the averages and decays worked out by hand."""
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)

    def calls(ema, n):
        averages, decays = [], []
        for t in range(1, n + 1):
            with torch.no_grad():
                model.weight.fill_(float(t))
            ema.update(model)
            averages.append(ema.averages["weight"].item())
            decays.append(ema.current_decay())
        return averages, decays

    # calls 1, 2 copy; 3 averages (3 % 3 == 0): 0.5 * 2 + 0.5 * 3; 4, 5 skipped; 6: 0.5 * 2.5 + 0.5 * 6
    ema = EMA(model, decay=0.5, warmup=False, update_after_step=2, update_every=3)
    averages, decays = calls(ema, 6)
    assert averages == [1.0, 2.0, 2.5, 2.5, 2.5, 4.25]
    assert decays == [0.0, 0.0, 0.5, 0.5, 0.5, 0.5]
    # warm-up with power 1: 1 - 1 / (1 + k), clipped to [0.6, 0.9]
    ema = EMA(model, decay=0.9, warmup_power=1.0, min_decay=0.6)
    _, decays = calls(ema, 12)
    assert decays == pytest.approx([0.6, 2 / 3, 3 / 4, 4 / 5, 5 / 6, 6 / 7, 7 / 8, 8 / 9, 0.9, 0.9, 0.9, 0.9])
    # timm's defaults (gamma 1, power 2/3): the first update averages with 1 - 2 ** (-2/3)
    ema = EMA(nn.Linear(1, 1, bias=False), decay=0.9999)
    assert ema.current_decay() == 0.0
    ema.update(model)
    assert ema.current_decay() == pytest.approx(1 - 2 ** (-2 / 3))


@pytest.mark.parametrize("decay", [0.9, 0.999])
def test_matches_torch_averaged_model_bit_for_bit(decay):
    """AveragedModel copies on its first `update_parameters`: EMA with update_after_step=1 does the same."""
    model = make_net()
    ema = EMA(model, decay=decay, warmup=False, update_after_step=1)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(12):
        train_step(model, optimizer, step)
        ema.update(model)
        averaged.update_parameters(model)
    theirs = tensors(averaged.module)
    assert set(theirs) == set(ema.averages)
    for name, average in ema.averages.items():
        if average.is_floating_point():
            assert torch.equal(average, theirs[name]), name
    # AveragedModel blends the integer step counter too (and truncates); EMA copies it
    assert torch.equal(ema.averages["1.num_batches_tracked"], model[1].num_batches_tracked)
    # the averaged weights give AveragedModel's outputs
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    model.eval(), averaged.eval()
    with ema.average_parameters(model):
        assert torch.equal(model(x), averaged(x))
    # aligned the other way (update_after_step=0), the first update already averages: not the same
    model = make_net()
    ema = EMA(model, decay=decay, warmup=False)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    run(model, 2, ema)
    averaged.update_parameters(model)
    assert not torch.equal(ema.averages["0.weight"], averaged.module[0].weight)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_weights_are_averaged_in_float32(dtype):
    model = nn.Linear(4, 4, bias=False).to(dtype)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = EMA(model, decay=0.999, warmup=False)
    assert ema.averages["weight"].dtype == torch.float32
    up = torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(2.0, dtype=dtype))  # 1 + one ulp
    # the premise: in the weights' own dtype a 0.001 step towards the next value is lost to rounding
    one = torch.ones((), dtype=dtype)
    assert torch.equal(torch.lerp(one, up, 0.001), one)
    with torch.no_grad():
        model.weight.fill_(up.item())
    for _ in range(100):
        ema.update(model)
    ulp = up.item() - 1.0
    expected = 1.0 + ulp * (1 - 0.999**100)  # float64
    assert ema.averages["weight"].dtype == torch.float32
    # 100 float32 lerps, each rounded once: within 100 float32 half-ulps of 1
    torch.testing.assert_close(
        ema.averages["weight"].double(),
        torch.full((4, 4), expected, dtype=torch.float64),
        rtol=0,
        atol=100 * 2**-24,
    )
    assert (ema.averages["weight"] > 1.0 + (expected - 1.0) / 2).all()
    # copied back, the average is rounded to the weights' dtype
    model_copy = copy.deepcopy(model)
    ema.copy_to(model_copy)
    assert model_copy.weight.dtype == dtype
    assert torch.equal(model_copy.weight, torch.full((4, 4), expected, dtype=torch.float64).to(dtype))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_batch_norm_model_against_the_float64_loop(dtype):
    model = make_net(dtype)
    initial = tensors(model)
    options = dict(decay=0.95, min_decay=0.2, after=2, every=2)
    ema = EMA(model, **ema_options(**options))
    snapshots = run(model, 12, ema)
    assert {t.dtype for t in ema.averages.values()} == {torch.float32, torch.int64}
    # the reference starts from the same rounded half values; the EMA's own arithmetic is float32
    assert_averages_close(ema, reference_average(initial, snapshots, **options), rtol=2e-6, atol=1e-6)


# --- swapping the averages in and out ----------------------------------------------------------------------


def trained_net_with_ema(steps=6, **options):
    model = make_net()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    ema = EMA(model, decay=0.9, **options)
    run(model, steps, ema, optimizer=optimizer)
    return model, optimizer, ema


def test_average_parameters_swaps_in_place_and_restores_bit_for_bit():
    model, optimizer, ema = trained_net_with_ema()
    training = tensors(model)
    params = list(model.parameters())
    pointers = [p.data_ptr() for p in params]
    with ema.average_parameters(model) as swapped:
        assert swapped is model
        assert [id(p) for p in model.parameters()] == [id(p) for p in params]
        assert [p.data_ptr() for p in model.parameters()] == pointers
        assert all(p.requires_grad for p in model.parameters())
        for name, t in tensors(model).items():
            assert torch.equal(t, ema.averages[name]), name
            if t.is_floating_point():
                assert not torch.equal(t, training[name]), name
    for name, t in tensors(model).items():
        assert torch.equal(t, training[name]), name
    assert all(a is b for a, b in zip(optimizer.param_groups[0]["params"], model.parameters(), strict=True))


def test_average_parameters_restores_after_an_exception():
    model, _, ema = trained_net_with_ema()
    training = tensors(model)
    with pytest.raises(RuntimeError, match="evaluation failed"), ema.average_parameters(model):
        assert torch.equal(model[0].weight, ema.averages["0.weight"])
        raise RuntimeError("evaluation failed")
    for name, t in tensors(model).items():
        assert torch.equal(t, training[name]), name


def test_training_after_an_evaluation_with_the_averages_is_unchanged():
    """The optimizer keeps working on the same parameters: a run that evaluates the averages between steps
    ends bit-identical to one that does not."""
    model, optimizer, ema = trained_net_with_ema()
    twin = make_net()
    twin_optimizer = torch.optim.AdamW(twin.parameters(), lr=0.01)
    run(twin, 6, optimizer=twin_optimizer)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    for step in range(6, 10):
        model.eval()
        with ema.average_parameters(model), torch.no_grad():
            model(x)
        model.train()
        train_step(model, optimizer, step)
        ema.update(model)
        train_step(twin, twin_optimizer, step)
    for name, t in tensors(model).items():
        assert torch.equal(t, tensors(twin)[name]), name


def test_copy_to_overwrites_the_weights_for_good():
    model, optimizer, ema = trained_net_with_ema()
    averages = {name: t.clone() for name, t in ema.averages.items()}
    ema.copy_to(model)
    for name, t in tensors(model).items():
        assert torch.equal(t, averages[name]), name
    for name, t in ema.averages.items():
        assert torch.equal(t, averages[name]), name  # the EMA's own copies are untouched
    run(model, 2, ema, start=6, optimizer=optimizer)  # training goes on from the averages


# --- saving and resuming -----------------------------------------------------------------------------------

RESUME_OPTIONS = dict(decay=0.95, warmup_power=0.75, min_decay=0.3, update_after_step=2, update_every=2)


def test_state_dict_resumes_exactly(tmp_path):
    """N steps, save, M more, equals N + M uninterrupted: the averages, the count and the next decay."""
    n, m = 5, 6  # n odd: the resumed EMA must know where it is in update_every's cycle
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    uninterrupted, saved = EMA(model, **RESUME_OPTIONS), EMA(model, **RESUME_OPTIONS)
    for step in range(n):
        train_step(model, optimizer, step)
        uninterrupted.update(model)
        saved.update(model)
    torch.save(saved.state_dict(), tmp_path / "ema.pt")
    # resumed EMAs built from other weights: everything they need is in the state
    from_memory = EMA(make_net(seed=1), **RESUME_OPTIONS)
    from_memory.load_state_dict(saved.state_dict())
    from_file = EMA(make_net(seed=2), **RESUME_OPTIONS)
    from_file.load_state_dict(torch.load(tmp_path / "ema.pt", weights_only=True))
    for step in range(n, n + m):
        train_step(model, optimizer, step)
        for ema in (uninterrupted, from_memory, from_file):
            ema.update(model)
    for resumed in (from_memory, from_file):
        assert resumed.num_updates == uninterrupted.num_updates == n + m
        assert resumed.current_decay() == uninterrupted.current_decay()
        assert set(resumed.averages) == set(uninterrupted.averages)
        for name, average in uninterrupted.averages.items():
            assert torch.equal(resumed.averages[name], average), name


def test_mismatched_state_raises_and_changes_nothing():
    model, _, ema = trained_net_with_ema()
    before = {name: t.clone() for name, t in ema.averages.items()}
    other = EMA(nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5)))  # 5 outputs
    with pytest.raises(ValueError, match=re.escape("'3.weight' has shape (5, 8), the model's is (3, 8)")):
        ema.load_state_dict(other.state_dict())
    for name, t in ema.averages.items():  # the shapes are checked before anything is copied
        assert torch.equal(t, before[name]), name
    with pytest.raises(ValueError, match=re.escape("missing ['1.bias', '1.num_batches_tracked'")):
        ema.load_state_dict(EMA(nn.Sequential(nn.Linear(4, 8))).state_dict())
    state = ema.state_dict()
    with pytest.raises(ValueError, match=re.escape("unexpected ['extra']")):
        ema.load_state_dict({**state, "averages": {**state["averages"], "extra": torch.zeros(1)}})
    with pytest.raises(ValueError, match="'averages' and 'num_updates'"):
        ema.load_state_dict(model.state_dict())  # the model's own state, not the EMA's
    for name, t in ema.averages.items():
        assert torch.equal(t, before[name]), name
    assert ema.num_updates == 6
    with pytest.raises(ValueError, match=re.escape("lacks tensors this EMA averages: ['0.bias', '0.weight'")):
        ema.update(nn.Linear(4, 8))


# --- what is tracked ---------------------------------------------------------------------------------------


def test_trainable_only_skips_frozen_parameters():
    model = make_net()
    model[0].requires_grad_(False)
    ema = EMA(model, decay=0.9, trainable_only=True)
    everything = EMA(model, decay=0.9)
    assert set(everything.averages) - set(ema.averages) == {"0.weight", "0.bias"}
    assert {"1.running_mean", "1.num_batches_tracked", "3.weight"} <= set(ema.averages)  # buffers kept
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05)
    initial = tensors(model)
    snapshots = run(model, 5, ema, optimizer=optimizer)
    expected = reference_average(initial, snapshots, decay=0.9)
    del expected["0.weight"], expected["0.bias"]
    assert_averages_close(ema, expected, rtol=2e-6, atol=1e-6)
    frozen = model[0].weight.clone()
    with torch.no_grad():
        model[0].weight.add_(1.0)  # changed outside training: not an average, left alone
    with ema.average_parameters(model):
        assert torch.equal(model[0].weight, frozen + 1.0)
        assert torch.equal(model[3].weight, ema.averages["3.weight"])
    # a tracked parameter frozen later is still averaged (the choice is made at construction)
    model[3].requires_grad_(False)
    run(model, 2, ema, start=5, optimizer=optimizer)
    assert "3.weight" in ema.averages and ema.num_updates == 7


def test_tied_weights_are_averaged_once():
    model = transformers.GPT2LMHeadModel(
        transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, bos_token_id=0)
    )
    assert model.lm_head.weight is model.transformer.wte.weight
    ema = EMA(model)
    assert "transformer.wte.weight" in ema.averages and "lm_head.weight" not in ema.averages
    with ema.average_parameters(model):
        assert model.lm_head.weight is model.transformer.wte.weight


def test_distributed_data_parallel_is_looked_through(process_group):
    model = make_net()
    wrapped = nn.parallel.DistributedDataParallel(model)
    through, bare = EMA(wrapped, decay=0.9), EMA(model, decay=0.9)
    assert list(through.averages) == list(bare.averages)
    assert not any(name.startswith("module.") for name in through.averages)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.05, momentum=0.9)
    for step in range(5):
        train_step(wrapped, optimizer, step)
        through.update(wrapped)
        bare.update(model)
    for name, average in bare.averages.items():
        assert torch.equal(through.averages[name], average), name
    training = tensors(model)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    wrapped.eval()
    with through.average_parameters(wrapped) as swapped:
        assert swapped is wrapped
        assert torch.equal(model[0].weight, bare.averages["0.weight"])
        averaged_output = wrapped(x)
    for name, t in tensors(model).items():
        assert torch.equal(t, training[name]), name
    bare.copy_to(model)
    assert torch.equal(wrapped(x), averaged_output)
    # a state saved through the wrapper loads into the bare model's EMA
    EMA(make_net(seed=3)).load_state_dict(through.state_dict())


# --- a tiny BERT -------------------------------------------------------------------------------------------


def test_tiny_bert_trained_with_adamw(tmp_path):
    torch.manual_seed(0)
    config = bert_config(99, dropout=0.1, intermediate_size=37, max_position_embeddings=32, num_labels=2)
    model = transformers.BertForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    initial = tensors(model)
    ema = EMA(model, decay=0.9, update_after_step=1)
    # floating-point parameters averaged; integer buffers (position_ids, token_type_ids) copied
    assert set(ema.averages) == set(initial)
    assert ema.averages["bert.embeddings.position_ids"].dtype == torch.int64
    gen = torch.Generator().manual_seed(0)
    snapshots = []
    model.train()
    for _ in range(8):
        input_ids = torch.randint(1, 99, (4, 12), generator=gen)
        labels = (input_ids[:, 1] % 2).long()
        optimizer.zero_grad()
        model(input_ids=input_ids, labels=labels).loss.backward()
        optimizer.step()
        ema.update(model)
        snapshots.append(tensors(model))
    expected = reference_average(initial, snapshots, decay=0.9, after=1)
    assert_averages_close(ema, expected, rtol=2e-6, atol=1e-6)

    # evaluating the averages: the logits of a copy that holds the float64 reference averages
    model.eval()
    eval_ids = torch.randint(1, 99, (3, 12), generator=gen)
    training = tensors(model)
    with ema.average_parameters(model), torch.no_grad():
        logits = model(input_ids=eval_ids).logits
    reference = copy.deepcopy(model)
    loaded = reference.load_state_dict(
        {n: t.to(training[n].dtype) for n, t in expected.items()}, strict=False
    )
    assert not loaded.missing_keys  # the unexpected ones are the non-persistent buffers
    assert set(loaded.unexpected_keys) == {"bert.embeddings.position_ids", "bert.embeddings.token_type_ids"}
    with torch.no_grad():
        torch.testing.assert_close(logits, reference(input_ids=eval_ids).logits, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(logits, model(input_ids=eval_ids).logits)
    for name, t in tensors(model).items():
        assert torch.equal(t, training[name]), name

    # copy_to before save_pretrained: the saved model is the average
    ema.copy_to(reference)
    reference.save_pretrained(tmp_path)
    reloaded = transformers.BertForSequenceClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=eval_ids).logits, logits)


# --- bad options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("decay", 1.0),
        ("decay", -0.1),
        ("decay", 1.5),
        ("decay", math.nan),
        ("decay", "0.99"),
        ("decay", True),
        ("min_decay", -0.1),
        ("min_decay", 0.95),  # > decay=0.9
        ("warmup", "yes"),
        ("warmup", 1),
        ("warmup_gamma", 0.0),
        ("warmup_gamma", math.inf),
        ("warmup_power", -1.0),
        ("update_after_step", -1),
        ("update_after_step", 2.5),
        ("update_every", 0),
        ("update_every", 2.0),
        ("update_every", True),
        ("trainable_only", "no"),
    ],
)
def test_bad_options_raise_naming_the_value(name, value):
    options = {"decay": 0.9, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must .*got {re.escape(repr(value))}$"):
        EMA(nn.Linear(2, 2), **options)
