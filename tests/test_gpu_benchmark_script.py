"""benchmarks/bench_gpu_token_losses.py runs end to end: on tiny shapes through Triton's interpreter here, so
that the script is ready for the GPU it is written for (its numbers mean nothing off a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
TUNEKIT_CASES = [
    "tunekit cross_entropy",
    "tunekit cross_entropy ls=0.1",
    "tunekit dece",
    "tunekit gce",
    *(f"tunekit smile {subset}" for subset in ("sequence", "random", "reverse")),
    "tunekit linear_cross_entropy",
    "tunekit linear_dece_loss",
    "tunekit linear_gce_loss",
    *(f"tunekit linear_smile {subset}" for subset in ("sequence", "random", "reverse")),
]


def test_smoke_run_writes_a_row_for_every_tunekit_case(tmp_path):
    out = tmp_path / "gpu.md"
    env = {**os.environ, "TUNEKIT_BACKEND": "triton", "TRITON_INTERPRET": "1"}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_gpu_token_losses.py"),
            "--smoke",
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    rows = {line.split(" | ")[3]: line for line in out.read_text().splitlines() if line.startswith("| 16 |")}
    for case in TUNEKIT_CASES:
        assert case in rows, f"no row for {case}"
        assert "failed" not in rows[case], rows[case]
    assert "no verdicts" in out.read_text()  # times under the interpreter say nothing of a GPU
    assert out.with_suffix(".json").exists()
