"""``tunekit train``: fine-tune a model on your own data (see `tunekit.finetune`).

    tunekit train --train-file data.jsonl [--task TASK] [--config FILE.yaml] [--out DIR] [--resume | --fresh]
                  [--no-progress] [--<option> VALUE ...]

Every field of `tunekit.finetune.TrainConfig` is an option and a key of the YAML file (flags win). Under
``torchrun`` or ``accelerate launch`` (``torchrun --nproc-per-node 2 -m tunekit train ...``) the Trainer
runs one process per device; the first process writes the report.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from ._common import INTERRUPTED, USER_ERRORS, user_error

HELP = "fine-tune a model on your own data (classification, tagging, generation) with tunekit objectives"
DEFAULT_OUT = Path("runs") / "train"


def _parser() -> argparse.ArgumentParser:
    from ..finetune import TrainConfig
    from ..runs.config import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="tunekit train",
        usage="tunekit train --train-file FILE [options]",
        description="Fine-tune a model on your own data: sequence classification (single-label, multi-label "
        "or regression), token classification, or generation (causal_lm, seq2seq), with any tunekit "
        "objective and trick, through the Hugging Face Trainer. Data: JSON Lines, CSV / TSV, or a `datasets` "
        "folder.",
        epilog="A checkpoint is saved after every epoch; running the same command again resumes from the "
        "last one. The folder gets model/ (save_pretrained), report.md, metrics.json and PNG curves. "
        "Set TUNEKIT_TRACEBACK=1 to see the traceback behind an error.",
    )
    parser.add_argument("--config", type=Path, metavar="FILE.yaml", help="read options from a YAML mapping")
    parser.add_argument("--out", type=Path, metavar="DIR", help=f"output folder (default: {DEFAULT_OUT})")
    resume = parser.add_mutually_exclusive_group()
    resume.add_argument(
        "--resume", action="store_true", help="resume from the last checkpoint (an error if there is none)"
    )
    resume.add_argument("--fresh", action="store_true", help="discard an earlier run in the output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_config_arguments(parser, TrainConfig, title="training options (also the keys of --config)")
    return parser


def command(args: list[str]) -> int:
    """Run ``tunekit train ARGS``; return the exit status."""
    from ..finetune import TrainConfig
    from ..runs.config import config_from_sources, config_overrides

    namespace = _parser().parse_args(args)
    try:
        config = config_from_sources(
            TrainConfig, yaml_path=namespace.config, overrides=config_overrides(namespace, TrainConfig)
        )
    except USER_ERRORS as error:
        return user_error(str(error))
    except ImportError as error:
        return user_error(str(error), status=1)

    from ..finetune import train

    out_dir = namespace.out if namespace.out is not None else DEFAULT_OUT
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        result = train(
            config,
            out_dir,
            resume=True if namespace.resume else None,
            fresh=namespace.fresh,
            progress=not namespace.no_progress,
            on_epoch=_epoch_printer(bars=not namespace.no_progress) if main_process else None,
        )
    except KeyboardInterrupt:
        print(f"\ntunekit: interrupted; {_kept(out_dir)}", file=sys.stderr)
        return INTERRUPTED
    except USER_ERRORS as error:
        return user_error(str(error))
    except ImportError as error:
        return user_error(str(error), status=1)
    except Exception as error:
        traceback.print_exc()
        return user_error(f"{type(error).__name__}: {error}; {_kept(out_dir)}", status=1)
    if main_process:
        print(f"model: {result.model_dir}")
        print(f"report: {result.report}")
    return 0


def _epoch_printer(*, bars: bool):
    """Prints ``epoch 2: train_loss 0.4917, eval_loss 0.3254, accuracy 1, ...``, above the bars if any."""
    from ..runs.report import require

    write = require("tqdm.auto", "Progress bars").tqdm.write if bars else print

    def print_epoch(row: dict) -> None:
        values = ", ".join(f"{key} {value:.4g}" for key, value in row.items() if key != "epoch")
        write(f"epoch {row['epoch']}: {values}")

    return print_epoch


def _kept(out_dir: Path) -> str:
    from ..finetune.checkpoints import latest_checkpoint

    last, _ = latest_checkpoint(out_dir / "checkpoints")
    if last is None:
        return "no epoch had finished"
    return f"the same command resumes from {last}"
