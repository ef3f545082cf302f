"""Decoding inspection on real tiny models: a GPT-2 (briefly trained on standard-library docstrings) and a
T5 with random weights, both built from configs, with a locally trained byte-level BPE tokenizer.

Every number tunekit reports is checked against an independent computation: per-step probabilities against
softmax of a manual forward pass on the prompt plus the tokens generated so far, generate's log-probs
(compute_transition_scores) against a teacher-forced forward pass, beam scores against the length-penalised
sum of the model's log-probs.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import transformers

from tiny_lm import make_gpt2
from tiny_models import t5_config
from tiny_tokenizer import bpe_tokenizer, stdlib_text
from tunekit.decoding import (
    DEFAULT_STRATEGIES,
    Decoded,
    Strategy,
    compare_strategies,
    decode,
    format_comparison,
    format_steps,
    format_token_log_probs,
    score_continuation,
    score_generated,
    sequence_log_prob,
    token_log_probs,
)

PROMPT = "Return the value of"
NEW = 8  # max_new_tokens
ATOL = 2e-5  # cached incremental decoding vs one full forward pass, float32
SAMPLE = Strategy("sample", {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0})  # no warper
MODELS = ["gpt2", "t5"]


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer(300)


@pytest.fixture(scope="module")
def gpt2(tokenizer):
    """A 2-layer GPT-2 trained for 40 steps on docstrings, so its continuations are mostly English."""
    model = make_gpt2(vocab=len(tokenizer), positions=64, dropout=0.0, seed=0)
    ids = torch.tensor(tokenizer(" ".join(stdlib_text(60)))["input_ids"])
    chunks = ids[: len(ids) // 32 * 32].view(-1, 32)  # [num_chunks, 32]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = chunks[torch.randint(len(chunks), (16,), generator=generator)]
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="module")
def t5(tokenizer):
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(t5_config(len(tokenizer), eos_token_id=0)).eval()


@pytest.fixture
def model(request):
    return request.getfixturevalue(request.param)


def manual_next_probs(model, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """softmax of the model's logits for the token after ``generated``, from a plain forward pass."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder = torch.tensor([[model.config.decoder_start_token_id, *generated]])
            logits = model(input_ids=torch.tensor([prompt_ids]), decoder_input_ids=decoder).logits
        else:
            logits = model(input_ids=torch.tensor([prompt_ids + generated])).logits
    return torch.softmax(logits[0, -1], dim=-1)


def teacher_forced(model, result: Decoded) -> torch.Tensor:
    return token_log_probs(model, list(result.prompt_ids), list(result.token_ids))


# --- per-step top-k tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, indirect=True)
@pytest.mark.parametrize("strategy", ["greedy", "beam", SAMPLE])
def test_step_probabilities_are_softmax_of_a_manual_forward(model, tokenizer, strategy):
    result = decode(model, PROMPT, tokenizer, strategy=strategy, max_new_tokens=NEW, k=5)
    assert len(result.steps) == result.num_tokens >= 1
    prompt, generated = list(result.prompt_ids), list(result.token_ids)
    for t, step in enumerate(result.steps):
        assert step.step == t + 1 and step.chosen.token_id == generated[t]
        probs = manual_next_probs(model, prompt, generated[:t])
        top = torch.tensor([candidate.prob for candidate in step.top])
        ids = [candidate.token_id for candidate in step.top]
        torch.testing.assert_close(top, probs[ids], atol=ATOL, rtol=0)
        torch.testing.assert_close(top, probs.topk(5).values, atol=ATOL, rtol=0)
        assert torch.all(top[:-1] >= top[1:]), "candidates are sorted, most probable first"
        assert step.chosen.prob == pytest.approx(float(probs[generated[t]]), abs=ATOL)
        if strategy == "greedy":
            assert step.chosen == step.top[0]
            assert step.chosen.prob == pytest.approx(float(probs.max()), abs=ATOL)


