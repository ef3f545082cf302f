"""``tunekit decode MODEL_DIR``: how a saved causal LM or encoder-decoder continues prompts.

    tunekit decode MODEL_DIR --prompt TEXT [--prompt TEXT ...] [--prompts-file FILE]
                   [--strategies greedy,beam,temperature,top_k,top_p] [--max-new-tokens N] [-k K]
                   [--num-beams N] [--temperature T] [--top-k K] [--top-p P] [--distribution model|processed]
                   [--score TEXT ...] [--seed N] [--no-steps] [--log-probs] [--markdown]
                   [--tokenizer DIR] [--device DEVICE] [--json FILE]

For each prompt it prints the side-by-side of the strategies (tokens, how each ended, sum and mean
log-probability, beam score, text), then each strategy's per-step table of the k most probable tokens, and
for each ``--score TEXT`` that continuation's per-step table and token log-probabilities by teacher forcing.
Every number comes from `tunekit.decoding` (`compare_strategies`, `score_continuation` and its
``format_*`` tables); this module only loads the model and parses the options.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ._common import USER_ERRORS, show_traceback, user_error

HELP = "show how a saved causal LM or seq2seq model decodes: per-step top-k, log-probs, strategies compared"

# the names of tunekit.decoding.DEFAULT_STRATEGIES (kept here so --help needs no torch import)
STRATEGY_NAMES = ("greedy", "beam", "temperature", "top_k", "top_p")
# option -> (the strategy it sets, its generate argument)
STRATEGY_OPTIONS = {
    "num_beams": ("beam", "num_beams"),
    "temperature": ("temperature", "temperature"),
    "top_k": ("top_k", "top_k"),
    "top_p": ("top_p", "top_p"),
}
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")  # save_pretrained writes the first


@dataclasses.dataclass(frozen=True)
class Settings:
    """The parsed and checked options (numbers converted, strategies built, prompts read)."""

    prompts: list[str]
    scores: list[str]
    strategies: list[Any]  # tunekit.decoding.Strategy
    max_new_tokens: int
    k: int
    seed: int
    distribution: str


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunekit decode",
        description="Continue prompts with a local causal LM or encoder-decoder (a folder written by "
        "save_pretrained, with its tokenizer) and show how it decodes: the strategies side by side with the "
        "sum and mean log-probability of each continuation, each strategy's per-step top-k candidates, and "
        "the log-probability of continuations you give (--score).",
        epilog="Probabilities are the model's (softmax of its raw logits) unless --distribution processed; "
        "log-probabilities are always the model's. Every strategy starts from the same --seed, so a "
        "strategy's result does not depend on the others. Example: tunekit decode runs/my-model --prompt "
        "'The capital of France is' --strategies greedy,top_p --score ' Paris'",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="the folder save_pretrained wrote")
    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--prompt", action="append", default=[], metavar="TEXT", help="a prompt (repeatable)"
    )
    prompts.add_argument(
        "--prompts-file", type=Path, metavar="FILE", help="a UTF-8 text file of prompts, one per line"
    )
    prompts.add_argument(
        "--score",
        action="append",
        default=[],
        metavar="TEXT",
        help="a continuation to score after each prompt, by teacher forcing (repeatable); a causal LM reads "
        "it right after the prompt (start it with the space it needs), an encoder-decoder as its target",
    )
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument(
        "--strategies",
        default=",".join(STRATEGY_NAMES),
        metavar="NAMES",
        help=f"comma-separated, from {', '.join(STRATEGY_NAMES)} (default: all)",
    )
    decoding.add_argument(
        "--max-new-tokens", default="20", metavar="N", help="at most N new tokens (default 20)"
    )
    decoding.add_argument(
        "-k",
        "--candidates",
        default="5",
        metavar="K",
        help="top-K candidates per step in the tables (default 5)",
    )
    decoding.add_argument("--num-beams", metavar="N", help="beams of the beam strategy (default 4)")
    decoding.add_argument(
        "--temperature", metavar="T", help="temperature of the temperature strategy (default 0.7)"
    )
    decoding.add_argument("--top-k", metavar="K", help="k of the top_k sampling strategy (default 10)")
    decoding.add_argument("--top-p", metavar="P", help="p of the top_p (nucleus) strategy (default 0.9)")
    decoding.add_argument(
        "--distribution",
        choices=("model", "processed"),
        default="model",
        help="the probabilities in the step tables: the model's, or the processed ones the token was "
        "drawn from (after temperature, top-k, top-p) (default: model)",
    )
    decoding.add_argument(
        "--seed", default="0", metavar="N", help="the seed sampling starts from (default 0)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--no-steps", action="store_true", help="no per-step tables of the strategies")
    output.add_argument(
        "--log-probs", action="store_true", help="also each strategy's table of token log-probabilities"
    )
    output.add_argument("--markdown", action="store_true", help="markdown tables")
    output.add_argument("--json", type=Path, metavar="FILE", help="also write every table's numbers as JSON")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--tokenizer", type=Path, metavar="DIR", help="the tokenizer's folder (default: MODEL_DIR)"
    )
    model.add_argument(
        "--device", metavar="DEVICE", help="e.g. cpu, cuda, cuda:1 (default: cuda if available)"
    )
    return parser


def command(args: list[str]) -> int:
    """Run ``tunekit decode ARGS``; return the exit status."""
    namespace = _parser().parse_args(args)
    try:
        return _decode(namespace)
    except USER_ERRORS as error:  # a bad option, folder or prompt (e.g. ids beyond the model's vocabulary)
        return user_error(str(error))
    except ImportError as error:
        return user_error(str(error), status=1)
    except Exception as error:  # a bug, or a model generate cannot run: show where
        if not show_traceback():  # with TUNEKIT_TRACEBACK, user_error prints the traceback
            traceback.print_exc()
        return user_error(f"{type(error).__name__}: {error}", status=1)


def _decode(namespace: argparse.Namespace) -> int:
    settings = _settings(namespace)
    _check_json_path(namespace.json)
    device = _device(namespace.device)
    model, tokenizer = _load(namespace.model_dir, namespace.tokenizer or namespace.model_dir, device)
    print(_describe_model(namespace.model_dir, model, settings))
    results = [
        _inspect_prompt(model, tokenizer, prompt, number, settings, namespace)
        for number, prompt in enumerate(settings.prompts, 1)
    ]
    if namespace.json is not None:
        from ..runs.report import write_json

        try:
            write_json(namespace.json, _json_report(namespace.model_dir, model, device, settings, results))
        except OSError as error:
            raise ValueError(f"cannot write --json {namespace.json}: {error}") from None
        print(f"\njson: {namespace.json}")
    return 0


# --- options --------------------------------------------------------------------------------------------


def _settings(namespace: argparse.Namespace) -> Settings:
    """Check the options; raise ValueError (FileNotFoundError: no prompts file) naming the bad one."""
    from .._checks import check_count, check_positive_int  # imports torch: not at --help time

    prompts = list(namespace.prompt)
    if namespace.prompts_file is not None:
        prompts += _read_prompts(namespace.prompts_file)
    if not prompts:
        raise ValueError("no prompt: give --prompt TEXT or --prompts-file FILE")
    for flag, texts in (("--prompt", prompts), ("--score", namespace.score)):
        if any(text == "" for text in texts):
            raise ValueError(f"{flag} is empty: give some text")
    overrides = {
        "num_beams": _number("--num-beams", namespace.num_beams, int, check_positive_int),
        "temperature": _number("--temperature", namespace.temperature, float, _positive),
        "top_k": _number("--top-k", namespace.top_k, int, check_positive_int),
        "top_p": _number("--top-p", namespace.top_p, float, _probability),
    }
    return Settings(
        prompts=prompts,
        scores=list(namespace.score),
        strategies=_strategies(namespace.strategies, overrides),
        max_new_tokens=_number("--max-new-tokens", namespace.max_new_tokens, int, check_positive_int),
        k=_number("-k/--candidates", namespace.candidates, int, check_positive_int),
        seed=_number("--seed", namespace.seed, int, lambda name, value: check_count(name, value, minimum=0)),
        distribution=namespace.distribution,
    )


def _number(flag: str, text: str | None, kind: type, check: Callable[[str, Any], None]) -> Any:
    """``kind(text)`` checked by ``check(flag, value)``; None stays None."""
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"{flag} must be {expected}, got {text!r}") from None
    check(flag, value)
    return value


def _positive(name: str, value: float) -> None:
    from .._checks import check_non_negative

    check_non_negative(name, value, positive=True)


def _probability(name: str, value: float) -> None:
    from .._checks import check_fraction

    check_fraction(name, value, zero_ok=False, one_ok=True)


def _strategies(names: str, overrides: dict[str, Any]) -> list[Any]:
    """The strategies named in ``--strategies``, each with the settings its options give."""
    from ..decoding import DEFAULT_STRATEGIES, Strategy

    chosen = [name.strip() for name in names.split(",") if name.strip()]
    if not chosen:
        raise ValueError(f"--strategies names no strategy; choose from {', '.join(STRATEGY_NAMES)}")
    unknown = [name for name in chosen if name not in DEFAULT_STRATEGIES]
    if unknown:
        raise ValueError(
            f"unknown strategy {unknown[0]!r} in --strategies; choose from {', '.join(DEFAULT_STRATEGIES)}"
        )
    repeated = sorted({name for name in chosen if chosen.count(name) > 1})
    if repeated:
        raise ValueError(f"--strategies names {', '.join(repeated)} more than once")
    kwargs = {name: dict(DEFAULT_STRATEGIES[name].generate_kwargs) for name in chosen}
    for option, value in overrides.items():
        if value is None:
            continue
        strategy, argument = STRATEGY_OPTIONS[option]
        if strategy not in kwargs:
            flag = "--" + option.replace("_", "-")
            raise ValueError(f"{flag} sets the {strategy} strategy, which --strategies leaves out")
        kwargs[strategy][argument] = value
    return [Strategy(name, kwargs[name]) for name in chosen]


def _read_prompts(path: Path) -> list[str]:
    """The non-blank lines of ``path``, without their line ends."""
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file {path} not found" + (" (a folder)" if path.is_dir() else ""))
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ValueError(f"--prompts-file {path} is not UTF-8 text: {error}") from None
    prompts = [line for line in lines if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts-file {path} holds no prompt (no non-blank line)")
    return prompts


def _check_json_path(path: Path | None) -> None:
    if path is not None and path.is_dir():
        raise ValueError(f"--json {path} is a folder: give a file name")


def _device(text: str | None) -> Any:
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device {text!r} is not a device (try cpu or cuda)") from None
    backend = getattr(torch, device.type, None)
    available = device.type == "cpu" or bool(getattr(backend, "is_available", lambda: False)())
    if not available:
        raise ValueError(f"--device {text}: {device.type} is not available on this machine")
    return device


# --- the model ------------------------------------------------------------------------------------------


def _load(model_dir: Path, tokenizer_dir: Path, device: Any) -> tuple[Any, Any]:
    """The model (in eval mode on ``device``) and tokenizer; ValueError / FileNotFoundError for a folder that
    is missing, not a save_pretrained folder, not a model that generates, or has no tokenizer."""
    from ..runs.report import require

    transformers = require("transformers", "tunekit decode", extra="hf")
    _check_folder(model_dir, "model")
    if not (model_dir / "config.json").is_file():
        raise ValueError(f"{model_dir} has no config.json: it is not a folder written by save_pretrained")
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the model config in {model_dir}: {_first_line(error)}") from None
    architecture = (config.architectures or [None])[0]
    if architecture is None:
        raise ValueError(f"{model_dir}/config.json names no architecture (its 'architectures' is empty)")
    model_class = getattr(transformers, architecture, None)
    if model_class is None:
        raise ValueError(f"{model_dir} holds a {architecture}, which transformers does not know")
    if not model_class.can_generate():
        raise ValueError(
            f"{model_dir} holds a {architecture}, which does not generate text: tunekit decode needs a "
            "causal LM or an encoder-decoder (seq2seq) model"
        )
    _check_folder(tokenizer_dir, "tokenizer")
    if not any((tokenizer_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"{tokenizer_dir} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): save it there with "
            "tokenizer.save_pretrained, or give its folder with --tokenizer DIR"
        )
    with _no_progress_bars(transformers):
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the tokenizer in {tokenizer_dir}: {_first_line(error)}") from None
        try:
            model = model_class.from_pretrained(model_dir)
        except (OSError, ValueError, RuntimeError) as error:  # RuntimeError: weights unlike the config
            raise ValueError(f"cannot load the model in {model_dir}: {_first_line(error)}") from None
    vocab = model.config.get_text_config().vocab_size
    if len(tokenizer) > vocab:  # its ids could fall outside the model's embedding table
        raise ValueError(
            f"the tokenizer in {tokenizer_dir} has {len(tokenizer)} tokens, the model only {vocab}: "
            "is it the model's tokenizer?"
        )
    return model.to(device).eval(), tokenizer


def _check_folder(path: Path, what: str) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{what} folder {path} not found")
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder: give the {what} folder save_pretrained wrote")


@contextlib.contextmanager
def _no_progress_bars(transformers: Any) -> Iterator[None]:
    """No loading progress bars inside (warnings stay: they explain a failed load); the caller's setting
    back on exit."""
    logging = transformers.utils.logging
    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            logging.enable_progress_bar()


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _describe_model(model_dir: Path, model: Any, settings: Settings) -> str:
    kind = "encoder-decoder" if model.config.is_encoder_decoder else "causal LM"
    parameters = sum(p.numel() for p in model.parameters())
    return (
        f"model: {model_dir} ({type(model).__name__}, {kind}, {parameters:,} parameters, {model.device}); "
        f"at most {settings.max_new_tokens} new tokens, seed {settings.seed}"
    )


# --- decoding and tables --------------------------------------------------------------------------------


def _inspect_prompt(
    model: Any, tokenizer: Any, prompt: str, number: int, settings: Settings, namespace: argparse.Namespace
) -> dict[str, Any]:
    """Decode one prompt with every strategy and score the given continuations, print the tables, and
    return the results (`Decoded`s) for the JSON report."""
    from ..decoding import (
        compare_strategies,
        format_comparison,
        format_steps,
        format_token_log_probs,
        score_continuation,
    )

    markdown = namespace.markdown
    _check_positions(model, tokenizer, prompt, number, settings)
    decoded = compare_strategies(
        model,
        prompt,
        tokenizer,
        strategies=settings.strategies,
        max_new_tokens=settings.max_new_tokens,
        k=settings.k,
        distribution=settings.distribution,
        seed=settings.seed,
    )
    scored = [score_continuation(model, prompt, text, tokenizer, k=settings.k) for text in settings.scores]
    sections = [
        f"{'## ' if markdown else ''}prompt {number}: {prompt!r} ({_tokens(len(decoded[0].prompt_ids))})",
        format_comparison(decoded, markdown=markdown),
    ]
    for result in decoded:
        if not namespace.no_steps:
            sections.append(format_steps(result, markdown=markdown))
        if namespace.log_probs:
            sections.append(format_token_log_probs(result, markdown=markdown))
    for text, result in zip(settings.scores, scored, strict=True):
        sections.append(f"given continuation {text!r}, scored by teacher forcing")
        sections.append(format_steps(result, markdown=markdown))
        sections.append(format_token_log_probs(result, markdown=markdown))
    print("\n" + "\n\n".join(sections), flush=True)
    return {"prompt": prompt, "decoded": decoded, "scored": scored}


def _check_positions(model: Any, tokenizer: Any, prompt: str, number: int, settings: Settings) -> None:
    """Refuse a causal LM's prompt + continuation longer than its position table (generate would fail with
    an index error deep inside the model); models without ``max_position_embeddings`` are not checked."""
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if model.config.is_encoder_decoder or not isinstance(limit, int):
        return
    prompt_tokens = len(tokenizer(prompt)["input_ids"])
    given = [len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in settings.scores]
    new = settings.max_new_tokens
    longest = max([new, *given])
    if prompt_tokens + longest > limit:
        what = f"--max-new-tokens {new}" if longest == new else "--score"
        raise ValueError(
            f"prompt {number} ({_tokens(prompt_tokens)}) and {what} need {prompt_tokens + longest} "
            f"positions, more than the model's {limit}"
        )


def _tokens(count: int) -> str:
    return f"{count} token{'' if count == 1 else 's'}"


def _json_report(
    model_dir: Path, model: Any, device: Any, settings: Settings, results: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "model": str(model_dir),
        "architecture": type(model).__name__,
        "encoder_decoder": bool(model.config.is_encoder_decoder),
        "device": str(device),
        "max_new_tokens": settings.max_new_tokens,
        "candidates": settings.k,
        "seed": settings.seed,
        "distribution": settings.distribution,
        "prompts": [
            {
                "prompt": result["prompt"],
                "prompt_ids": list(result["decoded"][0].prompt_ids),
                "strategies": [_decoded_json(decoded) for decoded in result["decoded"]],
                "scored": [_decoded_json(decoded) for decoded in result["scored"]],
            }
            for result in results
        ],
    }


def _decoded_json(decoded: Any) -> dict[str, Any]:
    """A `Decoded` as JSON: its fields (the strategy as name + settings) and its sum and mean log-prob."""
    fields = dataclasses.asdict(decoded)
    del fields["prompt_ids"], fields["prompt_text"]  # once per prompt in the report
    strategy = fields.pop("strategy")
    return {
        "strategy": strategy["name"],
        "settings": strategy["generate_kwargs"],
        **fields,
        "num_tokens": decoded.num_tokens,
        "sum_log_prob": decoded.sum_log_prob,
        "mean_log_prob": decoded.mean_log_prob,
    }
