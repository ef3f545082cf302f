"""Pooling of hidden states (`tunekit.tricks.pooling`) against naive loops, and the pooled classifier
(`tunekit.hf.pooled_classifier`) on tiny BERT, RoBERTa, XLNet and T5 encoders built from configs.

The naive references loop over rows and over each row's real tokens in float64. The masks are ragged on
purpose: full rows, right padding, left padding (XLNet's), a row with holes and a row of padding only.
"""

from __future__ import annotations

import types

import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
import transformers

from tiny_models import bert_config, t5_config, tiny_config
from tunekit.hf.pooled_classifier import PooledClassifier, encoder_hidden_size
from tunekit.tricks.adversarial import FGM
from tunekit.tricks.pooling import (
    POOLING_KINDS,
    AttentionPooling,
    Pooler,
    attention_pool,
    cls_pool,
    last_k_cls_pool,
    max_pool,
    mean_pool,
)

# ------------------------------------------------------------------------------------------------ data

# one row each: full, right padding, left padding, holes, all padding, a single real token
MASK = torch.tensor(
    [
        [1, 1, 1, 1, 1, 1, 1],
        [1, 1, 1, 0, 0, 0, 0],
        [0, 0, 0, 0, 1, 1, 1],
        [0, 1, 0, 1, 1, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0],
    ]
)
B, N, H = MASK.shape[0], MASK.shape[1], 5


def make_hidden(dtype=torch.float64, seed=0, requires_grad=False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, N, H, generator=gen, dtype=torch.float64) * 3).to(dtype)
    return hidden.requires_grad_(requires_grad)


def real_tokens(mask: torch.Tensor, b: int) -> list[int]:
    return [n for n in range(mask.shape[1]) if mask[b, n] != 0]


def naive_mean(hidden, mask):
    out = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.float64)
    for b in range(hidden.shape[0]):
        tokens = real_tokens(mask, b)
        for h in range(hidden.shape[2]):
            total = 0.0
            for n in tokens:
                total += float(hidden[b, n, h])
            out[b, h] = total / len(tokens) if tokens else 0.0
    return out


def naive_max(hidden, mask):
    out = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.float64)
    for b in range(hidden.shape[0]):
        tokens = real_tokens(mask, b)
        for h in range(hidden.shape[2]):
            out[b, h] = max(float(hidden[b, n, h]) for n in tokens) if tokens else 0.0
    return out


def naive_cls(hidden, mask, position):
    out = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.float64)
    for b in range(hidden.shape[0]):
        tokens = real_tokens(mask, b)
        if tokens:
            out[b] = hidden[b, tokens[0] if position == "first" else tokens[-1]].double()
    return out


def naive_attention(hidden, scores, mask):
    out = torch.zeros(hidden.shape[0], hidden.shape[2], dtype=torch.float64)
    for b in range(hidden.shape[0]):
        tokens = real_tokens(mask, b)
        if not tokens:
            continue
        top = max(float(scores[b, n]) for n in tokens)
        weights = {n: torch.exp(torch.tensor(float(scores[b, n]) - top, dtype=torch.float64)) for n in tokens}
        total = sum(weights.values())
        for n in tokens:
            out[b] += weights[n] / total * hidden[b, n].double()
    return out


def assert_close64(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-12) -> None:
    torch.testing.assert_close(actual.detach().double(), expected, rtol=rtol, atol=rtol * 10)


# ------------------------------------------------------------------------------ parameter-free pooling


def test_mean_pool_matches_loops():
    hidden = make_hidden()
    pooled = mean_pool(hidden, MASK)
    assert pooled.shape == (B, H) and pooled.dtype == torch.float64
    assert_close64(pooled, naive_mean(hidden, MASK))
    assert torch.equal(pooled[4], torch.zeros(H)), "an all-padding row must pool to zeros"


def test_max_pool_matches_loops():
    hidden = make_hidden()
    pooled = max_pool(hidden, MASK)
    assert pooled.shape == (B, H)
    assert torch.equal(pooled.double(), naive_max(hidden, MASK))  # a max is exact
    assert torch.isfinite(pooled).all()


@pytest.mark.parametrize("position", ["first", "last"])
def test_cls_pool_takes_the_first_or_last_real_token(position):
    hidden = make_hidden()
    pooled = cls_pool(hidden, MASK, position=position)
    assert torch.equal(pooled, naive_cls(hidden, MASK, position))
    # without a mask: index 0 / N - 1
    expected = hidden[:, 0] if position == "first" else hidden[:, -1]
    assert torch.equal(cls_pool(hidden, position=position), expected)


