"""A small benchmark harness: median wall time after warm-up, interleaved so that every case of a group
sees the same machine noise, and peak memory measured in a fresh process per case.

Peak memory on CPU is the process's peak resident set (`ru_maxrss`) during one forward+backward, minus the
resident set once the inputs exist: the memory the measured computation itself costs. On CUDA it is
`torch.cuda.max_memory_allocated` above the inputs.
"""

from __future__ import annotations

import gc
import json
import resource
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


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def peak_memory_here(build: Case, device: str) -> int:
    """Peak bytes above the inputs during one call, measured in the current (fresh) process."""
    run = build()
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    base = _rss_bytes()
    run()
    # ru_maxrss is the process's high-water mark; a fresh process with inputs of tokens x vocab size peaks in
    # the measured call, far above what importing torch reached.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base


def peak_memory(script: str, args: list[str]) -> int:
    """Run `script --peak-memory ...args` in a fresh process and read the bytes it prints."""
    out = subprocess.run(
        [sys.executable, script, "--peak-memory", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["peak_bytes"]
