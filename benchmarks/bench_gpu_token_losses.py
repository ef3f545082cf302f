"""Forward+backward time and peak memory of tunekit's token objectives on a GPU, in bf16, against
`F.cross_entropy`, torch's chunked `F.linear_cross_entropy`, Liger-Kernel's cross-entropy and fused-linear
cross-entropy, and apple's cut-cross-entropy, each where installed. Not a test: run it by hand on a machine
with CUDA (tunekit runs its Triton kernels there; see `tunekit.losses._backend`).

    python benchmarks/bench_gpu_token_losses.py                  # T = 8192, V in {32000, 128256}, H = 4096
    python benchmarks/bench_gpu_token_losses.py --vocab 128256 --repeats 20
    python benchmarks/bench_gpu_token_losses.py --smoke          # tiny shapes: checks the script itself runs
                                                                 # (on CPU through Triton's interpreter)

Writes a markdown table to stdout and to --out, with a JSON of the raw numbers beside it. The targets of
issue 16 are checked in the table: each tunekit objective within 1.2x of Liger's cross-entropy time (the
logits forms against `LigerCrossEntropyLoss`, the fused forms against `LigerFusedLinearCrossEntropyLoss`), and
the fused forms at or below cut-cross-entropy's peak memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from harness import median_times, sync  # noqa: E402
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

SEQUENCE_LENGTH = 2048  # SMILE scores sequences: T tokens are T / 2048 of them
SMOOTHING = 0.1
TIME_TARGET = 1.2  # times Liger's cross-entropy
LIGER_CE, LIGER_FUSED, CCE = "liger cross_entropy", "liger fused_linear_cross_entropy", "cut_cross_entropy"
HF_CE, HF_FUSED = "F.cross_entropy (fp32 logits, as HF)", "hidden @ W.T + F.cross_entropy"


def _sequences(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch = max(1, t.shape[0] // SEQUENCE_LENGTH)
    return x.reshape(batch, -1, x.shape[-1]), t.reshape(batch, -1)


def _smile(subset: str) -> Callable:
    return lambda x, t: smile_loss(*_sequences(x, t), subset=subset)


def _linear_smile(subset: str) -> Callable:
    def loss(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, t = _sequences(h, t)
        return linear_smile_loss(h, w, t, subset=subset)

    return loss


def logits_cases() -> dict[str, Callable]:
    """name -> loss(logits (T, V) bf16, target (T,))."""
    cases = {
        HF_CE: lambda x, t: F.cross_entropy(x.float(), t),
        "tunekit cross_entropy": lambda x, t: cross_entropy(x, t),
        f"tunekit cross_entropy ls={SMOOTHING}": lambda x, t: cross_entropy(x, t, label_smoothing=SMOOTHING),
        "tunekit dece": lambda x, t: dece_loss(x, t, 1),
        "tunekit gce": lambda x, t: gce_loss(x, t),
        **{f"tunekit smile {subset}": _smile(subset) for subset in ("sequence", "random", "reverse")},
    }
    try:
        from liger_kernel.transformers import LigerCrossEntropyLoss

        liger = LigerCrossEntropyLoss()
        cases[LIGER_CE] = lambda x, t: liger(x, t)  # writes its gradient over the logits, in place
    except ImportError:
        pass
    return cases


def fused_cases() -> dict[str, Callable]:
    """name -> loss(hidden (T, H) bf16, weight (V, H) bf16, target (T,))."""
    cases = {
        HF_FUSED: lambda h, w, t: F.cross_entropy((h @ w.T).float(), t),
        "tunekit linear_cross_entropy": lambda h, w, t: linear_cross_entropy(h, w, t),
        f"tunekit linear_cross_entropy ls={SMOOTHING}": (
            lambda h, w, t: linear_cross_entropy(h, w, t, label_smoothing=SMOOTHING)
        ),
        "tunekit linear_dece_loss": lambda h, w, t: linear_dece_loss(h, w, t, 1),
        "tunekit linear_gce_loss": lambda h, w, t: linear_gce_loss(h, w, t),
        **{
            f"tunekit linear_smile {subset}": _linear_smile(subset)
            for subset in ("sequence", "random", "reverse")
        },
    }
    if hasattr(F, "linear_cross_entropy") and hasattr(torch.nn, "LinearCrossEntropyOptions"):
        options = torch.nn.LinearCrossEntropyOptions()
        cases["torch F.linear_cross_entropy (chunked)"] = lambda h, w, t: F.linear_cross_entropy(
            h, w, t, options=options
        )
    try:
        from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

        liger = LigerFusedLinearCrossEntropyLoss()
        cases[LIGER_FUSED] = lambda h, w, t: liger(w, h, t)
    except ImportError:
        pass
    try:
        from cut_cross_entropy import linear_cross_entropy as cce

        cases[CCE] = lambda h, w, t: cce(h, w, t)
    except ImportError:
        pass
    return cases


def make_inputs(kind: str, tokens: int, vocab: int, hidden: int, device: str) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator(device=device).manual_seed(0)
    target = torch.randint(vocab, (tokens,), generator=generator, device=device)
    if kind == "logits":
        logits = torch.randn(tokens, vocab, generator=generator, device=device, dtype=torch.bfloat16)
        return logits.requires_grad_(), target
    h = torch.randn(tokens, hidden, generator=generator, device=device, dtype=torch.bfloat16)
    w = torch.randn(vocab, hidden, generator=generator, device=device, dtype=torch.bfloat16) / hidden**0.5
    return h.requires_grad_(), w.requires_grad_(), target


def runner(loss_fn: Callable, inputs: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    def run() -> None:
        for tensor in inputs[:-1]:
            tensor.grad = None
        loss_fn(*inputs).backward()

    return run


def peak_bytes(run: Callable[[], None], device: str) -> int | None:
    """Peak CUDA memory above what is held before the call (the inputs), or None off CUDA."""
    if device != "cuda":
        return None
    run()  # the first call's gradients exist from here on: the peak counts the call's own buffers
    gc.collect()
    sync(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    sync(device)
    return torch.cuda.max_memory_allocated() - base


def measure(kind: str, tokens: int, vocab: int, args) -> dict:
    cases = logits_cases() if kind == "logits" else fused_cases()
    inputs = make_inputs(kind, tokens, vocab, args.hidden, args.device)
    runs, failed = {}, {}
    for name, loss_fn in cases.items():
        run = runner(loss_fn, inputs)
        try:
            run()  # compiles the kernels; a case that cannot run here is reported, not fatal
        except Exception as error:  # third-party kernels fail in many ways
            failed[name] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
            continue
        runs[name] = run
    print(f"[{kind}] T={tokens} V={vocab}: timing {len(runs)} cases", file=sys.stderr, flush=True)
    times = median_times(
        {name: (lambda run=run: run) for name, run in runs.items()},
        device=args.device,
        warmup=args.warmup,
        repeats=args.repeats,
    )
    memory = {name: peak_bytes(run, args.device) for name, run in runs.items()}
    return {
        "kind": kind,
        "tokens": tokens,
        "vocab": vocab,
        "hidden": args.hidden,
        "time_s": times,
        "peak_bytes": memory,
        "failed": failed,
    }


def write_report(results: list[dict], args) -> str:
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.machine()
    measured = args.device == "cuda" and not args.smoke  # else no verdict: the times say nothing of a GPU
    lines = [
        f"Device: {args.device} ({device_name}), torch {torch.__version__}, bf16 inputs; median of "
        f"{args.repeats} forward+backward runs after {args.warmup} warm-up; peak memory above the inputs and "
        "their gradients. Targets (issue 16): time within "
        f"{TIME_TARGET}x of Liger's cross-entropy, fused memory at or below cut-cross-entropy's."
        + ("" if measured else " Not a GPU measurement (no CUDA, or --smoke): no verdicts."),
        "",
        "| T | V | H | objective | time (ms) | peak memory (MiB) | time vs Liger CE | memory vs CCE "
        "| target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        times, memory = result["time_s"], result["peak_bytes"]
        liger = LIGER_CE if result["kind"] == "logits" else LIGER_FUSED
        hidden = result["hidden"] if result["kind"] == "fused" else ""
        for name in times:
            time_ratio = times[name] / times[liger] if liger in times else None
            memory_ratio = (
                memory[name] / memory[CCE] if memory.get(CCE) and memory.get(name) is not None else None
            )
            verdict = ""
            if measured and name.startswith("tunekit") and time_ratio is not None:
                met = time_ratio <= TIME_TARGET and (memory_ratio is None or memory_ratio <= 1.0)
                verdict = "met" if met else "missed"
            mib = "" if memory[name] is None else f"{memory[name] / 2**20:.0f}"
            lines.append(
                f"| {result['tokens']} | {result['vocab']} | {hidden} | {name} | {times[name] * 1e3:.2f} "
                f"| {mib} | {_format(time_ratio)} | {_format(memory_ratio)} | {verdict} |"
            )
        for name, reason in result["failed"].items():
            lines.append(
                f"| {result['tokens']} | {result['vocab']} | {hidden} | {name} | failed: {reason} |||||"
            )
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    return report


def _format(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, nargs="+", default=[8192])
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128256])
    parser.add_argument("--hidden", type=int, default=4096, help="hidden size H of the fused cases")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--kinds", nargs="+", default=["logits", "fused"], choices=["logits", "fused"])
    parser.add_argument("--smoke", action="store_true", help="T=16, V=100, H=16, one repeat")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gpu_token_losses.md")
    args = parser.parse_args()
    if args.smoke:
        args.tokens, args.vocab, args.hidden, args.repeats, args.warmup = [16], [100], 16, 1, 0
    results = []
    for tokens in args.tokens:
        for vocab in args.vocab:
            for kind in args.kinds:
                results.append(measure(kind, tokens, vocab, args))
                write_report(results, args)  # what is measured so far survives a crash
    print(write_report(results, args))


if __name__ == "__main__":
    main()