def test_no_mask_and_mask_dtypes_agree():
    hidden = make_hidden()
    ones = torch.ones(B, N, dtype=torch.long)
    for pool in (mean_pool, max_pool, cls_pool):
        assert torch.equal(pool(hidden), pool(hidden, ones))
        by_int = pool(hidden, MASK)
        assert torch.equal(pool(hidden, MASK.bool()), by_int)
        assert torch.equal(pool(hidden, MASK.float()), by_int)


@pytest.mark.parametrize("kind", POOLING_KINDS)
def test_all_padding_rows_give_zeros_and_finite_gradients(kind):
    torch.manual_seed(0)
    hidden = make_hidden(torch.float32, requires_grad=True)
    mask = torch.zeros(B, N, dtype=torch.long)
    mask[0, :3] = 1  # one row with tokens, the rest padding only
    pooler = Pooler(kind, H, num_layers=2)
    layers = (hidden * 0.5, hidden)
    pooled = pooler(hidden, mask, hidden_states=layers)
    assert torch.isfinite(pooled).all()
    assert torch.equal(pooled[1:], torch.zeros_like(pooled[1:]))
    pooled.pow(2).sum().backward()
    assert torch.isfinite(hidden.grad).all()
    for param in pooler.parameters():
        assert torch.isfinite(param.grad).all()


def test_padding_may_hold_nan():
    """Padding may hold anything, NaN included, without reaching the result."""
    hidden = make_hidden()
    poisoned = torch.where(MASK.bool().unsqueeze(-1), hidden, float("nan"))
    for pool in (mean_pool, max_pool, cls_pool):
        assert torch.equal(pool(poisoned, MASK), pool(hidden, MASK))
    scores = torch.randn(B, N, dtype=torch.float64)
    assert torch.equal(attention_pool(poisoned, scores, MASK), attention_pool(hidden, scores, MASK))


# ---------------------------------------------------------------------------------- attention pooling