def test_processed_distribution_is_the_warped_one(gpt2, tokenizer):
    """top-k = 10 sampling: the processed distribution is the model's top 10 renormalised, 0 elsewhere."""
    model_view = decode(gpt2, PROMPT, tokenizer, strategy="top_k", k=12, seed=3)
    processed = decode(gpt2, PROMPT, tokenizer, strategy="top_k", k=12, seed=3, distribution="processed")
    assert processed.token_ids == model_view.token_ids
    for raw, warped in zip(model_view.steps, processed.steps, strict=True):
        raw_top = torch.tensor([c.prob for c in raw.top[:10]])
        torch.testing.assert_close(
            torch.tensor([c.prob for c in warped.top[:10]]), raw_top / raw_top.sum(), atol=1e-6, rtol=1e-5
        )
        assert [c.prob for c in warped.top[10:]] == [0.0, 0.0]
        assert warped.chosen.token_id in [c.token_id for c in raw.top[:10]]


def test_processed_equals_model_distribution_without_warpers(gpt2, tokenizer):
    raw = decode(gpt2, PROMPT, tokenizer, strategy=SAMPLE, seed=5)
    processed = decode(gpt2, PROMPT, tokenizer, strategy=SAMPLE, seed=5, distribution="processed")
    assert raw.steps == processed.steps


def test_temperature_scales_the_processed_distribution(gpt2, tokenizer):
    result = decode(
        gpt2, PROMPT, tokenizer, strategy="temperature", distribution="processed", max_new_tokens=3
    )
    prompt, generated = list(result.prompt_ids), list(result.token_ids)
    for t, step in enumerate(result.steps):
        log_probs = manual_next_probs(gpt2, prompt, generated[:t]).log()
        expected = torch.softmax(log_probs / 0.7, dim=-1).topk(5).values
        torch.testing.assert_close(torch.tensor([c.prob for c in step.top]), expected, atol=ATOL, rtol=1e-4)


# --- sequence log-probabilities -------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, indirect=True)
@pytest.mark.parametrize("strategy", ["greedy", "beam", SAMPLE, "top_p"])
def test_generated_log_probs_equal_teacher_forcing(model, tokenizer, strategy):
    result = decode(model, PROMPT, tokenizer, strategy=strategy, max_new_tokens=NEW)
    expected = teacher_forced(model, result)
    torch.testing.assert_close(torch.tensor(result.token_log_probs), expected, atol=ATOL, rtol=1e-5)
    assert result.sum_log_prob == pytest.approx(float(expected.sum()), abs=1e-4)
    assert result.mean_log_prob == pytest.approx(result.sum_log_prob / result.num_tokens)
    whole = sequence_log_prob(model, list(result.prompt_ids), list(result.token_ids))
    assert whole.shape == () and float(whole) == pytest.approx(float(expected.sum()), abs=1e-5)


@pytest.mark.parametrize("model", MODELS, indirect=True)
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, 2.0])
def test_beam_score_is_the_length_penalised_sum(model, tokenizer, length_penalty):
    beam = Strategy("beam", {"num_beams": 3, "length_penalty": length_penalty})
    result = decode(model, PROMPT, tokenizer, strategy=beam, max_new_tokens=NEW)
    penalised = result.sum_log_prob / result.num_tokens**length_penalty
    assert result.beam_score == pytest.approx(penalised, abs=1e-4)
    assert decode(model, PROMPT, tokenizer, strategy="greedy").beam_score is None


LENGTH_PENALTY = 0.5


