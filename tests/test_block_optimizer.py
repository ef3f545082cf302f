"""`tunekit.tricks.BlockOptimizer` (BAdam) against BAdam written out by hand, and against the `badam` package.

The hand-written reference: for each block of the schedule, a fresh AdamW over that layer's parameters with
the same two param groups (matrices: lr 1e-2, weight decay 0.1; the rest: lr 3e-3, no decay), stepped
`SWITCH` times, every parameter requiring grad. `BlockOptimizer` wraps one AdamW built over the whole model
with those groups; after two rounds the parameters must be the reference's.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
import transformers
from torch import nn

from tiny_models import bert_config, gpt2_config, llama_config
from tunekit.tricks import EMA, BlockOptimizer

VOCAB = 50
LAYERS = 3
SWITCH = 2
GROUPS = ({"lr": 1e-2, "weight_decay": 0.1}, {"lr": 3e-3, "weight_decay": 0.0})


def gpt2() -> nn.Module:
    return transformers.GPT2LMHeadModel(gpt2_config(VOCAB, n_layer=LAYERS))


def llama(**overrides) -> nn.Module:
    return transformers.LlamaForCausalLM(llama_config(VOCAB, num_hidden_layers=LAYERS, **overrides))


def bert() -> nn.Module:
    return transformers.BertForSequenceClassification(
        bert_config(VOCAB, num_hidden_layers=LAYERS, num_labels=3)
    )


# architecture -> (model builder, the prefix of layer i)
MODELS: dict[str, tuple[Callable[[], nn.Module], str]] = {
    "gpt2": (gpt2, "transformer.h.{}."),
    "llama": (llama, "model.layers.{}."),
    "bert": (bert, "bert.encoder.layer.{}."),
}


def batch(step: int, classification: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, VOCAB, (3, 7), generator=generator)
    labels = torch.randint(0, 3, (3,), generator=generator) if classification else ids
    return {"input_ids": ids, "labels": labels}


def loss_of(model: nn.Module, step: int) -> torch.Tensor:
    return model(**batch(step, isinstance(model, transformers.BertForSequenceClassification))).loss


def two_groups(named: list[tuple[str, nn.Parameter]]) -> list[dict]:
    """The matrices in group 0, the rest in group 1 (each with GROUPS' lr and weight decay)."""
    matrices = [p for _, p in named if p.ndim >= 2]
    rest = [p for _, p in named if p.ndim < 2]
    return [
        {"params": params, **options}
        for params, options in zip((matrices, rest), GROUPS, strict=True)
        if params
    ]


def built(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[arch][0]()


def train(optimizer: BlockOptimizer, model: nn.Module, steps: range) -> list[str]:
    """Step `optimizer` over `steps`; the active block's name at each step."""
    seen = []
    for step in steps:
        seen.append(optimizer.blocks[optimizer.active_block].name)
        loss_of(model, step).backward()
        optimizer.step()
        optimizer.zero_grad()
    return seen


def badam_by_hand(model: nn.Module, layer_prefix: str, schedule: list[int]) -> None:
    """BAdam written out: per block of `schedule`, a fresh AdamW over its parameters for SWITCH steps."""
    named = list(model.named_parameters())
    for position, layer in enumerate(schedule):
        block = [(n, p) for n, p in named if n.startswith(layer_prefix.format(layer))]
        optimizer = torch.optim.AdamW(two_groups(block))
        for step in range(position * SWITCH, (position + 1) * SWITCH):
            model.zero_grad(set_to_none=True)
            loss_of(model, step).backward()
            optimizer.step()


def assert_same_parameters(actual: nn.Module, expected: nn.Module) -> None:
    for (name, a), (_, e) in zip(actual.named_parameters(), expected.named_parameters(), strict=True):
        torch.testing.assert_close(a, e, rtol=1e-6, atol=1e-7, msg=name)


@pytest.mark.parametrize("order", ["ascending", "descending", "random"])
@pytest.mark.parametrize("arch", sorted(MODELS))
def test_block_optimizer_makes_the_updates_of_badam_by_hand(arch, order):
    model, reference = built(arch), built(arch)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = BlockOptimizer(
        model,
        torch.optim.AdamW(two_groups(list(model.named_parameters()))),
        switch_every=SWITCH,
        order=order,
        seed=3,
    )
    assert len(optimizer.blocks) == LAYERS
    seen = train(optimizer, model, range(2 * LAYERS * SWITCH))
    # each block trained for exactly SWITCH steps in a row; each round visits every block once
    schedule = [int(name.rsplit(".", 1)[1]) for name in seen[::SWITCH]]
    assert seen == [name for name in seen[::SWITCH] for _ in range(SWITCH)]
    for round_ in (schedule[:LAYERS], schedule[LAYERS:]):
        assert sorted(round_) == list(range(LAYERS))
    if order != "random":
        step = 1 if order == "ascending" else -1
        assert schedule == list(range(LAYERS))[::step] * 2
    badam_by_hand(reference, MODELS[arch][1], schedule)
    assert_same_parameters(model, reference)
    # the embeddings and the head stayed frozen (BAdam's default)
    outside = [n for n, _ in model.named_parameters() if "embed" in n or "wte" in n or "classifier" in n]
    assert outside and all(torch.equal(dict(model.named_parameters())[n], initial[n]) for n in outside)


def test_a_new_random_permutation_each_round_from_the_seed():
    orders = []
    for seed in (0, 0, 1):
        model = built("llama", seed=0)
        optimizer = BlockOptimizer(
            model, torch.optim.SGD(model.parameters(), lr=0.1), switch_every=1, seed=seed
        )
        orders.append(train(optimizer, model, range(4 * LAYERS)))
    assert orders[0] == orders[1] != orders[2]
    rounds = [tuple(orders[0][i : i + LAYERS]) for i in range(0, 4 * LAYERS, LAYERS)]
    assert len(set(rounds)) > 1  # not one permutation repeated


@pytest.mark.filterwarnings("ignore:BAdam expect model:UserWarning")  # it warns about fp32 weights
def test_matches_the_badam_package_up_to_its_first_block_off_by_one():
    """`badam` 1.4 (one param group, a Llama, ascending): its first block gets one step fewer, because it
    counts steps from 0 and switches when (steps + 1) is a multiple of the period; started at -1 it gives
    every block the same number of steps, and then both make the same updates."""
    import badam

    ours, theirs = built("llama"), built("llama")
    optimizer = BlockOptimizer(
        ours,
        torch.optim.AdamW(ours.parameters(), lr=1e-2, weight_decay=0.1),
        switch_every=SWITCH,
        order="ascending",
    )
    package = badam.BlockOptimizer(
        torch.optim.AdamW(theirs.parameters(), lr=1e-2, weight_decay=0.1),
        list(theirs.named_parameters()),
        switch_block_every=SWITCH,
        switch_mode="ascending",
        verbose=0,
    )
    package.global_step = -1  # the documented off-by-one, undone
    steps = range(2 * LAYERS * SWITCH)
    train(optimizer, ours, steps)
    for step in steps:
        loss_of(theirs, step).backward()
        package.step()
        theirs.zero_grad(set_to_none=True)
    assert_same_parameters(ours, theirs)


def test_only_the_active_block_requires_grad_and_holds_optimizer_state():
    model = built("gpt2")
    optimizer = BlockOptimizer(
        model, torch.optim.AdamW(model.parameters()), switch_every=SWITCH, order="ascending"
    )
    named = dict(model.named_parameters())
    for step in range(LAYERS * SWITCH):
        block = optimizer.blocks[optimizer.active_block]
        assert {n for n, p in named.items() if p.requires_grad} == set(block.param_names)
        loss_of(model, step).backward()
        assert {n for n, p in named.items() if p.grad is not None} == set(block.param_names)
        optimizer.step()
        optimizer.zero_grad()
        if optimizer.steps_in_block:  # the step did not switch: the block's state is there
            assert set(map(id, optimizer.state)) == {id(named[n]) for n in block.param_names}
        else:  # switched: the old block's state is freed, the new one's not made yet
            assert len(optimizer.state) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_resume_mid_block_continues_exactly(dtype):
    """Saved after 5 steps (mid-block, random order), loaded into a new model and optimizer built with
    another seed: the next 7 steps are those of the run that never stopped."""
    model = built("llama").to(dtype)
    through = BlockOptimizer(
        model, torch.optim.AdamW(two_groups(list(model.named_parameters()))), switch_every=SWITCH, seed=5
    )
    train(through, model, range(5))
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": through.state_dict()}, buffer)
    train(through, model, range(5, 12))

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed = built("llama", seed=1).to(dtype)
    resumed.load_state_dict(saved["model"])
    optimizer = BlockOptimizer(
        resumed, torch.optim.AdamW(two_groups(list(resumed.named_parameters()))), switch_every=SWITCH, seed=9
    )
    optimizer.load_state_dict(saved["optimizer"])
    assert optimizer.steps_in_block == 1  # 5 steps: two blocks of 2, then 1 step into the third
    train(optimizer, resumed, range(5, 12))
    for (name, a), (_, e) in zip(resumed.named_parameters(), model.named_parameters(), strict=True):
        assert torch.equal(a, e), name
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in through.param_groups]


def test_half_precision_weights_get_fp32_master_copies_only_while_active():
    model = built("llama").to(torch.bfloat16)
    optimizer = BlockOptimizer(
        model, torch.optim.AdamW(model.parameters(), lr=1e-3), switch_every=SWITCH, order="ascending"
    )
    named = dict(model.named_parameters())
    for step in range(SWITCH + 1):
        block = optimizer.blocks[optimizer.active_block].param_names
        loss_of(model, step).backward()
        optimizer.step()
        optimizer.zero_grad()
    # one step into the second block: the masters are its parameters' alone, in fp32, and hold the weights
    masters = optimizer.state_dict()["block_schedule"]["masters"]
    assert len(masters) == len(block) and all(m.dtype == torch.float32 for m in masters.values())
    state_params = list(optimizer.base_optimizer.state)
    assert all(p.dtype == torch.float32 for p in state_params) and len(state_params) == len(block)
    for name in block:
        assert named[name].dtype == torch.bfloat16
    # a 1e-3 AdamW step is below bf16's rounding for most weights: the master copy keeps it
    master = next(iter(masters.values()))
    assert master.to(torch.bfloat16).equal(named[block[0]]) and not master.equal(named[block[0]].float())


def test_lr_schedulers_and_per_group_hyperparameters_are_kept():
    model = built("gpt2")
    optimizer = BlockOptimizer(
        model,
        torch.optim.AdamW(two_groups(list(model.named_parameters()))),
        switch_every=1,
        order="ascending",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5**step)
    train_and_schedule = 3
    for step in range(train_and_schedule):
        loss_of(model, step).backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    lrs = [g["lr"] for g in optimizer.base_optimizer.param_groups]
    assert lrs == pytest.approx([GROUPS[0]["lr"] / 8, GROUPS[1]["lr"] / 8])
    assert [g["weight_decay"] for g in optimizer.base_optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("outside", ["blocks", "trainable"])
def test_parameters_outside_the_layers_as_blocks_or_always_trained(outside):
    model = built("llama")
    optimizer = BlockOptimizer(
        model,
        torch.optim.AdamW(model.parameters()),
        switch_every=1,
        order="ascending",
        outside_layers=outside,
    )
    named = dict(model.named_parameters())
    embedding = "model.embed_tokens.weight"
    if outside == "blocks":
        assert [b.name for b in optimizer.blocks] == [
            "embeddings",
            "model.layers.0",
            "model.layers.1",
            "model.layers.2",
            "head",
        ]
        assert optimizer.blocks[-1].param_names == ("model.norm.weight", "lm_head.weight")
        assert named[embedding].requires_grad and not named["model.layers.0.mlp.up_proj.weight"].requires_grad
    else:
        assert len(optimizer.blocks) == LAYERS
        train(optimizer, model, range(2))
        # trained at every step: its state is kept across the switch (2 steps taken)
        assert named[embedding].requires_grad
        assert int(optimizer.state[named[embedding]]["step"]) == 2


def test_blocks_and_layer_of_by_hand():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1))
    by_prefix = BlockOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        blocks=[["0", "1.weight"], ["2"]],
        order="ascending",
    )
    assert [b.param_names for b in by_prefix.blocks] == [
        ("0.weight", "0.bias", "1.weight"),
        ("2.weight", "2.bias"),
    ]
    assert not model[1].bias.requires_grad  # in no block: outside, frozen
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 1))
    by_depth = BlockOptimizer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        layer_of=lambda name: int(name[0]) or None,
        order="ascending",
    )
    assert [b.param_names for b in by_depth.blocks] == [("1.weight", "1.bias"), ("2.weight", "2.bias")]


