"""Layer-wise learning-rate decay (`tunekit.tricks.layer_decay_param_groups`) on tiny Hugging Face models.

Ten architectures (BERT, RoBERTa, DeBERTa-v2, ELECTRA, XLNet, GPT-2, Llama, Mistral, Qwen2, T5) are built from
configs with random weights (hidden size 32, 2 layers per stack, 2 heads, vocabulary 99; nothing downloaded).
For each, the test states by hand which parameter names are the embeddings (depth 0), which are block i of
which stack, and which form the head; the groups must put every trainable parameter in exactly one group with

    lr = lr * layer_decay ** (L + 1 - depth)    (embeddings depth 0, block i depth i, L blocks in all)
    lr = head_lr (lr unless given)              (head)

and no weight decay on biases and norm weights. Real optimizer steps check that the groups' ``lr`` and
``weight_decay`` are what torch's SGD / AdamW and a `transformers` scheduler use. Then ``layer_of`` for models
whose names it cannot read, frozen parameters, DistributedDataParallel and bad options.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable

import pytest
import torch
import transformers
from torch import nn

from tiny_models import gpt2_config, llama_config, t5_config, tiny_config
from tunekit.tricks import layer_decay_param_groups

VOCAB, BATCH, LENGTH, NUM_LABELS = 99, 2, 8, 3
LR, DECAY, WEIGHT_DECAY = 0.1, 0.5, 0.01
# what differs from tiny_models.SIZES; every model keeps its library's default dropout (passed on to the GPT-2
# and T5 builders, which would turn it off)
SMALL = dict(intermediate_size=37, max_position_embeddings=64, pad_token_id=0)


@dataclasses.dataclass
class Arch:
    """A tiny model and, written out by hand, where each of its parameters belongs.

    embeddings: name prefixes at depth 0. stacks: (ModuleList prefix, number of blocks), in depth order.
    between: name prefix -> depth, for parameters between two stacks. head: name prefixes of the head.
    """

    build: Callable[[], nn.Module]
    task: str  # "classify", "lm" or "seq2seq"
    embeddings: tuple[str, ...]
    stacks: tuple[tuple[str, int], ...]
    head: tuple[str, ...]
    between: dict[str, int] = dataclasses.field(default_factory=dict)

    def expected_depth(self, name: str) -> int | None:
        """The depth the test expects for `name` (None: the head); fails unless exactly one rule claims it."""
        claims = []
        if name.startswith(self.embeddings):
            claims.append(0)
        offset = 0
        for prefix, size in self.stacks:
            match = re.match(rf"{re.escape(prefix)}\.(\d+)\.", name)
            if match:
                claims.append(offset + int(match[1]) + 1)
            offset += size
        claims += [depth for prefix, depth in self.between.items() if name.startswith(prefix)]
        if name.startswith(self.head):
            claims.append(None)
        assert len(claims) == 1, f"{name}: the test's map gives {claims}"
        return claims[0]

    @property
    def num_layers(self) -> int:
        return sum(size for _, size in self.stacks)


def _classifier(model_cls, config_cls, **config):
    return lambda: model_cls(tiny_config(config_cls, VOCAB, **{**SMALL, "num_labels": NUM_LABELS, **config}))


ARCHS = {
    "bert": Arch(
        _classifier(transformers.BertForSequenceClassification, transformers.BertConfig),
        "classify",
        embeddings=("bert.embeddings.",),
        stacks=(("bert.encoder.layer", 2),),
        head=("bert.pooler.", "classifier."),
    ),
    "roberta": Arch(
        _classifier(transformers.RobertaForSequenceClassification, transformers.RobertaConfig),
        "classify",
        embeddings=("roberta.embeddings.",),
        stacks=(("roberta.encoder.layer", 2),),
        head=("classifier.",),
    ),
    # The encoder's relative-position embeddings and their norm are registered after the blocks, so by the
    # documented rule they are in the head (full lr), although every block reads them.
    "deberta_v2": Arch(
        _classifier(
            transformers.DebertaV2ForSequenceClassification,
            transformers.DebertaV2Config,
            relative_attention=True,
            position_biased_input=False,
            pos_att_type=["p2c", "c2p"],
            norm_rel_ebd="layer_norm",
            max_relative_positions=16,
            position_buckets=8,
        ),
        "classify",
        embeddings=("deberta.embeddings.",),
        stacks=(("deberta.encoder.layer", 2),),
        head=("deberta.encoder.rel_embeddings.", "deberta.encoder.LayerNorm.", "pooler.", "classifier."),
    ),
    # embedding_size != hidden_size: the projection to the hidden size sits with the embeddings
    "electra": Arch(
        _classifier(
            transformers.ElectraForSequenceClassification, transformers.ElectraConfig, embedding_size=16
        ),
        "classify",
        embeddings=("electra.embeddings.", "electra.embeddings_project."),
        stacks=(("electra.encoder.layer", 2),),
        head=("classifier.",),
    ),
    "xlnet": Arch(
        lambda: transformers.XLNetForSequenceClassification(
            transformers.XLNetConfig(
                vocab_size=VOCAB,
                d_model=32,
                n_layer=2,
                n_head=2,
                d_inner=37,
                num_labels=NUM_LABELS,
                pad_token_id=0,
            )
        ),
        "classify",
        embeddings=("transformer.mask_emb", "transformer.word_embedding."),
        stacks=(("transformer.layer", 2),),
        head=("sequence_summary.", "logits_proj."),
    ),
    # the LM head is tied to wte: one parameter, at depth 0
    "gpt2": Arch(
        lambda: transformers.GPT2LMHeadModel(gpt2_config(VOCAB, n_positions=64, dropout=0.1)),
        "lm",
        embeddings=("transformer.wte.", "transformer.wpe."),
        stacks=(("transformer.h", 2),),
        head=("transformer.ln_f.",),
    ),
    "llama": Arch(
        lambda: transformers.LlamaForCausalLM(llama_config(VOCAB, **SMALL, num_key_value_heads=1)),
        "lm",
        embeddings=("model.embed_tokens.",),
        stacks=(("model.layers", 2),),
        head=("model.norm.", "lm_head."),
    ),
    "mistral": Arch(
        lambda: transformers.MistralForCausalLM(
            tiny_config(transformers.MistralConfig, VOCAB, **SMALL, num_key_value_heads=1)
        ),
        "lm",
        embeddings=("model.embed_tokens.",),
        stacks=(("model.layers", 2),),
        head=("model.norm.", "lm_head."),
    ),
    "qwen2": Arch(
        _classifier(
            transformers.Qwen2ForSequenceClassification, transformers.Qwen2Config, num_key_value_heads=1
        ),
        "classify",
        embeddings=("model.embed_tokens.",),
        stacks=(("model.layers", 2),),
        head=("model.norm.", "score."),
    ),
    # `shared` is the encoder's and decoder's embedding and the tied LM head: one parameter, at depth 0.
    # The encoder's final norm sits between the stacks, at the depth of the last encoder block.
    "t5": Arch(
        lambda: transformers.T5ForConditionalGeneration(t5_config(VOCAB, d_ff=37, dropout=0.1)),
        "seq2seq",
        embeddings=("shared.",),
        stacks=(("encoder.block", 2), ("decoder.block", 2)),
        between={"encoder.final_layer_norm.": 2},
        head=("decoder.final_layer_norm.",),
    ),
}


def build(arch_name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ARCHS[arch_name].build()


def batch(arch: Arch, seed: int = 1) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, VOCAB, (BATCH, LENGTH), generator=gen)
    if arch.task == "classify":
        return {"input_ids": input_ids, "labels": torch.randint(NUM_LABELS, (BATCH,), generator=gen)}
    if arch.task == "lm":
        return {"input_ids": input_ids, "labels": input_ids}
    return {"input_ids": input_ids, "labels": torch.randint(1, VOCAB, (BATCH, 5), generator=gen)}


def trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def expected_lr(arch: Arch, depth: int | None, head_lr: float | None = None) -> float:
    if depth is None:
        return LR if head_lr is None else head_lr
    return LR * DECAY ** (arch.num_layers + 1 - depth)


def group_of(groups: list[dict]) -> dict[str, dict]:
    return {name: group for group in groups for name in group["param_names"]}


def assert_partition(model: nn.Module, groups: list[dict]) -> None:
    """Every trainable parameter in exactly one group, nothing else; the names match the tensors."""
    ids = [id(p) for group in groups for p in group["params"]]
    assert len(ids) == len(set(ids)), "a parameter is in two groups"
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
    named = trainable(model)
    for group in groups:
        assert len(group["param_names"]) == len(group["params"])
        for name, param in zip(group["param_names"], group["params"], strict=True):
            assert named[name] is param


# --- the groups of each architecture -----------------------------------------------------------------------


@pytest.mark.parametrize("arch_name", list(ARCHS))
@pytest.mark.parametrize("head_lr", [None, 0.3])
def test_groups_follow_the_depths(arch_name, head_lr):
    arch, model = ARCHS[arch_name], build(arch_name)
    groups = layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY, head_lr=head_lr)
    assert_partition(model, groups)
    where = group_of(groups)
    for name in trainable(model):
        depth = arch.expected_depth(name)
        assert where[name]["layer"] == ("head" if depth is None else depth), name
        assert where[name]["lr"] == pytest.approx(expected_lr(arch, depth, head_lr), rel=1e-12), name
    lrs = [group["lr"] for group in groups]
    # the embeddings' lr is the lowest, lr * decay ** (L + 1); the top block's lr * decay
    assert min(lrs) == pytest.approx(LR * DECAY ** (arch.num_layers + 1), rel=1e-12)
    assert [g["lr"] for g in groups if g["layer"] == arch.num_layers] == pytest.approx([LR * DECAY] * 2)
    assert {g["lr"] for g in groups if g["layer"] == "head"} == {LR if head_lr is None else head_lr}
    assert all(group["params"] for group in groups)  # no empty groups
    assert [g["layer"] for g in groups] == sorted(
        (g["layer"] for g in groups), key=lambda layer: math.inf if layer == "head" else layer
    )


@pytest.mark.parametrize("arch_name", list(ARCHS))
def test_no_weight_decay_on_biases_and_norms(arch_name):
    model = build(arch_name)
    where = group_of(layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY))
    names = set(trainable(model))
    checked = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param_name, param in module.named_parameters(recurse=False):
            name = prefix + param_name
            if name not in names:
                continue  # a tied parameter, listed under its first name
            is_norm = "norm" in type(module).__name__.lower()
            if is_norm or (param_name == "bias" and param.ndim == 1):
                assert where[name]["weight_decay"] == 0.0, name
                checked.add(name)
            elif isinstance(module, (nn.Linear, nn.Embedding, transformers.Conv1D)):
                assert where[name]["weight_decay"] == WEIGHT_DECAY, name
                checked.add(name)
    assert len(checked) > len(names) / 2
    # the documented rule, for every parameter
    for name, param in trainable(model).items():
        assert where[name]["weight_decay"] == (WEIGHT_DECAY if param.ndim >= 2 else 0.0), name


@pytest.mark.parametrize("arch_name", list(ARCHS))
def test_sgd_step_moves_each_parameter_by_its_group_lr(arch_name):
    """torch's SGD (no momentum) reads each group's plain ``lr`` and ``weight_decay``:
    p_new = p - lr_group * (grad + wd_group * p)."""
    arch, model = ARCHS[arch_name], build(arch_name)
    groups = layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY, head_lr=0.2)
    optimizer = torch.optim.SGD(groups, lr=123.0)  # the default lr is never used
    before = {name: p.detach().clone() for name, p in trainable(model).items()}
    model(**batch(arch)).loss.backward()
    grads = {name: p.grad.clone() for name, p in trainable(model).items() if p.grad is not None}
    optimizer.step()
    where = group_of(groups)
    for name, param in trainable(model).items():
        if name not in grads:
            torch.testing.assert_close(param.detach(), before[name], rtol=0, atol=0)
            continue
        group = where[name]
        update = group["lr"] * (grads[name] + group["weight_decay"] * before[name])
        torch.testing.assert_close(param.detach(), before[name] - update, rtol=1e-6, atol=1e-7, msg=name)
    # an embedding row moves decay ** (L + 1) / head_lr times as far per unit of gradient as a head weight
    embedding = next(
        name for name in grads if arch.expected_depth(name) == 0 and trainable(model)[name].ndim >= 2
    )
    assert where[embedding]["lr"] == pytest.approx(LR * DECAY ** (arch.num_layers + 1))
    heads = [name for name in grads if arch.expected_depth(name) is None]
    assert heads and all(where[name]["lr"] == 0.2 for name in heads)


def test_adamw_and_a_transformers_schedule_use_the_group_lrs():
    """AdamW takes the groups as they are; a `transformers` schedule (as the Trainer builds one) scales every
    group's own lr by the same factor, so the decay between layers holds through the schedule."""
    arch, model = ARCHS["llama"], build("llama")
    groups = layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY)
    initial = [group["lr"] for group in groups]
    optimizer = torch.optim.AdamW(groups, lr=123.0, weight_decay=123.0)
    assert [g["lr"] for g in optimizer.param_groups] == initial
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.0, WEIGHT_DECAY}
    schedule = transformers.get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=2, num_training_steps=10
    )
    before = {name: p.detach().clone() for name, p in trainable(model).items()}
    for step in range(1, 4):
        optimizer.zero_grad()
        model(**batch(arch, seed=step)).loss.backward()
        optimizer.step()
        schedule.step()
        factor = min(step / 2, (10 - step) / 8)
        for group, lr in zip(optimizer.param_groups, initial, strict=True):
            assert group["lr"] == pytest.approx(lr * factor, rel=1e-12)
    assert all(not torch.equal(p, before[name]) for name, p in trainable(model).items())
    # the optimizer state round-trips with the groups' extra keys (layer, param_names)
    state = optimizer.state_dict()
    assert [g["layer"] for g in state["param_groups"]] == [g["layer"] for g in groups]
    torch.optim.AdamW(layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY)).load_state_dict(
        state
    )