def beams_of_unequal_length(model, inputs):
    """generate(num_beams=4, num_return_sequences=4) with an EOS chosen so that the beams end at different
    lengths: tried in turn among the top-5 candidates of each step of a run without it."""
    kwargs = {
        "length_penalty": LENGTH_PENALTY,
        "max_new_tokens": NEW,
        "num_beams": 4,
        "num_return_sequences": 4,
        "return_dict_in_generate": True,
        "output_scores": True,
        "output_logits": True,
        "pad_token_id": 0,
    }
    first = model.generate(**inputs, **kwargs)
    for eos in torch.stack(first.logits).topk(5, dim=-1).indices.unique().tolist():
        output = model.generate(**inputs, eos_token_id=eos, **kwargs)
        lengths = (output.beam_indices >= 0).sum(-1)
        if lengths.min() < lengths.max():
            return output, eos
    raise AssertionError("no token makes the beams end at different lengths")


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_every_returned_beam_scores_like_teacher_forcing(model, tokenizer):
    inputs = tokenizer(PROMPT, return_tensors="pt")
    output, eos = beams_of_unequal_length(model, inputs)
    scored = score_generated(model, output, eos_token_id=eos)
    assert len({len(ids) for ids, _ in scored}) > 1
    if not model.config.is_encoder_decoder:  # a beam's tokens come from another beam's row at some step
        assert (output.beam_indices > 0).any()
    for (ids, log_probs), beam_score in zip(scored, output.sequences_scores, strict=True):
        assert eos not in ids[:-1].tolist(), "nothing after an EOS is reported"
        torch.testing.assert_close(
            log_probs, token_log_probs(model, inputs["input_ids"][0], ids), atol=ATOL, rtol=1e-5
        )
        penalised = float(log_probs.sum()) / len(ids) ** LENGTH_PENALTY
        assert float(beam_score) == pytest.approx(penalised, abs=1e-4)