def test_attention_pool_matches_loops():
    hidden = make_hidden()
    scores = torch.randn(B, N, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 4
    assert_close64(attention_pool(hidden, scores, MASK), naive_attention(hidden, scores, MASK))
    # equal scores: the mean of the real tokens
    assert_close64(
        attention_pool(hidden, torch.zeros(B, N, dtype=torch.float64), MASK), naive_mean(hidden, MASK)
    )


def test_attention_pooling_module_scores_with_its_mlp():
    torch.manual_seed(0)
    module = AttentionPooling(H, attention_size=3).double()
    hidden = make_hidden()
    with torch.no_grad():
        scores = torch.tanh(hidden @ module.project.weight.T + module.project.bias) @ module.score.weight[0]
    assert_close64(module(hidden, MASK), naive_attention(hidden, scores, MASK))


def test_attention_pooling_ignores_padding_and_trains():
    torch.manual_seed(0)
    module = AttentionPooling(H)
    hidden = make_hidden(torch.float32, requires_grad=True)
    pooled = module(hidden, MASK)
    padded = ~MASK.bool()
    changed = torch.where(padded.unsqueeze(-1), torch.randn(B, N, H) * 100, hidden.detach())
    assert torch.equal(module(changed, MASK), pooled.detach())

    pooled.pow(2).sum().backward()
    assert module.project.weight.grad.abs().sum() > 0 and module.score.weight.grad.abs().sum() > 0
    assert torch.equal(hidden.grad[padded], torch.zeros_like(hidden.grad[padded]))
    real_rows = MASK.bool().any(1)
    assert (hidden.grad[real_rows].abs().sum(-1)[MASK.bool()[real_rows]] > 0).all()


# ----------------------------------------------------------------------------------- half precision


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", POOLING_KINDS)
def test_half_precision_inputs(kind, dtype):
    torch.manual_seed(0)
    pooler = Pooler(kind, H, num_layers=2)  # fp32 parameters, as under mixed precision
    hidden = make_hidden(dtype)
    layers = (hidden.flip(1), hidden)
    pooled = pooler(hidden, MASK, hidden_states=layers)
    assert pooled.dtype == dtype
    # the same pooling of the same (rounded) values in fp32, rounded once at the end
    expected = pooler(hidden.float(), MASK, hidden_states=tuple(t.float() for t in layers)).to(dtype)
    torch.testing.assert_close(pooled, expected, rtol=0, atol=0)


def test_half_precision_mean_sums_in_fp32():
    """128 tokens of 1000: the fp16 sum (128000) overflows fp16's 65504, the fp32 one does not."""
    hidden = torch.full((1, 128, 2), 1000.0, dtype=torch.float16)
    assert torch.isinf(hidden.sum(1)).all()
    pooled = mean_pool(hidden, torch.ones(1, 128))
    assert pooled.dtype == torch.float16
    assert torch.equal(pooled, torch.full((1, 2), 1000.0, dtype=torch.float16))
    module = AttentionPooling(2)
    assert torch.equal(module(hidden), pooled)


# ---------------------------------------------------------------------- last k layers of a real BERT


def tiny_bert(hidden_size=16, layers=3, seed=0) -> transformers.BertModel:
    config = bert_config(
        40,
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    torch.manual_seed(seed)
    return transformers.BertModel(config).eval()


def test_last_k_cls_concatenates_bert_layers():
    bert = tiny_bert()
    ids = torch.randint(3, 40, (B, N), generator=torch.Generator().manual_seed(0))
    right_padded = torch.tensor([[1] * N, [1] * 3 + [0] * 4, [1] * 5 + [0] * 2])
    with torch.no_grad():
        states = bert(ids[:3], attention_mask=right_padded, output_hidden_states=True).hidden_states
    assert len(states) == 4  # embeddings + 3 layers
    pooled = last_k_cls_pool(states, right_padded, num_layers=3)
    assert pooled.shape == (3, 3 * 16)
    assert torch.equal(pooled, torch.cat([states[-1][:, 0], states[-2][:, 0], states[-3][:, 0]], dim=-1))
    pooler = Pooler("last_k_cls", 16, num_layers=3)
    assert pooler.output_size == 48 and pooler.needs_hidden_states
    assert torch.equal(pooler(states[-1], right_padded, hidden_states=states), pooled)
    # all four states, the embeddings last
    assert torch.equal(last_k_cls_pool(states, num_layers=4)[:, 48:], states[0][:, 0])


def test_pooler_calls_the_functions():
    torch.manual_seed(0)
    hidden = make_hidden(torch.float32)
    assert Pooler("mean", H)(hidden, MASK).equal(mean_pool(hidden, MASK))
    assert Pooler("max", H)(hidden, MASK).equal(max_pool(hidden, MASK))
    assert Pooler("cls", H, cls_position="last")(hidden, MASK).equal(cls_pool(hidden, MASK, position="last"))
    attention = Pooler("attention", H)
    assert attention(hidden, MASK).equal(attention.attention(hidden, MASK))
    assert {Pooler(kind, H).output_size for kind in POOLING_KINDS if kind != "last_k_cls"} == {H}
    assert "kind='cls'" in repr(Pooler("cls", H))


# ----------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Pooler("sum", 8), "'sum'"),
        (lambda: Pooler("mean", 0), "hidden_size.*0"),
        (lambda: Pooler("last_k_cls", 8, num_layers=0), "num_layers.*0"),
        (lambda: Pooler("cls", 8, cls_position="middle"), "'middle'"),
        (lambda: AttentionPooling(8, attention_size=-2), "attention_size.*-2"),
        (lambda: mean_pool(torch.zeros(2, 3)), r"\(B, N, H\).*\(2, 3\)"),
        (lambda: max_pool(torch.zeros(2, 3, 4, dtype=torch.long)), "torch.int64"),
        (lambda: mean_pool(torch.zeros(2, 0, 4)), r"\(2, 0, 4\)"),
        (lambda: mean_pool(torch.zeros(2, 3, 4), torch.ones(2, 4)), r"\(2, 4\)"),
        (lambda: cls_pool(torch.zeros(2, 3, 4), position="middle"), "'middle'"),
        (lambda: last_k_cls_pool((torch.zeros(2, 3, 4),) * 2, num_layers=3), "num_layers=3"),
        (lambda: last_k_cls_pool(torch.zeros(2, 3, 4), num_layers=1), "torch.float32 tensor"),
        (lambda: last_k_cls_pool((torch.zeros(2, 3, 4), torch.zeros(2, 3, 5)), num_layers=2), r"\(2, 3, 5\)"),
        (lambda: attention_pool(torch.zeros(2, 3, 4), torch.zeros(2, 4)), r"\(2, 3\).*\(2, 4\)"),
        (lambda: Pooler("last_k_cls", 4)(torch.zeros(2, 3, 4)), "output_hidden_states=True"),
    ],
)
def test_bad_arguments_raise_value_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# =================================================================================== pooled classifier

