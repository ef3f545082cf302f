"""``tunekit decode`` on a tiny GPT-2 and a tiny T5 saved with save_pretrained (random weights from a config,
a locally trained byte-level BPE tokenizer): the printed tables and the JSON against
`tunekit.decoding` run on the same model in-process, sequence log-probs of ``--score`` against a manual
teacher-forced forward pass, determinism per ``--seed``, and every user error (one line, exit status 2)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
import transformers

from tiny_models import bert_config, gpt2_config, t5_config
from tiny_tokenizer import bpe_tokenizer
from tunekit import cli
from tunekit.cli import decode as decode_cli
from tunekit.decoding import (
    DEFAULT_STRATEGIES,
    Strategy,
    compare_strategies,
    format_comparison,
    format_steps,
    format_token_log_probs,
    score_continuation,
)

PROMPT = "Return the value of"
NEW = "5"  # --max-new-tokens
NUMBER = re.compile(r"(?<![\w.=])-?\d+\.\d{4}(?!\d)")  # a 4-decimal number in a table row


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer(300)


def _save(model, tokenizer, path):
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory, tokenizer):
    """(folder, model): a 2-layer GPT-2 with random weights, saved with its tokenizer."""
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(gpt2_config(len(tokenizer), n_positions=64)).eval()
    return _save(model, tokenizer, tmp_path_factory.mktemp("gpt2")), model


@pytest.fixture(scope="module")
def t5(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(t5_config(len(tokenizer), eos_token_id=0)).eval()
    return _save(model, tokenizer, tmp_path_factory.mktemp("t5")), model


@pytest.fixture(scope="module")
def bert_classifier(tmp_path_factory, tokenizer):
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(bert_config(len(tokenizer), num_labels=2))
    return _save(model, tokenizer, tmp_path_factory.mktemp("bert"))


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)


def decode(capsys, *args) -> str:
    """stdout of ``tunekit decode ARGS``, which must succeed."""
    device = [] if "--device" in args else ["--device", "cpu"]  # the references run on the CPU
    status = cli.main(["decode", *map(str, args), *device])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def rows_of(out: str, caption: str) -> list[str]:
    """The data rows of the plain-text table under ``caption`` (after its header and rule)."""
    lines = out.splitlines()
    start = lines.index(caption) + 3
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def comparison_rows(out: str) -> dict[str, list[float]]:
    """strategy -> the 4-decimal numbers of its row in the comparison table (sum, mean[, beam score])."""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if re.match(r"strategy +settings", line))
    rows = lines[header + 2 : next(i for i in range(header, len(lines)) if not lines[i].strip())]
    text_column = lines[header].index("  text")  # cut the texts off: only numbers before them
    return {row.split()[0]: [float(x) for x in NUMBER.findall(row[:text_column])] for row in rows}


def manual_log_prob(model, prompt: list[int], continuation: list[int]) -> float:
    """sum_t log softmax(logits_t)[continuation[t]] from a plain forward pass (teacher forcing)."""
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            decoder = torch.tensor([[model.config.decoder_start_token_id, *continuation[:-1]]])
            logits = model(input_ids=torch.tensor([prompt]), decoder_input_ids=decoder).logits[0]
        else:
            logits = model(input_ids=torch.tensor([prompt + continuation])).logits[0, len(prompt) - 1 : -1]
    return float(torch.log_softmax(logits, -1)[torch.arange(len(continuation)), continuation].sum())


# --- tables against the component -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_tables_show_the_components_values(capsys, request, tokenizer, name):
    folder, model = request.getfixturevalue(name)
    out = decode(capsys, folder, "--prompt", PROMPT, "--max-new-tokens", NEW, "-k", 3)
    expected = compare_strategies(model, PROMPT, tokenizer, max_new_tokens=int(NEW), k=3, seed=0)
    assert [r.strategy.name for r in expected] == list(DEFAULT_STRATEGIES)
    kind = "encoder-decoder" if name == "t5" else "causal LM"
    assert out.startswith(f"model: {folder} ({type(model).__name__}, {kind}, ")
    assert f"prompt 1: {PROMPT!r} ({len(expected[0].prompt_ids)} tokens)" in out
    assert format_comparison(expected) in out
    printed = comparison_rows(out)
    for result in expected:
        # the top-k probabilities of each step, to the printed precision
        rows = rows_of(out, f"{result.strategy.name}: top-3 candidates per step, model probabilities")
        assert len(rows) == result.num_tokens == len(result.steps)
        for row, step in zip(rows, result.steps, strict=True):
            assert row.split()[0] == str(step.step)
            for candidate in step.top:
                assert f"{candidate.token!r} {candidate.prob:.4f}" in row
        # sum / mean log-prob (and beam score) in the comparison: the teacher-forced values
        forced = manual_log_prob(model, list(result.prompt_ids), list(result.token_ids))
        numbers = printed[result.strategy.name]
        assert numbers[0] == pytest.approx(forced, abs=1e-4)
        assert numbers[1] == pytest.approx(forced / result.num_tokens, abs=1e-4)
        assert len(numbers) == (3 if result.strategy.name == "beam" else 2)
    assert "log p       p" not in out, "no token log-prob tables without --log-probs"


@pytest.mark.parametrize("name", ["gpt2", "t5"])
def test_score_prints_the_teacher_forced_log_prob(capsys, request, tokenizer, name):
    folder, model = request.getfixturevalue(name)
    given = [" the list", " of values"]
    out = decode(
        capsys,
        folder,
        "--prompt",
        PROMPT,
        "--strategies",
        "greedy",
        "--score",
        given[0],
        "--score",
        given[1],
        "--max-new-tokens",
        2,
    )
    prompt = tokenizer(PROMPT)["input_ids"]
    sums = [float(x) for x in re.findall(r"sum log p (-?\d+\.\d{4}), mean", out)]
    assert len(sums) == 2
    for text, printed in zip(given, sums, strict=True):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]  # this tokenizer adds no special tokens
        assert printed == pytest.approx(manual_log_prob(model, prompt, ids), abs=1e-4)
        scored = score_continuation(model, PROMPT, text, tokenizer, k=5)
        assert f"given continuation {text!r}, scored by teacher forcing" in out
        assert format_steps(scored) in out and format_token_log_probs(scored) in out


def test_strategy_options_and_processed_distribution(capsys, gpt2, tokenizer):
    folder, model = gpt2
    out = decode(
        capsys,
        folder,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        NEW,
        "--num-beams",
        2,
        "--top-k",
        7,
        "--top-p",
        0.5,
        "--temperature",
        1.3,
        "--distribution",
        "processed",
        "--seed",
        4,
    )
    strategies = [
        Strategy("greedy", DEFAULT_STRATEGIES["greedy"].generate_kwargs),
        Strategy("beam", {"do_sample": False, "num_beams": 2}),
        Strategy("temperature", {"do_sample": True, "temperature": 1.3, "top_k": 0, "top_p": 1.0}),
        Strategy("top_k", {"do_sample": True, "temperature": 1.0, "top_k": 7, "top_p": 1.0}),
        Strategy("top_p", {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.5}),
    ]
    expected = compare_strategies(
        model,
        PROMPT,
        tokenizer,
        strategies=strategies,
        max_new_tokens=int(NEW),
        distribution="processed",
        seed=4,
    )
    assert format_comparison(expected) in out
    for result in expected:
        assert format_steps(result) in out
    assert "top_k: top-5 candidates per step, processed probabilities" in out
    top_k_rows = rows_of(out, "top_k: top-5 candidates per step, processed probabilities")
    assert all(float(row.split()[-1]) > 0 for row in top_k_rows), "the 5 best of a top-7 warp are kept"


def test_seed_makes_sampling_reproducible(capsys, gpt2, tokenizer):
    folder, model = gpt2
    args = [folder, "--prompt", PROMPT, "--strategies", "top_p,temperature", "--max-new-tokens", 8]
    first, again = decode(capsys, *args, "--seed", 3), decode(capsys, *args, "--seed", 3)
    other = decode(capsys, *args, "--seed", 4)
    assert first == again
    assert first != other
    for seed, out in ((3, first), (4, other)):
        expected = compare_strategies(
            model, PROMPT, tokenizer, strategies=["top_p", "temperature"], max_new_tokens=8, seed=seed
        )
        assert format_comparison(expected) in out


def test_prompts_file_and_output_options(capsys, tmp_path, t5, tokenizer):
    folder, model = t5
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Return the value of\n\n  \nA list of\n", encoding="utf-8")
    out = decode(
        capsys,
        folder,
        "--prompts-file",
        prompts,
        "--prompt",
        "First",
        "--strategies",
        "greedy,beam",
        "--max-new-tokens",
        3,
        "--no-steps",
        "--log-probs",
        "--markdown",
    )
    titles = re.findall(r"^## prompt (\d): '(.*)' \(\d+ tokens?\)$", out, flags=re.MULTILINE)
    assert titles == [("1", "First"), ("2", "Return the value of"), ("3", "A list of")]
    assert "candidates per step" not in out
    for prompt in ("First", "A list of"):
        for result in compare_strategies(
            model, prompt, tokenizer, strategies=["greedy", "beam"], max_new_tokens=3
        ):
            assert format_token_log_probs(result, markdown=True) in out
    assert "| strategy | settings |" in out and "| ---: |" in out


def test_json_holds_every_table(capsys, tmp_path, gpt2, tokenizer):
    folder, model = gpt2
    path = tmp_path / "out" / "decode.json"
    out = decode(
        capsys,
        folder,
        "--prompt",
        PROMPT,
        "--strategies",
        "greedy,beam",
        "--max-new-tokens",
        NEW,
        "-k",
        2,
        "--score",
        " the",
        "--json",
        path,
    )
    assert out.rstrip().endswith(f"json: {path}")
    report = json.loads(path.read_text(encoding="utf-8"))
    assert report["architecture"] == "GPT2LMHeadModel" and not report["encoder_decoder"]
    assert (report["max_new_tokens"], report["candidates"], report["seed"]) == (5, 2, 0)
    (entry,) = report["prompts"]
    expected = compare_strategies(
        model, PROMPT, tokenizer, strategies=["greedy", "beam"], max_new_tokens=int(NEW), k=2
    )
    assert entry["prompt"] == PROMPT and entry["prompt_ids"] == list(expected[0].prompt_ids)
    for saved, result in zip(entry["strategies"], expected, strict=True):
        assert saved["strategy"] == result.strategy.name
        assert saved["settings"] == dict(result.strategy.generate_kwargs)
        assert saved["token_ids"] == list(result.token_ids) and saved["text"] == result.text
        assert saved["token_log_probs"] == pytest.approx(result.token_log_probs, abs=1e-6)
        assert saved["sum_log_prob"] == pytest.approx(result.sum_log_prob, abs=1e-6)
        assert saved["beam_score"] == (
            None if result.beam_score is None else pytest.approx(result.beam_score)
        )
        saved_top = [candidate for step in saved["steps"] for candidate in step["top"]]
        top = [candidate for step in result.steps for candidate in step.top]
        assert [c["token_id"] for c in saved_top] == [c.token_id for c in top]
        assert [c["prob"] for c in saved_top] == pytest.approx([c.prob for c in top], abs=1e-6)
    (given,) = entry["scored"]
    assert given["strategy"] == "given" and given["generated"] is False
    ids = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert given["token_ids"] == ids
    assert given["sum_log_prob"] == pytest.approx(manual_log_prob(model, entry["prompt_ids"], ids), abs=1e-5)


def test_the_command_is_listed_and_knows_the_components_strategies(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert cli.main(["--help"]) == 0
    assert re.search(r"^ +decode +show how a saved causal LM", capsys.readouterr().out, flags=re.MULTILINE)
    assert tuple(DEFAULT_STRATEGIES) == decode_cli.STRATEGY_NAMES  # named without importing torch


def test_help_in_a_subprocess():
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "tunekit", "decode", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: tunekit decode" in done.stdout and "--strategies NAMES" in done.stdout
    assert "greedy, beam, temperature, top_k, top_p" in done.stdout


# --- user errors ------------------------------------------------------------------------------------------


def error_of(capsys, *args) -> str:
    """The one-line message of ``tunekit decode ARGS``, which must fail with status 2."""
    status = cli.main(["decode", *map(str, args)])
    out, err = capsys.readouterr()
    assert status == 2, out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tunekit: error: "), err
    return lines[0].removeprefix("tunekit: error: ")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "no prompt: give --prompt TEXT or --prompts-file FILE"),
        (["--prompt", ""], "--prompt is empty"),
        (["--prompt", "x", "--score", ""], "--score is empty"),
        (
            ["--prompt", "x", "--strategies", "greedy,nucleus"],
            "unknown strategy 'nucleus' in --strategies; choose",
        ),
        (["--prompt", "x", "--strategies", "beam,greedy,beam"], "--strategies names beam more than once"),
        (["--prompt", "x", "--strategies", " , "], "--strategies names no strategy"),
        (["--prompt", "x", "--max-new-tokens", "0"], r"--max-new-tokens must be a positive integer, got 0"),
        (["--prompt", "x", "--max-new-tokens", "ten"], r"--max-new-tokens must be an integer, got 'ten'"),
        (["--prompt", "x", "-k", "2.5"], r"-k/--candidates must be an integer, got '2.5'"),
        (["--prompt", "x", "--top-p", "1.5"], r"--top-p must be a number in \(0, 1\], got 1.5"),
        (["--prompt", "x", "--top-p", "0"], r"--top-p must be a number in \(0, 1\], got 0.0"),
        (["--prompt", "x", "--temperature", "nan"], r"--temperature must be a finite number > 0, got nan"),
        (["--prompt", "x", "--temperature", "hot"], r"--temperature must be a number, got 'hot'"),
        (["--prompt", "x", "--top-k", "0"], r"--top-k must be a positive integer, got 0"),
        (["--prompt", "x", "--num-beams", "0"], r"--num-beams must be a positive integer, got 0"),
        (["--prompt", "x", "--seed", "-1"], r"--seed must be an integer >= 0, got -1"),
        (
            ["--prompt", "x", "--strategies", "greedy", "--top-p", "0.5"],
            "--top-p sets the top_p strategy, which",
        ),
        (["--prompt", "x", "--device", "gpu0"], r"--device 'gpu0' is not a device"),
    ],
)
def test_bad_options(capsys, gpt2, options, message):
    assert re.match(message, error_of(capsys, gpt2[0], *options))


def test_bad_files(capsys, tmp_path, gpt2):
    folder = gpt2[0]
    assert error_of(capsys, folder, "--prompts-file", tmp_path / "none.txt") == (
        f"--prompts-file {tmp_path / 'none.txt'} not found"
    )
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    assert "holds no prompt" in error_of(capsys, folder, "--prompts-file", blank)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café\n".encode("latin-1"))
    assert "is not UTF-8 text" in error_of(capsys, folder, "--prompts-file", latin)
    assert error_of(capsys, folder, "--prompt", "x", "--json", tmp_path) == (
        f"--json {tmp_path} is a folder: give a file name"
    )


def test_folders_that_are_not_a_generation_model(capsys, tmp_path, gpt2, bert_classifier):
    folder = gpt2[0]
    assert (
        error_of(capsys, tmp_path / "missing", "--prompt", "x")
        == f"model folder {tmp_path / 'missing'} not found"
    )
    a_file = tmp_path / "model.json"
    a_file.write_text("{}", encoding="utf-8")
    assert error_of(capsys, a_file, "--prompt", "x") == (
        f"{a_file} is not a folder: give the model folder save_pretrained wrote"
    )
    assert error_of(capsys, tmp_path, "--prompt", "x") == (
        f"{tmp_path} has no config.json: it is not a folder written by save_pretrained"
    )
    assert error_of(capsys, bert_classifier, "--prompt", "x") == (
        f"{bert_classifier} holds a BertForSequenceClassification, which does not generate text: "
        "tunekit decode needs a causal LM or an encoder-decoder (seq2seq) model"
    )
    bare = tmp_path / "bare"  # weights and config, no tokenizer
    bare.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (bare / name).write_bytes((folder / name).read_bytes())
    assert error_of(capsys, bare, "--prompt", "x").startswith(f"{bare} has no tokenizer")
    assert "tokenizer folder" in error_of(capsys, bare, "--prompt", "x", "--tokenizer", tmp_path / "none")
    assert decode(capsys, bare, "--prompt", "x", "--tokenizer", folder, "--strategies", "greedy").startswith(
        "model:"
    )
    (bare / "model.safetensors").unlink()
    assert error_of(capsys, bare, "--prompt", "x", "--tokenizer", folder).startswith(
        f"cannot load the model in {bare}"
    )
    (bare / "config.json").write_text("{not json", encoding="utf-8")
    assert error_of(capsys, bare, "--prompt", "x").startswith(f"cannot read the model config in {bare}")


def test_model_and_tokenizer_that_do_not_fit(capsys, tmp_path, gpt2):
    folder = gpt2[0]
    long_prompt = "Return the value of " * 4
    assert error_of(capsys, folder, "--prompt", long_prompt, "--max-new-tokens", 20) == (
        "prompt 1 (56 tokens) and --max-new-tokens 20 need 76 positions, more than the model's 64"
    )
    assert error_of(capsys, folder, "--prompt", "Return", "--score", " the value of" * 10) == (
        "prompt 1 (6 tokens) and --score need 76 positions, more than the model's 64"
    )
    bigger = tmp_path / "tokenizer"
    bpe_tokenizer(400).save_pretrained(bigger)
    assert error_of(capsys, folder, "--prompt", "x", "--tokenizer", bigger) == (
        f"the tokenizer in {bigger} has 400 tokens, the model only 300: is it the model's tokenizer?"
    )
    wider = tmp_path / "wider"  # config.json says 64 wide, the weights are 32 wide
    wider.mkdir()
    for name in ("generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (wider / name).write_bytes((folder / name).read_bytes())
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (wider / "config.json").write_text(json.dumps({**config, "n_embd": 64}), encoding="utf-8")
    assert cli.main(["decode", str(wider), "--prompt", "x"]) == 2
    # transformers logs its load report (naming the mismatched weights) before our line
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"tunekit: error: cannot load the model in {wider}: ")


def test_argparse_usage_errors_exit_2(capsys, gpt2):
    assert cli.main(["decode", str(gpt2[0]), "--prompt", "x", "--distribution", "raw"]) == 2
    assert "invalid choice: 'raw'" in capsys.readouterr().err
    assert cli.main(["decode"]) == 2
    assert "MODEL_DIR" in capsys.readouterr().err
