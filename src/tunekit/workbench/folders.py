"""Checks that a local folder holds what ``from_pretrained`` will look for, so that a wrong ``--model`` or
``--tokenizer`` is one line naming the folder and what it lacks, before anything is read or written.

Without them transformers answers an empty folder with an error about sentencepiece and tiktoken (it tries
to convert a slow tokenizer that is not there either). The checks look at file names only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TOKENIZER_FILES", "check_model_folder", "check_tokenizer_folder"]

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)
"""A fast tokenizer's file, the config of any tokenizer, or a slow tokenizer's vocabulary: a folder with one
of them has a tokenizer."""
_WEIGHT_SUFFIXES = (".safetensors", ".bin")  # save_pretrained's files, sharded ones included


def check_model_folder(folder: Path, *, option: str, not_a_folder_hint: str = "") -> None:
    """ValueError unless `folder` is a folder with ``config.json`` and weights (or a PEFT adapter's
    ``adapter_config.json``); `option` names the option it was given as."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{option} {str(folder)!r} is not a folder{not_a_folder_hint}")
    if (folder / "adapter_config.json").is_file():
        return
    expected = "expected config.json and the weights (model.safetensors) that save_pretrained writes"
    if not (folder / "config.json").is_file():
        raise ValueError(f"{option} {folder} holds no model (no config.json): {expected}")
    if not any(path.suffix in _WEIGHT_SUFFIXES for path in folder.iterdir()):
        raise ValueError(
            f"{option} {folder} has a config.json but no weights (.safetensors / .bin): {expected}"
        )


def check_tokenizer_folder(folder: Path, *, option: str, hint: str = "") -> None:
    """ValueError unless `folder` is a folder with one of `TOKENIZER_FILES`; `hint` says what else to do."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{option} {str(folder)!r} is not a folder")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        advice = hint or "save the tokenizer there with save_pretrained"
        raise ValueError(
            f"{option} {folder} has no tokenizer ({', '.join(TOKENIZER_FILES[:3])}, ...): {advice}"
        )