VOCAB, LENGTH, NUM_LABELS = 40, 12, 3
SPLIT = 22  # the easy task: which half of the vocabulary a sequence's ids come from
T5_SIZES = {"d_model": 12, "d_kv": 6, "d_ff": 24}


def bert_encoder():
    config = bert_config(
        VOCAB, hidden_size=16, intermediate_size=32, max_position_embeddings=LENGTH, pad_token_id=0
    )
    return transformers.AutoModel.from_config(config)


def roberta_encoder():
    config = tiny_config(
        transformers.RobertaConfig,
        VOCAB,
        hidden_size=24,
        intermediate_size=32,
        max_position_embeddings=LENGTH + 2,  # RoBERTa's positions start after the pad id
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=1,
    )
    return transformers.AutoModel.from_config(config)


def xlnet_encoder():
    return transformers.AutoModel.from_config(
        transformers.XLNetConfig(vocab_size=VOCAB, d_model=20, n_layer=2, n_head=2, d_inner=32, dropout=0.0)
    )


def t5_encoder():
    return transformers.T5EncoderModel(t5_config(VOCAB, **T5_SIZES))


# name: (encoder factory, its hidden size, pad id, padding side)
ENCODERS = {
    "bert": (bert_encoder, 16, 0, "right"),
    "roberta": (roberta_encoder, 24, 1, "right"),
    "xlnet": (xlnet_encoder, 20, 0, "left"),
    "t5": (t5_encoder, 12, 0, "right"),
}


def make_batch(name: str, seed: int, batch: int = 8) -> dict[str, torch.Tensor]:
    """Sequences of 3-LENGTH random content ids, padded on the encoder's side with its pad id. The easy
    task: label 1 sequences draw their ids from [4, SPLIT), label 0 ones from [SPLIT, VOCAB)."""
    _, _, pad, side = ENCODERS[name]
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.full((batch, LENGTH), pad)
    attention_mask = torch.zeros(batch, LENGTH, dtype=torch.long)
    labels = torch.arange(batch) % 2
    for b in range(batch):
        n = int(torch.randint(3, LENGTH + 1, (), generator=gen))
        low, high = (4, SPLIT) if labels[b] else (SPLIT, VOCAB)
        content = torch.randint(low, high, (n,), generator=gen)
        span = slice(0, n) if side == "right" else slice(LENGTH - n, LENGTH)
        input_ids[b, span] = content
        attention_mask[b, span] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_classifier(name: str, pooling: str, num_labels: int = NUM_LABELS, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    factory = ENCODERS[name][0]
    return PooledClassifier(factory(), num_labels, pooling=pooling, dropout=0.0, num_layers=2, **kwargs)


@pytest.mark.parametrize("pooling", POOLING_KINDS)
@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_classifier_shapes_and_loss(name, pooling):
    model = make_classifier(name, pooling).eval()
    hidden_size = ENCODERS[name][1]
    assert model.pooler.hidden_size == hidden_size == encoder_hidden_size(model.encoder.config)
    assert model.pooler.output_size == (2 * hidden_size if pooling == "last_k_cls" else hidden_size)
    batch = make_batch(name, seed=1)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2, 1])
    out = model(batch["input_ids"], batch["attention_mask"], labels=labels)
    assert isinstance(out, transformers.modeling_outputs.SequenceClassifierOutput)
    assert out.logits.shape == (8, NUM_LABELS) and torch.isfinite(out.logits).all()
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, labels), rtol=1e-6, atol=1e-7)
    assert model(batch["input_ids"], batch["attention_mask"]).loss is None


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_classifier_regression_loss_is_mse(name):
    model = make_classifier(name, "mean", num_labels=1).eval()
    batch = make_batch(name, seed=2)
    targets = torch.linspace(-1, 1, 8)
    out = model(batch["input_ids"], batch["attention_mask"], labels=targets)
    assert out.logits.shape == (8, 1)
    torch.testing.assert_close(out.loss, F.mse_loss(out.logits.squeeze(-1), targets))


def test_classifier_multi_label_loss_is_bce():
    model = make_classifier("bert", "max").eval()
    batch = make_batch("bert", seed=2)
    labels = (torch.arange(8 * NUM_LABELS).reshape(8, NUM_LABELS) % 3 == 0).float()
    out = model(batch["input_ids"], batch["attention_mask"], labels=labels)
    torch.testing.assert_close(out.loss, F.binary_cross_entropy_with_logits(out.logits, labels))


