"""Checkpoints of ``tunekit train`` that always resume.

The Trainer writes each checkpoint into ``checkpoints/.saving/checkpoint-<step>``; `StagedCheckpoints`
moves it to ``checkpoints/checkpoint-<step>`` (one rename) once every process has finished writing it, so a
save that is interrupted or fails part-way leaves nothing under a checkpoint's real name. `latest_checkpoint`
picks the newest checkpoint that has every piece a resume needs (weights, optimizer, scheduler, RNG states,
trainer state, EMA state when the run has an EMA) in a readable state, and names each newer one that does
not, with the reason: a missing piece is never silently replaced by a fresh one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

import torch.distributed as dist
import transformers

from ..hf.trainer import STATE_FILE

__all__ = ["STAGING", "StagedCheckpoints", "checkpoint_problem", "latest_checkpoint", "set_aside"]

STAGING = ".saving"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_model.safetensors",
    "adapter_model.bin",
)


class StagedCheckpoints(transformers.TrainerCallback):
    """Moves each checkpoint from the staging folder (the Trainer's ``output_dir``) to ``folder`` once it is
    complete, and keeps the newest ``keep`` there (all when None). Give the Trainer
    ``output_dir=folder / STAGING`` and no ``save_total_limit``."""

    def __init__(self, folder: Path, *, keep: int | None) -> None:
        self.folder = Path(folder)
        self.keep = keep

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every process has written its part (its RNG state) of the checkpoint
        if _rank() == 0:
            staged = self.folder / STAGING / f"checkpoint-{state.global_step}"
            final = self.folder / staged.name
            if final.exists():  # a checkpoint of the same step from an earlier attempt that was set aside
                set_aside(final, "replaced by a newer save of the same step")
            os.replace(staged, final)
            self._prune()
        _barrier()

    def _prune(self) -> None:
        if self.keep is None:
            return
        steps = sorted(_steps(self.folder))
        for step in steps[: max(0, len(steps) - self.keep)]:
            shutil.rmtree(self.folder / f"checkpoint-{step}")


def latest_checkpoint(
    folder: Path, *, world_size: int = 1, ema: bool = False
) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint in ``folder`` a resume can use, and each newer one that it cannot use with the
    reason (``"no optimizer.pt"``, ``"model.safetensors is truncated"``), newest first."""
    skipped = []
    for step in sorted(_steps(folder), reverse=True):
        path = folder / f"checkpoint-{step}"
        problem = checkpoint_problem(path, world_size=world_size, ema=ema)
        if problem is None:
            return path, skipped
        skipped.append((path, problem))
    return None, skipped


def checkpoint_problem(path: Path, *, world_size: int = 1, ema: bool = False) -> str | None:
    """Why the Trainer checkpoint ``path`` cannot be resumed from exactly, or None when it can.

    Checks that each piece is there and not truncated (a JSON file parses, a safetensors file is as long as
    its header says, a ``torch.save`` archive has its central directory); it does not read the tensors.
    """
    weights = [name for name in _WEIGHTS if (path / name).is_file()]
    if not weights:
        return f"no model weights ({' or '.join(_WEIGHTS[:3])})"
    try:
        weight_files = _weight_files(path, weights[0])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{weights[0]} is unreadable ({type(error).__name__}: {error})"
    # one file per process under DDP on GPUs; one shared file when the Trainer runs as one process, as it
    # does on CPUs even under torchrun
    rng = [f"rng_state_{rank}.pth" for rank in range(world_size)] if world_size > 1 else []
    if not rng or (path / "rng_state.pth").is_file():
        rng = ["rng_state.pth"]
    pieces = [
        "trainer_state.json",
        *weight_files,
        "optimizer.pt",
        "scheduler.pt",
        *rng,
        *([STATE_FILE] if ema else []),
    ]
    for name in pieces:
        problem = _file_problem(path / name)
        if problem is not None:
            return problem
    return None


def set_aside(path: Path, reason: str) -> Path:
    """Rename the checkpoint ``path`` to ``broken-checkpoint-<step>`` beside it (never a name a resume
    reads), keeping its files for the user to inspect; return the new path."""
    target = path.with_name(f"broken-{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"broken-{path.name}-{n}")
    os.replace(path, target)
    (target / "WHY.txt").write_text(f"set aside by tunekit: {reason}\n", encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------------------


def _steps(folder: Path) -> Iterable[int]:
    if not folder.is_dir():
        return []
    return [
        int(match.group(1))
        for entry in folder.iterdir()
        if entry.is_dir() and (match := _CHECKPOINT.fullmatch(entry.name))
    ]


def _weight_files(path: Path, name: str) -> list[str]:
    if not name.endswith(".index.json"):
        return [name]
    index = json.loads((path / name).read_text(encoding="utf-8"))
    return [name, *sorted(set(index["weight_map"].values()))]


def _file_problem(path: Path) -> str | None:
    """``"no optimizer.pt"``, ``"model.safetensors is truncated"``, ... or None."""
    if not path.is_file():
        return f"no {path.name}"
    try:
        if path.suffix == ".json":
            state = json.loads(path.read_text(encoding="utf-8"))
            if path.name == "trainer_state.json" and not isinstance(state.get("global_step"), int):
                return f"{path.name} is not a trainer state (no global_step)"
        elif path.suffix == ".safetensors":
            if _safetensors_truncated(path):
                return f"{path.name} is truncated"
        else:  # .pt / .pth / .bin: a torch.save zip archive, whose directory is at its end
            with zipfile.ZipFile(path):
                pass
    except (OSError, ValueError, zipfile.BadZipFile, AttributeError) as error:
        return f"{path.name} is unreadable ({type(error).__name__}: {error})"
    return None


def _safetensors_truncated(path: Path) -> bool:
    """Shorter than its header (an 8-byte length, then JSON with each tensor's byte range) says."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            return True
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            return True
        header = json.loads(file.read(header_size))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    return size < 8 + header_size + end


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
