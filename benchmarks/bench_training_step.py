"""One whole training step (forward, backward, AdamW step) of a tiny Llama with a large vocabulary through
`TunekitTrainer`: peak memory and time of the fused path (``TrainerLoss(..., fused=True)``) against the
logits path (``fused=False``) and against the model's own Hugging Face loss. Not a test: run it by hand.

    python benchmarks/bench_training_step.py                       # V = 128,256, H = 256, 2 layers, 4 x 1,024
    python benchmarks/bench_training_step.py --vocab 32000 --steps 2

Each case runs in a fresh process (so that its peak memory is its own): the Trainer builds the model and
AdamW (``--optim adamw_torch_fused`` by default, TRL's), runs ``--warmup`` steps (the optimizer state exists
after the first), then ``--steps`` measured steps. Time is the median step; peak memory is the process's
peak resident set (Linux's VmHWM, reset after the warm-up) during the measured steps: weights, gradients,
AdamW state and the step's activations (on CUDA, `torch.cuda.max_memory_allocated`). Writes a markdown
table to stdout and to --out, with the raw numbers as JSON beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

from harness import current_memory, peak_since_reset, reset_peak, tiny_llama  # noqa: E402

OBJECTIVES = ("cross_entropy", "dece", "smile")
PATHS = ("fused", "logits")


def cases() -> list[tuple[str, str]]:
    """(objective, path) of every case: the model's own loss once, then each objective's two paths."""
    return [("hf_loss", "model"), *[(objective, path) for objective in OBJECTIVES for path in PATHS]]


def run_case(objective: str, path: str, args: argparse.Namespace) -> dict:
    """Train `args.warmup + args.steps` steps in this process; the measured steps' times and peak memory."""
    import transformers

    from tunekit.hf import TrainerLoss, TunekitTrainer

    model = tiny_llama(vocab=args.vocab, hidden=args.hidden, layers=args.layers, length=args.length).to(
        args.device
    )
    generator = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(args.batch * (args.warmup + args.steps)):
        input_ids = torch.randint(args.vocab, (args.length,), generator=generator)
        labels = input_ids.clone()
        labels[: args.length // 8] = -100  # a masked prompt
        rows.append({"input_ids": input_ids, "labels": labels})
    loss_func = None if path == "model" else TrainerLoss(objective, task="causal_lm", fused=path == "fused")
    times: list[float] = []
    peak: dict[str, int] = {}

    class Measure(transformers.TrainerCallback):
        def on_step_begin(self, a, state, control, **kwargs):
            if state.global_step == args.warmup:  # the measured steps start: reset the peak
                reset_peak(args.device)
                peak["before"] = current_memory(args.device)
            self.started = time.perf_counter()

        def on_step_end(self, a, state, control, **kwargs):
            if args.device == "cuda":
                torch.cuda.synchronize()
            if state.global_step > args.warmup:
                times.append(time.perf_counter() - self.started)

    with tempfile.TemporaryDirectory() as out_dir:
        trainer = TunekitTrainer(
            model=model,
            args=transformers.TrainingArguments(
                out_dir,
                per_device_train_batch_size=args.batch,
                max_steps=args.warmup + args.steps,
                learning_rate=1e-4,
                optim=args.optim,
                use_cpu=args.device == "cpu",
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
            ),
            train_dataset=rows,
            compute_loss_func=loss_func,
            callbacks=[Measure()],
        )
        trainer.train()
    return {"times": times, "peak_bytes": peak_since_reset(args.device), "before_bytes": peak["before"]}


def measure(objective: str, path: str, args: argparse.Namespace) -> dict:
    """`run_case` in a fresh process."""
    command = [sys.executable, __file__, "--case", objective, path, *_shared_args(args)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _shared_args(args: argparse.Namespace) -> list[str]:
    names = ("vocab", "hidden", "layers", "batch", "length", "warmup", "steps", "device", "optim")
    return [item for name in names for item in (f"--{name}", str(getattr(args, name)))]


def table(results: dict[tuple[str, str], dict]) -> str:
    lines = [
        "| loss | path | step time (s) | peak memory (GB) | of which the step (GB) | time vs logits path "
        "| memory vs logits path | time vs HF loss | memory vs HF loss |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    hf = results[("hf_loss", "model")]
    for (objective, path), result in results.items():
        time_s, peak = statistics.median(result["times"]), result["peak_bytes"]
        logits = results.get((objective, "logits"))
        versus = ["", ""]
        if logits is not None and path == "fused":
            versus = [
                f"{time_s / statistics.median(logits['times']):.2f}x",
                f"{peak / logits['peak_bytes']:.2f}x",
            ]
        versus_hf = [f"{time_s / statistics.median(hf['times']):.2f}x", f"{peak / hf['peak_bytes']:.2f}x"]
        name = "the model's own (F.cross_entropy)" if path == "model" else objective
        step = (peak - result["before_bytes"]) / 1e9  # above the weights and AdamW state held before it
        cells = [name, path, f"{time_s:.2f}", f"{peak / 1e9:.2f}", f"{step:.2f}", *versus, *versus_hf]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vocab", type=int, default=128_256)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    # TRL's default: one fused kernel, no parameter-sized temporaries ("adamw_torch", the foreach
    # implementation, holds a few during its step)
    parser.add_argument("--optim", default="adamw_torch_fused", help="the Trainer's optim")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "training_step.md")
    parser.add_argument("--case", nargs=2, metavar=("OBJECTIVE", "PATH"))
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*args.case, args)))
        return
    results = {}
    for objective, path in cases():
        results[(objective, path)] = measure(objective, path, args)
        print(
            f"{objective} {path}: {statistics.median(results[(objective, path)]['times']):.2f} s",
            file=sys.stderr,
        )
    header = (
        f"Device: {args.device} ({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} "
        f"threads), torch {torch.__version__}; tiny Llama V = {args.vocab:,}, H = {args.hidden}, "
        f"{args.layers} layers, batch {args.batch} x {args.length} tokens (1/8 of each a masked prompt), "
        f"{args.optim}, through TunekitTrainer; "
        f"median of {args.steps} steps after {args.warmup} warm-up, peak memory of the process during them "
        "(weights, gradients and AdamW state included; 'of which the step': above the process's memory as "
        "the measured steps began), one fresh process per case. Ratios < 1 are better."
    )
    text = header + "\n\n" + table(results) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    raw = {f"{objective} {path}": result for (objective, path), result in results.items()}
    args.out.with_suffix(".json").write_text(json.dumps({"header": header, "results": raw}, indent=1))


if __name__ == "__main__":
    main()