def test_parameters_frozen_before_wrapping_stay_frozen():
    model = built("llama")
    model.model.layers[1].requires_grad_(False)  # e.g. the base weights under LoRA
    optimizer = BlockOptimizer(
        model, torch.optim.AdamW(model.parameters()), switch_every=1, order="ascending"
    )
    assert [b.name for b in optimizer.blocks] == ["model.layers.0", "model.layers.2"]
    train(optimizer, model, range(3))
    assert not any(p.requires_grad for p in model.model.layers[1].parameters())


def test_ema_and_block_optimizer_together():
    """EMA built before or after the BlockOptimizer averages every parameter: the frozen ones are averaged
    too (they move when their block's turn comes)."""
    model = built("gpt2")
    optimizer = BlockOptimizer(
        model, torch.optim.AdamW(model.parameters(), lr=1e-2), switch_every=1, order="ascending"
    )
    ema = EMA(model, 0.5, warmup=False)
    assert set(ema.averages) >= {n for n, _ in model.named_parameters()}
    for step in range(LAYERS):
        loss_of(model, step).backward()
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
    for name, param in model.named_parameters():
        if name.startswith("transformer.h."):
            assert not torch.equal(ema.averages[name], param), name


def test_refusals():
    model = built("llama")
    adamw = torch.optim.AdamW(model.parameters())
    for options, match in [
        ({"switch_every": 0}, "switch_every must be an integer >= 1"),
        ({"order": "up"}, "order must be one of"),
        ({"outside_layers": "all"}, "outside_layers must be one of"),
        ({"blocks": [["model.layers.0"]], "layer_of": lambda n: 1}, "layer_of or blocks"),
        ({"blocks": [["nothing"]]}, r"blocks\[0\] = \['nothing'\] names no trained parameter"),
        ({"blocks": [["model.layers.0"], ["model.layers.0.mlp"]]}, "is in blocks\\[0\\] and blocks\\[1\\]"),
        ({"seed": 1.5}, "seed must be an integer"),
    ]:
        with pytest.raises(ValueError, match=match):
            BlockOptimizer(model, adamw, **options)
    with pytest.raises(ValueError, match="not parameters of the model"):
        BlockOptimizer(model, torch.optim.AdamW([nn.Parameter(torch.zeros(2))]))
    with pytest.raises(ValueError, match="cannot find the layers"):
        linear = nn.Linear(2, 2)
        BlockOptimizer(linear, torch.optim.AdamW(linear.parameters()))
    with pytest.raises(ValueError, match="LBFGS"):
        BlockOptimizer(model, torch.optim.LBFGS(model.parameters()))
    optimizer = BlockOptimizer(model, adamw, switch_every=3)
    with pytest.raises(ValueError, match="not a BlockOptimizer state"):
        optimizer.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())
    second = built("llama")
    other = BlockOptimizer(second, torch.optim.AdamW(second.parameters()), switch_every=4)
    with pytest.raises(ValueError, match="switch_every=3"):
        other.load_state_dict(optimizer.state_dict())