@pytest.mark.parametrize("name", sorted(ENCODERS))
@pytest.mark.parametrize("pooling", ["mean", "max", "cls", "attention"])
def test_classifier_honours_the_attention_mask(name, pooling):
    """Other ids at padded positions leave the logits as they are."""
    model = make_classifier(name, pooling).eval()
    batch = make_batch(name, seed=3)
    padded = batch["attention_mask"] == 0
    assert padded.any()
    other_ids = torch.where(padded, torch.randint(4, VOCAB, padded.shape), batch["input_ids"])
    with torch.no_grad():
        logits = model(batch["input_ids"], batch["attention_mask"]).logits
        torch.testing.assert_close(model(other_ids, batch["attention_mask"]).logits, logits)


def test_xlnet_cls_is_the_last_real_token_on_either_side():
    """XLNet's summary token ends the sequence: with left padding (its tokenizer's) it is at N - 1, with
    right padding at the last real position; both give the same logits (XLNet has relative positions)."""
    model = make_classifier("xlnet", "cls").eval()
    assert model.pooler.cls_position == "last"
    assert make_classifier("bert", "cls").pooler.cls_position == "first"
    left = make_batch("xlnet", seed=4)
    lengths = left["attention_mask"].sum(1)
    right_ids = torch.zeros_like(left["input_ids"])
    right_mask = torch.zeros_like(left["attention_mask"])
    for b, n in enumerate(lengths.tolist()):
        right_ids[b, :n] = left["input_ids"][b, LENGTH - n :]
        right_mask[b, :n] = 1
    with torch.no_grad():
        logits_left = model(left["input_ids"], left["attention_mask"]).logits
        logits_right = model(right_ids, right_mask).logits
        hidden = model.encoder(input_ids=left["input_ids"], attention_mask=left["attention_mask"])[0]
    torch.testing.assert_close(logits_right, logits_left, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_left, model.classifier(hidden[:, -1]))


def test_hidden_states_are_requested_only_for_last_k_cls():
    seen = []

    def record(module, args, kwargs):
        seen.append(kwargs.get("output_hidden_states", False))

    for pooling in POOLING_KINDS:
        model = make_classifier("bert", pooling)
        model.encoder.register_forward_pre_hook(record, with_kwargs=True)
        batch = make_batch("bert", seed=5)
        model(batch["input_ids"], batch["attention_mask"])
    assert seen == [kind == "last_k_cls" for kind in POOLING_KINDS]
    # the layers requested for the pooling are not returned unless asked for
    batch = make_batch("bert", seed=5)
    model = make_classifier("bert", "last_k_cls")
    assert model(batch["input_ids"], batch["attention_mask"]).hidden_states is None
    asked = model(batch["input_ids"], batch["attention_mask"], output_hidden_states=True).hidden_states
    assert len(asked) == 3


def test_from_config_and_from_pretrained(tmp_path):
    bert = bert_encoder()
    bert.save_pretrained(tmp_path / "bert")
    model = PooledClassifier.from_pretrained(tmp_path / "bert", 2, pooling="cls")
    for (name, loaded), original in zip(
        model.encoder.state_dict().items(), bert.state_dict().values(), strict=True
    ):
        assert torch.equal(loaded, original), name
    assert model.classifier.out_features == 2

    # an encoder-decoder config keeps the encoder only, which runs without decoder inputs
    config = t5_config(VOCAB, **T5_SIZES, num_layers=1, dropout=0.1)  # T5's default dropout
    model = PooledClassifier.from_config(config, 2, pooling="mean")
    assert not any(name.startswith("decoder") for name, _ in model.named_parameters())
    batch = make_batch("t5", seed=6)
    assert model(batch["input_ids"], batch["attention_mask"]).logits.shape == (8, 2)


def test_fgm_finds_the_encoders_token_embeddings():
    model = PooledClassifier(bert_encoder(), 2)
    assert model.get_input_embeddings() is model.encoder.embeddings.word_embeddings
    assert FGM(model).param_names == ("encoder.embeddings.word_embeddings.weight",)