def test_batched_generation_stops_each_row_at_its_eos(gpt2, tokenizer):
    """Two left-padded prompts and an EOS the first row reaches before the second: the first row's tokens end
    there (generate pads it afterwards); teacher forcing treats the left padding as generate does."""
    left = copy.deepcopy(tokenizer)
    left.padding_side = "left"
    inputs = left(["Return the value of", "A"], return_tensors="pt", padding=True)
    assert inputs["attention_mask"][1, 0] == 0
    kwargs = {
        "max_new_tokens": NEW,
        "return_dict_in_generate": True,
        "output_logits": True,
        "pad_token_id": 0,
    }
    first = gpt2.generate(**inputs, **kwargs).sequences[:, -NEW:].tolist()

    def position(row: list[int], token: int) -> int:
        return row.index(token) if token in row else NEW

    eos = next(
        token for token in first[0][: NEW - 1] if position(first[0], token) < position(first[1], token)
    )
    output = gpt2.generate(**inputs, eos_token_id=eos, **kwargs)
    scored = score_generated(gpt2, output, eos_token_id=eos)
    lengths = [len(ids) for ids, _ in scored]
    assert lengths == [min(position(row, eos) + 1, NEW) for row in first]
    assert lengths[0] < NEW and scored[0][0][-1] == eos
    expected = token_log_probs(
        gpt2, inputs["input_ids"], output.sequences[:, -NEW:], prompt_attention_mask=inputs["attention_mask"]
    )
    assert expected.shape == (2, NEW)
    for (ids, log_probs), row in zip(scored, expected, strict=True):
        torch.testing.assert_close(log_probs, row[: len(ids)], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_eos_ends_the_continuation(model, tokenizer):
    free = decode(model, PROMPT, tokenizer, max_new_tokens=NEW)
    assert not free.finished and free.num_tokens == NEW
    eos = free.token_ids[1]
    stop = Strategy("greedy-eos", {"do_sample": False, "eos_token_id": eos})
    result = decode(model, PROMPT, tokenizer, strategy=stop, max_new_tokens=NEW)
    expected_ids = free.token_ids[: free.token_ids.index(eos) + 1]
    assert result.token_ids == expected_ids and result.finished
    assert len(result.steps) == len(result.token_log_probs) == len(expected_ids) <= 2
    assert result.token_log_probs == pytest.approx(free.token_log_probs[: len(expected_ids)], abs=ATOL)


# --- a given continuation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, indirect=True)
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_scoring_a_generated_continuation_reproduces_decode(model, tokenizer, strategy):
    """Teacher forcing the tokens decode generated gives decode's log-probs and top-k steps."""
    generated = decode(model, PROMPT, tokenizer, strategy=strategy, max_new_tokens=NEW, k=4)
    given = score_continuation(model, PROMPT, list(generated.token_ids), tokenizer, k=4)
    assert given.strategy.name == "given" and not given.generated and given.beam_score is None
    assert given.token_ids == generated.token_ids and given.tokens == generated.tokens
    assert given.text == generated.text and given.finished == generated.finished
    assert given.token_log_probs == pytest.approx(generated.token_log_probs, abs=ATOL)
    for mine, theirs in zip(given.steps, generated.steps, strict=True):
        assert mine.step == theirs.step and mine.chosen.token_id == theirs.chosen.token_id
        assert mine.chosen.prob == pytest.approx(theirs.chosen.prob, abs=ATOL)
        assert [c.prob for c in mine.top] == pytest.approx([c.prob for c in theirs.top], abs=ATOL)


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_scoring_text_against_a_manual_forward(model, tokenizer):
    text = " the list of values"
    given = score_continuation(model, PROMPT, text, tokenizer, k=3)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # the tiny BPE adds no special tokens
    assert list(given.token_ids) == ids and given.text == text
    prompt = tokenizer(PROMPT)["input_ids"]
    for t, step in enumerate(given.steps):
        probs = manual_next_probs(model, prompt, ids[:t])
        assert step.chosen.prob == pytest.approx(float(probs[ids[t]]), abs=ATOL)
        assert [c.token_id for c in step.top] == probs.topk(3).indices.tolist()
        assert [c.prob for c in step.top] == pytest.approx(probs.topk(3).values.tolist(), abs=ATOL)
    expected = float(sequence_log_prob(model, prompt, ids))
    assert given.sum_log_prob == pytest.approx(expected, abs=1e-4)
    assert not given.finished and "(no eos)" in format_token_log_probs(given)
    ended = score_continuation(model, PROMPT, [*ids, 0], tokenizer)  # id 0 is the EOS of both models
    assert ended.finished and "(eos)" in format_token_log_probs(ended)


def test_score_continuation_rejects_bad_arguments(gpt2, tokenizer):
    with pytest.raises(ValueError, match="a text continuation needs a tokenizer"):
        score_continuation(gpt2, [1, 2], "the")
    with pytest.raises(ValueError, match="the continuation is empty"):
        score_continuation(gpt2, PROMPT, "", tokenizer)
    with pytest.raises(ValueError, match=r"one continuation at a time: got ids of shape \(2, 1\)"):
        score_continuation(gpt2, PROMPT, [[1], [2]], tokenizer)
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        score_continuation(gpt2, PROMPT, [1], tokenizer, k=0)


# --- strategies -----------------------------------------------------------------------------------------


def test_sampling_is_reproducible_per_seed_and_leaves_the_global_rng_alone(gpt2, tokenizer):
    state = torch.get_rng_state()
    runs = [decode(gpt2, PROMPT, tokenizer, strategy=SAMPLE, seed=seed).token_ids for seed in (1, 1, 2)]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)
    unseeded = decode(gpt2, PROMPT, tokenizer, strategy=SAMPLE, seed=None).token_ids
    torch.manual_seed(7)
    assert decode(gpt2, PROMPT, tokenizer, strategy=SAMPLE, seed=None).token_ids == unseeded


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_compare_strategies(model, tokenizer):
    custom = Strategy("hot", {"do_sample": True, "temperature": 1.5, "top_k": 0})
    results = compare_strategies(model, PROMPT, tokenizer, strategies=[*DEFAULT_STRATEGIES, custom], k=3)
    assert [r.strategy.name for r in results] == ["greedy", "beam", "temperature", "top_k", "top_p", "hot"]
    for result in results:
        assert 1 <= result.num_tokens <= 16 and len(result.steps) == result.num_tokens
        assert math.isfinite(result.sum_log_prob) and result.sum_log_prob < 0
        assert (result.beam_score is not None) == (result.strategy.name == "beam")
        assert result.text == tokenizer.decode(list(result.token_ids), skip_special_tokens=True)
    # each strategy starts from the same seed, whichever others run
    alone = compare_strategies(model, PROMPT, tokenizer, strategies=["top_p"], k=3)
    assert alone[0] == results[4]
    table = format_comparison(results)
    for result in results:
        assert result.strategy.name in table and f"{result.sum_log_prob:.4f}" in table
        assert f"{result.mean_log_prob:.4f}" in table and repr(result.text) in table
    assert f"{results[1].beam_score:.4f}" in table and "num_beams=4" in table


