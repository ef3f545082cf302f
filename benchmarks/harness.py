"""A small benchmark harness: median wall time after warm-up, interleaved so that every case of a group
sees the same machine noise, and peak memory measured in a fresh process per case.

Peak memory on CPU is the process's peak resident set (Linux's VmHWM, reset before the call) during one
forward+backward, minus the resident set once the inputs exist: the memory the measured computation itself
costs. On CUDA it is `torch.cuda.max_memory_allocated` above the inputs.
"""

from __future__ import annotations

import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

# A case builds its inputs and returns the function to measure (one forward + backward).
Case = Callable[[], Callable[[], None]]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_times(cases: dict[str, Case], *, device: str, warmup: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each case; the cases take turns so noise hits them alike."""
    runs = {name: build() for name, build in cases.items()}
    for run in runs.values():
        for _ in range(warmup):
            run()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(field + ":"))


def reset_peak(device: str) -> None:
    """Start a new peak: CUDA's peak-memory statistics, or Linux's peak resident set (VmHWM; it survives fork
    and exec, and writing 5 to clear_refs resets it)."""
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        return
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def current_memory(device: str) -> int:
    """Bytes held now: CUDA's allocated memory, or the process's resident set."""
    return torch.cuda.memory_allocated() if device == "cuda" else _status_bytes("VmRSS")


def peak_since_reset(device: str) -> int:
    """The most bytes held since `reset_peak`."""
    return torch.cuda.max_memory_allocated() if device == "cuda" else _status_bytes("VmHWM")


def peak_memory_here(build: Case, device: str) -> int:
    """Peak bytes above the inputs during one call, measured in the current (fresh) process."""
    run = build()
    gc.collect()
    sync(device)
    base = current_memory(device)
    reset_peak(device)
    run()
    sync(device)
    return peak_since_reset(device) - base


def peak_memory(script: str, args: list[str]) -> int:
    """Run `script --peak-memory ...args` in a fresh process and read the bytes it prints."""
    out = subprocess.run(
        [sys.executable, script, "--peak-memory", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]


def tiny_llama(*, vocab: int, hidden: int, layers: int, length: int) -> torch.nn.Module:
    """An untied Llama of `layers` layers of width `hidden` (4 heads, MLP 4 x hidden), seeded with 0: the
    model the training-step benchmarks share."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=length,
        tie_word_embeddings=False,
    )
    return transformers.LlamaForCausalLM(config)