def test_lora_adapters_are_trained_one_layer_at_a_time():
    """Under PEFT's LoRA the trained parameters are the adapters: one block per layer's adapters, the base
    weights never unfrozen."""
    import peft

    model = peft.get_peft_model(built("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = BlockOptimizer(
        model, torch.optim.AdamW(trainable, lr=1e-2), switch_every=1, order="ascending"
    )
    assert [b.name for b in optimizer.blocks] == [f"base_model.model.model.layers.{i}" for i in range(LAYERS)]
    assert all(".lora_" in name for block in optimizer.blocks for name in block.param_names)
    train(optimizer, model, range(LAYERS))
    for name, param in model.named_parameters():
        if name in base:
            assert not param.requires_grad and torch.equal(param, base[name]), name


def test_ddp_without_find_unused_parameters_is_refused(process_group):
    model = built("llama")
    ddp = nn.parallel.DistributedDataParallel(model)
    with pytest.raises(ValueError, match="find_unused_parameters=True"):
        BlockOptimizer(ddp, torch.optim.AdamW(model.parameters()))
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    BlockOptimizer(ddp, torch.optim.AdamW(model.parameters()))


def test_a_refused_state_changes_nothing_and_blocks_may_be_a_generator():
    model = built("llama").to(torch.bfloat16)
    saved = BlockOptimizer(model, torch.optim.AdamW(model.parameters()), switch_every=3, order="ascending")
    train(saved, model, range(4))  # into the second block
    state = saved.state_dict()
    other = built("llama")  # fp32: no master copies to load the saved ones into
    optimizer = BlockOptimizer(
        other, torch.optim.AdamW(other.parameters()), switch_every=3, order="ascending"
    )
    with pytest.raises(ValueError, match="master copies"):
        optimizer.load_state_dict(state)
    assert (optimizer.active_block, optimizer.steps_in_block) == (0, 0)
    assert other.model.layers[0].mlp.up_proj.weight.requires_grad
    prefixes = (f"model.layers.{i}" for i in range(LAYERS))
    fresh = built("llama")
    by_generator = BlockOptimizer(
        fresh, torch.optim.AdamW(fresh.parameters()), blocks=([p] for p in prefixes)
    )
    assert len(by_generator.blocks) == LAYERS


def test_state_held_before_wrapping_is_dropped_and_copies_work():
    """Every block starts with fresh state; copy.deepcopy keeps the schedule (torch.optim.Optimizer's own
    pickling keeps only its three attributes)."""
    import copy

    model = built("gpt2")
    adamw = torch.optim.AdamW(model.parameters())
    loss_of(model, 0).backward()
    adamw.step()
    optimizer = BlockOptimizer(model, adamw, switch_every=2, order="ascending")
    assert len(optimizer.state) == 0
    train(optimizer, model, range(3))
    twin = copy.deepcopy(optimizer)
    assert (twin.active_block, twin.steps_in_block, twin.blocks) == (1, 1, optimizer.blocks)