# --- inputs, model state --------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_prompt_forms_agree(model, tokenizer):
    encoded = tokenizer(PROMPT, return_tensors="pt")
    ids = encoded["input_ids"]
    expected = decode(model, PROMPT, tokenizer, strategy="top_k", max_new_tokens=4)
    for prompt in (ids, ids[0], ids[0].tolist(), encoded, dict(encoded)):
        result = decode(model, prompt, tokenizer, strategy="top_k", max_new_tokens=4)
        assert result.token_ids == expected.token_ids and result.steps == expected.steps
    bare = decode(model, ids[0].tolist(), strategy="top_k", max_new_tokens=4)  # no tokenizer: ids shown
    assert bare.token_ids == expected.token_ids
    assert bare.tokens == tuple(f"#{i}" for i in bare.token_ids)


def test_tokenizer_without_pad_token_pads_with_eos(gpt2, tokenizer):
    no_pad = copy.deepcopy(tokenizer)
    no_pad.pad_token = None
    assert no_pad.pad_token_id is None and gpt2.generation_config.pad_token_id is None
    for strategy in ("greedy", "beam"):
        result = decode(gpt2, PROMPT, no_pad, strategy=strategy)
        assert result == decode(gpt2, PROMPT, tokenizer, strategy=strategy)


@pytest.mark.parametrize("model", MODELS, indirect=True)
def test_eval_mode_during_inspection_and_training_flags_restored(model, tokenizer):
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    model.train()
    some_module = next(m for m in model.modules() if isinstance(m, torch.nn.Dropout))
    some_module.eval()  # a mixed state must come back as it was
    before = {name: m.training for name, m in model.named_modules()}
    try:
        decode(model, PROMPT, tokenizer, strategy="beam", max_new_tokens=3)
        teacher_forced(model, decode(model, PROMPT, tokenizer, max_new_tokens=2))
        after = {name: m.training for name, m in model.named_modules()}
    finally:
        hook.remove()
        model.eval()
    assert seen and not any(seen)
    assert after == before


# --- formatting -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("markdown", [False, True])
def test_formatted_tables_show_tokens_and_numbers(gpt2, tokenizer, markdown):
    result = decode(gpt2, PROMPT, tokenizer, strategy="beam", max_new_tokens=5, k=3)
    steps = format_steps(result, markdown=markdown)
    assert "beam" in steps and "model probabilities" in steps and "top 3" in steps
    for step in result.steps:
        assert repr(step.chosen.token).replace("|", "\\|" if markdown else "|") in steps
        for candidate in step.top:
            assert f"{candidate.prob:.4f}" in steps
    scores = format_token_log_probs(result, markdown=markdown)
    for log_prob in result.token_log_probs:
        assert f"{log_prob:.4f}" in scores and f"{math.exp(log_prob):.4f}" in scores
    assert (
        f"sum log p {result.sum_log_prob:.4f}" in scores and f"beam score {result.beam_score:.4f}" in scores
    )
    table_lines = [line for line in steps.splitlines() if line.startswith(("|", "step", "-", " "))]
    assert len(table_lines) == 2 + result.num_tokens
    if markdown:
        assert all(line.startswith("| ") and line.endswith(" |") for line in table_lines)
        assert "| ---: |" in steps
    else:
        assert "|" not in steps.splitlines()[1]