# --- frozen parameters, layer_of, wrappers -----------------------------------------------------------------


def test_frozen_parameters_are_left_out():
    arch, model = ARCHS["bert"], build("bert")
    model.bert.embeddings.requires_grad_(False)
    model.bert.encoder.layer[0].attention.requires_grad_(False)
    groups = layer_decay_param_groups(model, LR, DECAY, weight_decay=WEIGHT_DECAY)
    assert_partition(model, groups)
    names = set(group_of(groups))
    assert not any(name.startswith(("bert.embeddings.", "bert.encoder.layer.0.attention.")) for name in names)
    assert "bert.encoder.layer.0.intermediate.dense.weight" in names
    # the remaining blocks keep their depths and lrs
    for name, group in group_of(groups).items():
        assert group["lr"] == pytest.approx(expected_lr(arch, arch.expected_depth(name)), rel=1e-12)
    assert 0 not in {group["layer"] for group in groups}


def test_all_frozen_raises():
    model = build("bert").requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        layer_decay_param_groups(model, LR, DECAY)


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def test_unreadable_names_raise_unless_layer_of_is_given():
    model = mlp()
    with pytest.raises(ValueError, match=r"cannot find the layers.*layer_of"):
        layer_decay_param_groups(model, LR, DECAY)
    depth = {"0": 0, "2": 1, "4": None}  # the first Linear as the "embedding", the last as the head
    groups = layer_decay_param_groups(
        model, LR, DECAY, weight_decay=WEIGHT_DECAY, layer_of=lambda n: depth[n[0]]
    )
    assert_partition(model, groups)
    got = {(g["layer"], g["lr"], g["weight_decay"], tuple(g["param_names"])) for g in groups}
    assert got == {
        (0, LR * DECAY**2, WEIGHT_DECAY, ("0.weight",)),
        (0, LR * DECAY**2, 0.0, ("0.bias",)),
        (1, LR * DECAY, WEIGHT_DECAY, ("2.weight",)),
        (1, LR * DECAY, 0.0, ("2.bias",)),
        ("head", LR, WEIGHT_DECAY, ("4.weight",)),
        ("head", LR, 0.0, ("4.bias",)),
    }
    # layer_of overrides the names a model's blocks would give
    model = build("bert")
    groups = layer_decay_param_groups(
        model, LR, DECAY, layer_of=lambda name: 0 if "embeddings" in name else None
    )
    assert {g["layer"] for g in groups} == {0, "head"}
    assert {g["lr"] for g in groups} == {LR * DECAY, LR}


