"""End to end with a Hugging Face causal LM: every registered objective trains a tiny GPT-2.

A two-layer GPT-2 is built from a `transformers` config with random weights (no download) and trained for
a few AdamW steps on fixed synthetic prompted sequences (prompt and padding labelled -100), once with the
objective's logits form on the model's shifted logits ``logits[:, :-1]`` (a non-contiguous view) and once
with its fused-linear form on the last hidden state and ``lm_head.weight``, which GPT-2 ties to the input
embedding. The cases come from the registry, so a newly registered objective is trained too. Cross-entropy
must also equal the model's built-in ``labels=`` loss, in value and in the gradients it sends into the model.
"""

from __future__ import annotations

import pytest
import torch
import transformers

from tiny_lm import make_gpt2, make_prompted_batch
from tunekit.losses import DeCELoss, cross_entropy, linear_cross_entropy
from tunekit.losses.registry import TOKEN_LOSSES

IGNORE = -100
VOCAB = 101  # a prime: the vocabulary is no multiple of a chunk size
PAD = 0
CYCLE = list(range(1, 13))  # responses walk this cycle of 12 ids; prompts draw from the other ids
BATCH, LENGTH = 16, 24
STEPS, LR = 25, 1e-2
DECREASE = 0.8  # the final loss must be below DECREASE x the initial one, both on the evaluation batch
EVAL_SEED = 10_000
FORMS = ["logits", "fused"]

# Training variants of registered objectives: (variant id, positional extra args or None for the registry's
# `extra_args`, keyword args). An objective not listed here is trained once with its registry defaults.
VARIANTS: dict[str, list[tuple[str, tuple | None, dict]]] = {
    "cross_entropy": [("plain", None, {}), ("smoothed", None, {"label_smoothing": 0.1})],
    "dece": [("epoch1", None, {}), ("epoch5", (5,), {}), ("epochs1-3", None, {})],
    "smile": [(subset, None, {"subset": subset}) for subset in ("sequence", "random", "reverse")],
}
# Variant "epochs1-3" advances the epoch with DeCELoss.set_epoch while training (STEPS split evenly) and is
# evaluated at the last epoch before and after training.
ADVANCING_EPOCHS = {"epochs1-3": 3}


def training_cases() -> list:
    cases = []
    for name, spec in sorted(TOKEN_LOSSES.items()):
        for variant, extra, kwargs in VARIANTS.get(name, [("default", None, {})]):
            args = spec.extra_args if extra is None else extra
            cases.append(pytest.param(name, variant, args, kwargs, id=f"{name}-{variant}"))
    return cases


def make_batch(seed: int) -> dict[str, torch.Tensor]:
    """BATCH sequences: a prompt of 3-8 ids (masked), a response of 6-14 ids walking CYCLE, padding."""
    return make_prompted_batch(
        seed,
        batch=BATCH,
        length=LENGTH,
        vocab=VOCAB,
        cycle=CYCLE,
        prompt_lengths=(3, 8),
        response_lengths=(6, 14),
    )


def make_model(seed: int = 0) -> transformers.GPT2LMHeadModel:
    model = make_gpt2(vocab=VOCAB, positions=64, dropout=0.0, seed=seed)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: the fused form gets the embedding
    return model


def shifted_logits(model, batch) -> torch.Tensor:
    """(B, N - 1, V) logits of next-token prediction: a non-contiguous view of the model's logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return logits[:, :-1]


def shifted_hidden(model, batch) -> torch.Tensor:
    """(B, N - 1, H) last hidden states (after the final layer norm) that the head turns into those logits."""
    out = model.transformer(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return out.last_hidden_state[:, :-1]


def objective_loss(model, batch, form: str, name: str, args: tuple, kwargs: dict) -> torch.Tensor:
    """The objective on next-token prediction: position t is scored against labels[:, t + 1]."""
    spec = TOKEN_LOSSES[name]
    target = batch["labels"][:, 1:]
    if form == "logits":
        return spec.function(shifted_logits(model, batch), target, *args, **kwargs)
    return spec.linear_function(shifted_hidden(model, batch), model.lm_head.weight, target, *args, **kwargs)


def with_generator(kwargs: dict, generator: torch.Generator) -> dict:
    """SMILE's "random" subset draws its candidates from `generator`."""
    return {**kwargs, "generator": generator} if kwargs.get("subset") == "random" else kwargs


