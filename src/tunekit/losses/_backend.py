"""Which implementation of the token-level objectives a call runs: the chunked PyTorch engine or the Triton
kernels.

``TUNEKIT_BACKEND`` chooses: ``auto`` (the default) runs Triton on CUDA tensors when `triton` is installed
and PyTorch everywhere else; ``torch`` always runs PyTorch; ``triton`` forces the kernels on any device,
which on CPU tensors needs Triton's interpreter (``TRITON_INTERPRET=1`` and numpy: how the test suite checks
the kernels without a GPU). fp64 inputs (gradcheck) always run PyTorch: the kernels compute in fp32.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

BACKENDS = ("auto", "torch", "triton")


def token_backend(device: torch.device, dtype: torch.dtype) -> str:
    """'torch' or 'triton' for inputs on `device` computed in `dtype` (see the module docstring)."""
    choice = os.environ.get("TUNEKIT_BACKEND", "auto") or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"TUNEKIT_BACKEND must be one of {', '.join(BACKENDS)}, got {choice!r}")
    if choice == "torch" or dtype == torch.float64 or device.type == "meta":
        return "torch"
    if choice == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if not triton_available():
        raise RuntimeError(
            "TUNEKIT_BACKEND=triton needs triton: pip install 'tunekit[triton]' (or unset TUNEKIT_BACKEND)"
        )
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "") in ("", "0"):
        raise RuntimeError(
            f"TUNEKIT_BACKEND=triton on {device.type} tensors runs Triton's interpreter: set "
            "TRITON_INTERPRET=1 before Python starts (numpy must be installed), or unset TUNEKIT_BACKEND"
        )
    return "triton"


@functools.cache  # asked on every call of an objective on CUDA
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None
