"""BAdam (`tunekit.tricks.BlockOptimizer` around AdamW) against AdamW over every parameter: the bytes held by
gradients + optimizer state, the peak memory of a training step, and the time per step, on a tiny Llama
(8 layers, hidden 256, vocabulary 32,000, untied). Not a test: run it by hand.

    python benchmarks/bench_block_optimizer.py                  # CPU, fp32, 4 x 256 tokens a step
    python benchmarks/bench_block_optimizer.py --device cuda --dtype bfloat16

Each case runs in a fresh process (its peak memory is its own): build the model and the optimizer, take
``--warmup`` steps (AdamW's state exists after the first; BAdam's for the active layer), then ``--steps``
measured steps of forward, cross-entropy, backward, ``step()`` and ``zero_grad()``. "held" is the bytes of the
gradients, the optimizer state and BAdam's fp32 master copies just before and just after each measured
``step()``, the largest; "peak" is the process's peak resident set (Linux's VmHWM, reset
after the warm-up) during the measured steps above the resident set with the model alone (on CUDA,
`torch.cuda.max_memory_allocated` above the model). BAdam switches layers every ``--switch-every`` steps (2
by default, so the measured steps cross switches). Writes a markdown table to stdout and to --out, with the
raw numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from harness import current_memory, peak_since_reset, reset_peak, tiny_llama  # noqa: E402

CASES = ("adamw", "badam")


def held_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Bytes of the gradients, the optimizer state and the fp32 master copies (BAdam's, in its state dict)."""
    grads = sum(p.grad.nbytes for p in model.parameters() if p.grad is not None)
    state = sum(v.nbytes for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v))
    masters = 0
    if hasattr(optimizer, "blocks"):
        masters = sum(m.nbytes for m in optimizer.state_dict()["block_schedule"]["masters"].values())
    return grads + state + masters


def _elapsed(start: float, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_case(case: str, args: argparse.Namespace) -> dict:
    from tunekit.tricks import BlockOptimizer

    model = tiny_llama(vocab=args.vocab, hidden=args.hidden, layers=args.layers, length=args.length).to(
        args.device, getattr(torch, args.dtype)
    )
    generator = torch.Generator().manual_seed(1)
    batches = [
        torch.randint(args.vocab, (args.batch, args.length), generator=generator).to(args.device)
        for _ in range(args.warmup + args.steps)
    ]
    gc.collect()
    model_only = current_memory(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    if case == "badam":
        optimizer = BlockOptimizer(model, optimizer, switch_every=args.switch_every, order="ascending")
    times, held = [], []
    for step, ids in enumerate(batches):
        measured = step >= args.warmup
        if step == args.warmup:
            gc.collect()
            reset_peak(args.device)
        seconds = 0.0  # the step's own work: the byte counts between its parts are not timed
        start = time.perf_counter()
        model(input_ids=ids, labels=ids).loss.backward()
        seconds += _elapsed(start, args.device)
        if measured:  # the gradients, and the state of the steps before
            held.append(held_bytes(model, optimizer))
        start = time.perf_counter()
        optimizer.step()
        seconds += _elapsed(start, args.device)
        if measured:
            held.append(held_bytes(model, optimizer))
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        seconds += _elapsed(start, args.device)
        if measured:
            times.append(seconds)
    parameters = sum(p.numel() for p in model.parameters())
    return {
        "times": times,
        "held_bytes": max(held),
        "peak_bytes": peak_since_reset(args.device) - model_only,
        "model_bytes": sum(p.nbytes for p in model.parameters()),
        "parameters": parameters,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--switch-every", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "measured" / "block-optimizer-cpu-2cores.md"
    )
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # child process: one case
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    results = {}
    for case in CASES:
        print(f"running {case} ...", file=sys.stderr, flush=True)
        child = [arg for arg in sys.argv[1:]]
        out = subprocess.run(
            [sys.executable, __file__, *child, "--case", case], check=True, capture_output=True, text=True
        ).stdout
        results[case] = json.loads(out.strip().splitlines()[-1])
    write(results, args)


def write(results: dict, args: argparse.Namespace) -> None:
    adamw = results["adamw"]
    mib = 2**20
    rows = []
    for case in CASES:
        r = results[case]
        step = statistics.median(r["times"])
        rows.append(
            f"| {case} | {r['held_bytes'] / mib:.1f} | {r['held_bytes'] / adamw['held_bytes']:.3f} "
            f"| {r['peak_bytes'] / mib:.1f} | {r['peak_bytes'] / adamw['peak_bytes']:.3f} "
            f"| {step * 1e3:.0f} | {step / statistics.median(adamw['times']):.2f} |"
        )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}"
        if args.device == "cpu"
        else torch.cuda.get_device_name()
    )
    text = "\n".join(
        [
            f"# BAdam against AdamW: a tiny Llama ({args.layers} layers, hidden {args.hidden}, vocabulary "
            f"{args.vocab}, untied; {adamw['parameters'] / 1e6:.1f} M parameters, {args.dtype}, "
            f"{adamw['model_bytes'] / mib:.0f} MiB of weights)",
            "",
            f"{args.device} ({machine}); batches of {args.batch} x {args.length} tokens; "
            f"{args.warmup} warm-up and {args.steps} measured steps; BAdam switches layer every "
            f"{args.switch_every} steps. Ratios are against AdamW in the same run.",
            "",
            "| optimizer | gradients + state (MiB) | ratio | peak above the weights (MiB) | ratio "
            "| ms / step | ratio |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "Command: `python benchmarks/bench_block_optimizer.py " + " ".join(a for a in sys.argv[1:]) + "`",
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(
        json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=1)
    )


if __name__ == "__main__":
    main()