def evaluate(model, batch, form, name, args, kwargs) -> float:
    kwargs = with_generator(kwargs, torch.Generator().manual_seed(EVAL_SEED))  # the same draws every time
    with torch.no_grad():
        return objective_loss(model, batch, form, name, args, kwargs).item()


def builtin_loss(model, batch, **kwargs) -> torch.Tensor:
    """transformers' own causal-LM loss (it shifts the labels itself)."""
    return model(**batch, **kwargs).loss


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("name", "variant", "args", "kwargs"), training_cases())
def test_objective_trains_gpt2(name, variant, args, kwargs, form):
    model = make_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    eval_batch = make_batch(EVAL_SEED)
    epochs = ADVANCING_EPOCHS.get(variant)
    dece = DeCELoss() if epochs else None
    eval_args = (epochs,) if epochs else args

    initial = evaluate(model, eval_batch, form, name, eval_args, kwargs)
    train_kwargs = with_generator(kwargs, torch.Generator().manual_seed(0))
    for step in range(STEPS):
        if dece is not None:
            dece.set_epoch(1 + step * epochs // STEPS)
            args = (dece.epoch,)
        loss = objective_loss(model, make_batch(step), form, name, args, train_kwargs)
        assert torch.isfinite(loss), f"step {step}: loss {loss.item()}"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    assert dece is None or dece.epoch == epochs
    final = evaluate(model, eval_batch, form, name, eval_args, kwargs)

    assert final < DECREASE * initial, f"{name}-{variant} ({form}): {initial:.4f} -> {final:.4f}"
    if name == "cross_entropy" and not kwargs.get("label_smoothing"):  # the trained model, too
        with torch.no_grad():
            assert final == pytest.approx(builtin_loss(model, eval_batch).item(), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_cross_entropy_equals_builtin_loss(form):
    model = make_model(seed=1)
    batch = make_batch(seed=7)
    # Hugging Face's gradient-accumulation convention: the summed loss over the global batch's token count
    num_items = torch.tensor(3 * int((batch["labels"][:, 1:] != IGNORE).sum()))
    with torch.no_grad():
        expected = builtin_loss(model, batch).item()
        expected_accumulated = builtin_loss(model, batch, num_items_in_batch=num_items).item()
        ours = objective_loss(model, batch, form, "cross_entropy", (), {}).item()
        ours_accumulated = objective_loss(
            model, batch, form, "cross_entropy", (), {"num_items_in_batch": num_items}
        ).item()
    assert ours == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert ours_accumulated == pytest.approx(expected_accumulated, rel=1e-5, abs=1e-6)
    assert ours_accumulated == pytest.approx(ours / 3, rel=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_cross_entropy_gradients_equal_builtin_loss(form):
    """Every parameter's gradient, the tied embedding and head included, equals the built-in loss's."""
    batch = make_batch(seed=3)
    model = make_model(seed=2)
    builtin_loss(model, batch).backward()
    expected = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    target = batch["labels"][:, 1:]
    if form == "logits":
        loss = cross_entropy(shifted_logits(model, batch), target)
    else:
        loss = linear_cross_entropy(shifted_hidden(model, batch), model.lm_head.weight, target)
    loss.backward()

    for name, p in model.named_parameters():
        assert p.grad is not None, f"no gradient reached {name}"
        scale = expected[name].abs().max().item()
        torch.testing.assert_close(p.grad, expected[name], rtol=1e-5, atol=1e-5 * max(scale, 1e-8), msg=name)