@pytest.mark.parametrize("bad", [-1, 1.0, 0.5, "1", True, [1]], ids=repr)
def test_layer_of_returning_a_bad_value_raises(bad):
    with pytest.raises(ValueError, match=re.escape(f"got {bad!r}")):
        layer_decay_param_groups(mlp(), LR, DECAY, layer_of=lambda name: 1 if name.startswith("2") else bad)


def test_distributed_data_parallel_gives_the_same_groups(process_group):
    model = build("bert")
    wrapped = nn.parallel.DistributedDataParallel(model)
    bare, through = layer_decay_param_groups(model, LR, DECAY), layer_decay_param_groups(wrapped, LR, DECAY)
    assert [g["param_names"] for g in through] == [g["param_names"] for g in bare]
    assert not any(name.startswith("module.") for group in through for name in group["param_names"])
    for a, b in zip(bare, through, strict=True):
        assert [id(p) for p in a["params"]] == [id(p) for p in b["params"]]
        assert (a["lr"], a["weight_decay"], a["layer"]) == (b["lr"], b["weight_decay"], b["layer"])
    optimizer = torch.optim.SGD(through, lr=1.0)
    wrapped(**batch(ARCHS["bert"])).loss.backward()
    optimizer.step()


# --- bad options -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lr": 0.0},
        {"lr": -1e-3},
        {"lr": math.inf},
        {"lr": math.nan},
        {"lr": "1e-3"},
        {"layer_decay": 0.0},
        {"layer_decay": 1.5},
        {"layer_decay": -0.5},
        {"layer_decay": True},
        {"weight_decay": -0.01},
        {"weight_decay": math.inf},
        {"head_lr": 0.0},
        {"head_lr": -1.0},
        {"head_lr": "big"},
    ],
    ids=lambda kwargs: "-".join(f"{k}={v!r}" for k, v in kwargs.items()),
)
def test_bad_options_raise_naming_the_value(kwargs):
    args = {"lr": LR, "layer_decay": DECAY, **kwargs}
    lr, layer_decay = args.pop("lr"), args.pop("layer_decay")
    ((name, value),) = kwargs.items()
    with pytest.raises(ValueError, match=rf"{name} must .*got {re.escape(repr(value))}"):
        layer_decay_param_groups(build("bert"), lr, layer_decay, **args)


def test_layer_decay_one_gives_every_layer_the_same_lr():
    model = build("gpt2")
    groups = layer_decay_param_groups(model, LR, 1.0, weight_decay=WEIGHT_DECAY)
    assert {g["lr"] for g in groups} == {LR}
    assert_partition(model, groups)
