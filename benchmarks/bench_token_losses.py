"""Forward+backward time and peak memory of tunekit's token-level objectives, as ratios against
`F.cross_entropy` on the same logits, against the naive references of the tests, and for the fused-linear
forms against `hidden @ weight.T` followed by the loss. Not a test: run it by hand.

    python benchmarks/bench_token_losses.py                       # T in {2048, 8192} x V in {32000, 128256}
    python benchmarks/bench_token_losses.py --tokens 2048 --vocab 32000 --repeats 3
    python benchmarks/bench_token_losses.py --suite options       # cross_entropy with class weights and
                                                                  # probability targets vs F.cross_entropy
                                                                  # with the same options

Writes a markdown table to stdout and to --out (with a JSON of the raw numbers beside it).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(ROOT / "benchmarks")]

from harness import median_times, peak_memory, peak_memory_here  # noqa: E402
from reference import ref_cross_entropy, ref_dece_loss, ref_gce_loss, ref_smile_loss  # noqa: E402
from tunekit.losses import (  # noqa: E402
    cross_entropy,
    dece_loss,
    gce_loss,
    linear_cross_entropy,
    linear_dece_loss,
    linear_gce_loss,
    linear_smile_loss,
    smile_loss,
)

SEQUENCE_LENGTH = 512  # SMILE's subsets are per sequence: T tokens are T / 512 sequences
SMOOTHING = 0.1

# loss(logits (T, V), target (T,)) -> scalar; the value is the number of tokens x vocab buffers its
# forward + backward holds at its peak, used only to skip cases that cannot fit in memory.
LOGITS_CASES: dict[str, tuple[Callable, float]] = {
    "F.cross_entropy": (lambda x, t: F.cross_entropy(x, t), 4),
    f"F.cross_entropy ls={SMOOTHING}": (lambda x, t: F.cross_entropy(x, t, label_smoothing=SMOOTHING), 4),
    "tunekit cross_entropy": (lambda x, t: cross_entropy(x, t), 2.2),
    f"tunekit cross_entropy ls={SMOOTHING}": (
        lambda x, t: cross_entropy(x, t, label_smoothing=SMOOTHING),
        2.2,
    ),
    "tunekit dece": (lambda x, t: dece_loss(x, t, 1), 2.2),
    "tunekit smile": (lambda x, t: smile_loss(*_sequences(x, t)), 2.2),
    "tunekit gce": (lambda x, t: gce_loss(x, t), 2.2),
    f"naive cross_entropy ls={SMOOTHING}": (
        lambda x, t: ref_cross_entropy(x, t, label_smoothing=SMOOTHING),
        5,
    ),
    "naive dece": (lambda x, t: ref_dece_loss(x, t, 1), 9),
    "naive smile": (lambda x, t: ref_smile_loss(*_sequences(x, t)), 6),
    "naive gce": (lambda x, t: ref_gce_loss(x, t), 9),
}
# loss(hidden (T, H), weight (V, H), target (T,)) -> scalar
FUSED_CASES: dict[str, tuple[Callable, float]] = {
    "hidden @ W.T + F.cross_entropy": (lambda h, w, t: F.cross_entropy(h @ w.T, t), 5),
    "fused linear_cross_entropy": (lambda h, w, t: linear_cross_entropy(h, w, t), 0.3),
    "hidden @ W.T + dece_loss": (lambda h, w, t: dece_loss(h @ w.T, t, 1), 3.2),
    "fused linear_dece_loss": (lambda h, w, t: linear_dece_loss(h, w, t, 1), 0.3),
    "hidden @ W.T + smile_loss": (lambda h, w, t: smile_loss(*_sequences(h @ w.T, t)), 3.2),
    "fused linear_smile_loss": (lambda h, w, t: linear_smile_loss(*_sequences(h, t, weight=w)), 0.3),
    "hidden @ W.T + gce_loss": (lambda h, w, t: gce_loss(h @ w.T, t), 3.2),
    "fused linear_gce_loss": (lambda h, w, t: linear_gce_loss(h, w, t), 0.3),
}
# --suite options: cross_entropy with class weights and probability targets ("soft": a (T, V) target, an
# input like the logits), each against F.cross_entropy with the same options. (loss, buffers, target kind)
OPTION_LOGITS_CASES: dict[str, tuple[Callable, float, str]] = {
    "F.cross_entropy": (lambda x, t: F.cross_entropy(x, t), 4, "ids"),
    "F.cross_entropy weight": (
        lambda x, t: F.cross_entropy(x, t, weight=_class_weight(x.shape[-1], x.device)),
        4,
        "ids",
    ),
    "tunekit cross_entropy weight": (
        lambda x, t: cross_entropy(x, t, weight=_class_weight(x.shape[-1], x.device)),
        2.2,
        "ids",
    ),
    f"F.cross_entropy weight ls={SMOOTHING}": (
        lambda x, t: F.cross_entropy(
            x, t, weight=_class_weight(x.shape[-1], x.device), label_smoothing=SMOOTHING
        ),
        4,
        "ids",
    ),
    f"tunekit cross_entropy weight ls={SMOOTHING}": (
        lambda x, t: cross_entropy(
            x, t, weight=_class_weight(x.shape[-1], x.device), label_smoothing=SMOOTHING
        ),
        2.2,
        "ids",
    ),
    "F.cross_entropy soft": (lambda x, p: F.cross_entropy(x, p), 6, "probs"),
    "tunekit cross_entropy soft": (lambda x, p: cross_entropy(x, p), 3.2, "probs"),
    f"F.cross_entropy soft weight ls={SMOOTHING}": (
        lambda x, p: F.cross_entropy(
            x, p, weight=_class_weight(x.shape[-1], x.device), label_smoothing=SMOOTHING
        ),
        6,
        "probs",
    ),
    f"tunekit cross_entropy soft weight ls={SMOOTHING}": (
        lambda x, p: cross_entropy(
            x, p, weight=_class_weight(x.shape[-1], x.device), label_smoothing=SMOOTHING
        ),
        3.2,
        "probs",
    ),
}
OPTION_FUSED_CASES: dict[str, tuple[Callable, float, str]] = {
    "hidden @ W.T + F.cross_entropy": (lambda h, w, t: F.cross_entropy(h @ w.T, t), 5, "ids"),
    "hidden @ W.T + F.cross_entropy weight": (
        lambda h, w, t: F.cross_entropy(h @ w.T, t, weight=_class_weight(w.shape[0], w.device)),
        5,
        "ids",
    ),
    "fused linear_cross_entropy weight": (
        lambda h, w, t: linear_cross_entropy(h, w, t, class_weight=_class_weight(w.shape[0], w.device)),
        0.3,
        "ids",
    ),
    "hidden @ W.T + F.cross_entropy soft": (lambda h, w, p: F.cross_entropy(h @ w.T, p), 7, "probs"),
    "fused linear_cross_entropy soft": (lambda h, w, p: linear_cross_entropy(h, w, p), 1.3, "probs"),
}
# (case, reference) pairs whose ratios the table reports
LOGITS_RATIOS = {
    f"tunekit cross_entropy ls={SMOOTHING}": f"naive cross_entropy ls={SMOOTHING}",
    "tunekit dece": "naive dece",
    "tunekit smile": "naive smile",
    "tunekit gce": "naive gce",
}
FUSED_RATIOS = {
    "fused linear_cross_entropy": "hidden @ W.T + F.cross_entropy",
    "fused linear_dece_loss": "hidden @ W.T + dece_loss",
    "fused linear_smile_loss": "hidden @ W.T + smile_loss",
    "fused linear_gce_loss": "hidden @ W.T + gce_loss",
}
OPTION_RATIOS = {
    name: name.replace("tunekit cross_entropy", "F.cross_entropy")
    for name in OPTION_LOGITS_CASES
    if name.startswith("tunekit")
} | {
    name: name.replace("fused linear_cross_entropy", "hidden @ W.T + F.cross_entropy")
    for name in OPTION_FUSED_CASES
    if name.startswith("fused")
}
SUITES = {
    "objectives": {"logits": LOGITS_CASES, "fused": FUSED_CASES},
    "options": {"logits": OPTION_LOGITS_CASES, "fused": OPTION_FUSED_CASES},
}
# the last two columns: what each row's own reference is
REFERENCE_COLUMN = {"objectives": "naive/unfused", "options": "F.cross_entropy, same options"}


def _sequences(x, t, weight=None):
    """(T, ...) inputs and (T,) targets as (B, N, ...) and (B, N) for SMILE."""
    batch = max(1, t.shape[0] // SEQUENCE_LENGTH)
    x, t = x.reshape(batch, -1, x.shape[-1]), t.reshape(batch, -1)
    return (x, t) if weight is None else (x, weight, t)


@functools.cache
def _class_weight(vocab: int, device: torch.device) -> torch.Tensor:
    """Fixed per-class weights (V,) in [0.5, 1.5)."""
    return (torch.rand(vocab, generator=torch.Generator().manual_seed(1)) + 0.5).to(device)


def case(kind: str, name: str) -> tuple[Callable, float, str]:
    """(loss, buffers, target kind "ids" or "probs") of a case of either suite."""
    for suite in SUITES.values():
        if name in suite[kind]:
            loss_fn, buffers, *target = suite[kind][name]
            return loss_fn, buffers, target[0] if target else "ids"
    raise KeyError(name)


def make_inputs(kind: str, tokens: int, vocab: int, hidden: int, device: str, target_kind: str = "ids"):
    generator = torch.Generator().manual_seed(0)
    target = torch.randint(vocab, (tokens,), generator=generator).to(device)
    if target_kind == "probs":  # soft labels: a softmax of random scores, no gradient
        target = torch.softmax(torch.randn(tokens, vocab, generator=generator), -1).to(device)
    if kind == "logits":
        return (torch.randn(tokens, vocab, generator=generator).to(device).requires_grad_(), target)
    h = torch.randn(tokens, hidden, generator=generator).to(device).requires_grad_()
    w = (torch.randn(vocab, hidden, generator=generator) / hidden**0.5).to(device).requires_grad_()
    return (h, w, target)


def builder(kind: str, name: str, tokens: int, vocab: int, hidden: int, device: str, inputs=None):
    loss_fn, _, target_kind = case(kind, name)

    def build():
        args = inputs if inputs is not None else make_inputs(kind, tokens, vocab, hidden, device, target_kind)

        def run():
            for a in args[:-1]:
                a.grad = None
            loss_fn(*args).backward()

        return run

    return build


def fits(kind: str, name: str, tokens: int, vocab: int) -> bool:
    _, buffers, target_kind = case(kind, name)
    buffers += target_kind == "probs"  # the (T, V) target, an input
    with open("/proc/meminfo") as meminfo:
        available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable"))
    return buffers * tokens * vocab * 4 < 0.8 * available


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256])
    parser.add_argument("--hidden", type=int, default=256, help="hidden size H of the fused-linear cases")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--kinds", nargs="+", default=["logits", "fused"], choices=["logits", "fused"])
    parser.add_argument("--suite", default="objectives", choices=sorted(SUITES))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "token_losses.md")
    parser.add_argument("--peak-memory", nargs=6, metavar=("KIND", "NAME", "T", "V", "H", "DEVICE"))
    args = parser.parse_args()

    if args.peak_memory:  # child process: one case's peak memory
        kind, name, tokens, vocab, hidden, device = args.peak_memory
        build = builder(kind, name, int(tokens), int(vocab), int(hidden), device)
        print(json.dumps({"peak_bytes": peak_memory_here(build, device)}))
        return

    results = []
    for tokens in args.tokens:
        for vocab in args.vocab:
            for kind in args.kinds:
                results.append(measure(kind, tokens, vocab, args))
                write_report(results, args)
    print(write_report(results, args))


def measure(kind: str, tokens: int, vocab: int, args) -> dict:
    suite = SUITES[args.suite][kind]
    names = [n for n in suite if fits(kind, n, tokens, vocab)]
    skipped = [n for n in suite if n not in names]
    print(f"[{kind}] T={tokens} V={vocab}: timing {len(names)} cases", file=sys.stderr, flush=True)
    inputs = make_inputs(kind, tokens, vocab, args.hidden, args.device)
    by_target = {"ids": inputs}
    if any(case(kind, n)[2] == "probs" for n in names):  # the same logits (hidden, weight), soft targets
        probs = make_inputs(kind, tokens, vocab, args.hidden, args.device, "probs")[-1]
        by_target["probs"] = (*inputs[:-1], probs)
    cases = {
        n: builder(kind, n, tokens, vocab, args.hidden, args.device, by_target[case(kind, n)[2]])
        for n in names
    }
    times = median_times(cases, device=args.device, warmup=args.warmup, repeats=args.repeats)
    del inputs, by_target, cases
    memory = {}
    for name in names:
        print(f"[{kind}] T={tokens} V={vocab}: peak memory of {name}", file=sys.stderr, flush=True)
        memory[name] = peak_memory(
            __file__, [kind, name, str(tokens), str(vocab), str(args.hidden), args.device]
        )
    return {
        "kind": kind,
        "tokens": tokens,
        "vocab": vocab,
        "hidden": args.hidden,
        "time_s": times,
        "peak_bytes": memory,
        "skipped_for_memory": skipped,
    }


def write_report(results: list[dict], args) -> str:
    lines = [
        f"Device: {args.device} ({platform.machine()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; median of {args.repeats} forward+backward runs "
        f"after {args.warmup} warm-up; "
        "peak memory above the inputs, one fresh process per case. Ratios < 1 are better.",
        "",
        "| T | V | objective | time (s) | time vs F.cross_entropy | memory vs F.cross_entropy "
        f"| time vs {REFERENCE_COLUMN[args.suite]} | memory vs {REFERENCE_COLUMN[args.suite]} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        times, memory = result["time_s"], result["peak_bytes"]
        base = "F.cross_entropy" if result["kind"] == "logits" else "hidden @ W.T + F.cross_entropy"
        pairs = OPTION_RATIOS if args.suite == "options" else LOGITS_RATIOS | FUSED_RATIOS
        for name in times:
            if name.startswith(("naive", "hidden @")) and name != base:
                continue
            if args.suite == "options" and name.startswith("F.") and name != base:
                continue  # a reference: its time is in the ratios
            ref = pairs.get(name)
            lines.append(
                f"| {result['tokens']} | {result['vocab']} | {name} | {times[name]:.3f} "
                f"| {_ratio(times, name, base)} | {_ratio(memory, name, base)} "
                f"| {_ratio(times, name, ref)} | {_ratio(memory, name, ref)} |"
            )
        for name in result["skipped_for_memory"]:
            lines.append(
                f"| {result['tokens']} | {result['vocab']} | {name} | not run: needs more memory |||||"
            )
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return report


def _ratio(values: dict, name: str, ref: str | None) -> str:
    if ref is None or ref not in values or name not in values or values[ref] <= 0:
        return ""
    return f"{values[name] / values[ref]:.2f}x"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