def test_hidden_size_is_read_from_the_config():
    assert encoder_hidden_size(types.SimpleNamespace(hidden_size=7)) == 7
    assert encoder_hidden_size(types.SimpleNamespace(d_model=9)) == 9
    assert encoder_hidden_size(types.SimpleNamespace(hidden_size=None, n_embd=11)) == 11
    with pytest.raises(ValueError, match=r"hidden size.*hidden_size="):
        encoder_hidden_size(types.SimpleNamespace(vocab_size=10))

    class Plain(torch.nn.Module):  # a custom encoder: no config, its size given
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, 6)

        def forward(self, input_ids, attention_mask=None):
            return (self.embed(input_ids),)

    with pytest.raises(ValueError, match="hidden_size="):
        PooledClassifier(Plain(), 2)
    model = PooledClassifier(Plain(), 2, hidden_size=6, pooling="max")
    assert model(torch.tensor([[4, 5, 0]]), torch.tensor([[1, 1, 0]])).logits.shape == (1, 2)
    with pytest.raises(ValueError, match="size 6, the pooler expects 8"):
        PooledClassifier(Plain(), 2, hidden_size=8)(torch.tensor([[4, 5]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_labels": 0}, "num_labels.*0"),
        ({"dropout": 1.0}, "dropout.*1.0"),
        ({"pooling": "sum"}, "'sum'"),
        ({"problem_type": "ranking"}, "'ranking'"),
        ({"cls_position": "middle"}, "'middle'"),
    ],
)
def test_classifier_bad_arguments(kwargs, match):
    kwargs = {"num_labels": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        PooledClassifier(bert_encoder(), **kwargs)


def test_classifier_bad_labels():
    model = make_classifier("bert", "mean")
    batch = make_batch("bert", seed=7)
    with pytest.raises(ValueError, match=r"\(8,\) integer labels"):
        model(batch["input_ids"], batch["attention_mask"], labels=torch.zeros(8, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"encoder must be an nn\.Module"):
        PooledClassifier("bert-base-uncased", 2)


# ------------------------------------------------------------------------------ the Hugging Face Trainer

TRAIN_STEPS = 30
# pooling trained per encoder: each kind once, cls on XLNet (its last token)
TRAINED = {"bert": "last_k_cls", "roberta": "attention", "xlnet": "cls", "t5": "mean"}


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, batch: dict[str, torch.Tensor]):
        self.batch = batch

    def __len__(self):
        return len(self.batch["labels"])

    def __getitem__(self, i):
        return {key: value[i] for key, value in self.batch.items()}


@pytest.mark.parametrize("name", sorted(TRAINED))
def test_trainer_trains_the_pooled_classifier(name, tmp_path):
    model = make_classifier(name, TRAINED[name], num_labels=2)
    train = make_batch(name, seed=10, batch=TRAIN_STEPS * 16)  # one epoch: every batch is new
    held_out = make_batch(name, seed=11, batch=32)

    def held_out_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**held_out).loss.item()

    initial = held_out_loss()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        max_steps=TRAIN_STEPS,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        warmup_steps=0,
        save_strategy="no",
        logging_steps=TRAIN_STEPS,
        disable_tqdm=True,
        seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=ListDataset(train))
    result = trainer.train()
    assert result.global_step == TRAIN_STEPS
    final = held_out_loss()
    assert final < 0.5 * initial, f"{name}: held-out loss {initial:.4f} -> {final:.4f}"
    # the Trainer's evaluation reads the same loss from the output
    metrics = trainer.evaluate(ListDataset(held_out))
    assert metrics["eval_loss"] == pytest.approx(final, rel=1e-5)


@pytest.mark.parametrize("name", ["bert", "t5"])
def test_trainer_saves_a_state_dict_that_reloads(name, tmp_path):
    """T5 built from its config keeps the encoder stack only: no tensor under two names for safetensors."""
    config = ENCODERS[name][0]().config
    torch.manual_seed(0)
    model = PooledClassifier.from_config(config, 2, pooling="attention")
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        report_to=[],
        use_cpu=True,
        max_steps=2,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=ListDataset(make_batch(name, seed=12))
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    state = safetensors.torch.load_file(str(tmp_path / "final" / "model.safetensors"))
    fresh = PooledClassifier.from_config(config, 2, pooling="attention")
    fresh.load_state_dict(state)
    batch = make_batch(name, seed=13)
    with torch.no_grad():
        expected = model.eval()(batch["input_ids"], batch["attention_mask"]).logits
        assert torch.equal(fresh.eval()(batch["input_ids"], batch["attention_mask"]).logits, expected)