def test_markdown_escapes_pipes():
    """A token holding '|' must not split a markdown cell."""
    from tunekit.decoding import Candidate, Step

    chosen = Candidate(7, "a|b", 0.5)
    result = Decoded(
        strategy=DEFAULT_STRATEGIES["greedy"],
        distribution="model",
        prompt_ids=(1,),
        prompt_text="#1",
        token_ids=(7,),
        tokens=("a|b",),
        text="a|b",
        token_log_probs=(math.log(0.5),),
        finished=False,
        beam_score=None,
        steps=(Step(1, chosen, (chosen,)),),
    )
    row = format_steps(result, markdown=True).splitlines()[-1]
    assert row.count(" | ") == 3 and "'a\\|b'" in row


# --- bad arguments --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "k must be a positive integer, got 0"),
        ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
        ({"distribution": "raw"}, "distribution must be one of .*got 'raw'"),
        ({"strategy": "nucleus"}, "unknown strategy 'nucleus'"),
        ({"strategy": 3}, "strategy must be a name or a Strategy, got int"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"prompt": "x", "tokenizer": None}, "a text prompt needs a tokenizer"),
        ({"prompt": [[1, 2], [3, 4]]}, r"one prompt at a time: got ids of shape \(2, 2\)"),
        ({"prompt": []}, r"prompt must be non-empty ids"),
        ({"prompt": [1.0, 2.0]}, "prompt must hold integer token ids, got a torch.float32 tensor"),
        ({"prompt": [1, 10_000]}, r"prompt must be ids in \[0, 300\), got ids from 1 to 10000"),
        ({"prompt": {"ids": [1]}}, "a prompt mapping needs input_ids"),
        (
            {"prompt": {"input_ids": [1, 2], "attention_mask": [1]}},
            r"attention_mask must have the ids' shape",
        ),
    ],
)
def test_decode_rejects_bad_arguments(gpt2, tokenizer, kwargs, message):
    arguments = {"prompt": PROMPT, "tokenizer": tokenizer, **kwargs}
    with pytest.raises(ValueError, match=message):
        decode(gpt2, arguments.pop("prompt"), arguments.pop("tokenizer"), **arguments)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"do_sample": True, "temperature": 0}, "temperature must be a finite number > 0, got 0"),
        ({"do_sample": True, "temperature": -1.0}, "temperature must be a finite number > 0, got -1.0"),
        ({"do_sample": True, "top_k": -1}, "top_k must be an integer >= 0, got -1"),
        ({"do_sample": True, "top_p": 0.0}, r"top_p must be a number in \(0, 1\], got 0.0"),
        ({"num_beams": 0}, "num_beams must be a positive integer, got 0"),
        ({"do_sample": "yes"}, "do_sample must be True or False, got 'yes'"),
        ({"temperature": 0.5}, r"sets \['temperature'\] without do_sample=True"),
        ({"max_new_tokens": 3}, r"sets \['max_new_tokens'\], which the inspection sets itself"),
        ({"num_return_sequences": 2}, "num_return_sequences"),
    ],
)
def test_strategy_rejects_bad_generate_kwargs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Strategy("bad", kwargs)


def test_other_bad_arguments(gpt2, tokenizer):
    with pytest.raises(ValueError, match="strategy name must be a non-empty string"):
        Strategy("", {})
    with pytest.raises(ValueError, match=r"strategy names must be unique, got \['greedy'\]"):
        compare_strategies(gpt2, PROMPT, tokenizer, strategies=["greedy", Strategy("greedy")])
    with pytest.raises(ValueError, match="strategies is empty"):
        compare_strategies(gpt2, PROMPT, tokenizer, strategies=[])
    with pytest.raises(ValueError, match="model must be a transformers model with generate"):
        decode(torch.nn.Linear(2, 2), [1], tokenizer)
    with pytest.raises(ValueError, match="same batch size"):
        token_log_probs(gpt2, [[1, 2], [3, 4]], [[5]])
    with pytest.raises(ValueError, match="continuation_ids must be non-empty ids"):
        token_log_probs(gpt2, [1, 2], [])
    plain = gpt2.generate(torch.tensor([[1, 2]]), max_new_tokens=2, pad_token_id=0)
    with pytest.raises(ValueError, match=r"output_logits=True, got a torch\.int64 tensor"):
        score_generated(gpt2, plain)
