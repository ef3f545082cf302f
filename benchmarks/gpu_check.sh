#!/usr/bin/env bash
# The GPU checks of the token objectives in one run, for a machine with CUDA, torch and triton (Liger-Kernel
# and cut-cross-entropy are compared where installed): the kernel tests compiled for the GPU, then the
# benchmark. Logs and the table go to the folder given (default benchmarks/results).
#
#   bash benchmarks/gpu_check.sh /tmp/gpu-results
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$out/gpu.txt"
python -m pytest -q -p no:cacheprovider tests/test_triton_backend.py 2>&1 | tee "$out/kernel-tests.log"
tests=${PIPESTATUS[0]}
python benchmarks/bench_gpu_token_losses.py --out "$out/gpu-token-losses.md" 2>&1 | tee "$out/benchmark.log"
bench=${PIPESTATUS[0]}
echo "kernel tests: exit $tests; benchmark: exit $bench"
exit $((tests || bench))
