"""The work both classification experiments do before their arms: the labelled texts, the tokenizer and the
pre-trained encoder, the last two cached under ``cache_dir/textcls/<key of data and sizes>``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...runs.report import write_json
from ..common import cache_key, use_threads
from . import data as D
from .config import ClassifierConfig

__all__ = ["ENCODER_VERSION", "Encoder", "Prepared", "prepare_encoder"]

# bump when the tokenizer or the pre-training changes: cached encoders are keyed by it (2: the WordPiece's
# vocabulary counted by `workbench.tokenizers.train_wordpiece`, no longer drawn by tokenizers' trainer)
ENCODER_VERSION = 2


@dataclass
class Encoder:
    """The labelled texts, the tokenizer, and the pre-trained encoder's folder (None without
    pre-training)."""

    texts: list[D.LabeledText]
    tokenizer: Any
    pretrained: Path | None


@dataclass
class Prepared:
    """What a classification experiment's arms share: the encoder and the experiment's task."""

    encoder: Encoder
    task: Any  # textcls.data.Task


def _cached_texts(root: Path, cache_dir: Path, progress: Any) -> list[D.LabeledText]:
    """`labeled_texts` of `root`, read back from the cache while no ``.py`` file under it changed (the
    key holds every file's path, size and modification time)."""
    files = sorted(
        (str(path.relative_to(root)), path.stat().st_size, path.stat().st_mtime_ns)
        for path in root.rglob("*.py")
        if path.is_file()
    )
    key = cache_key(str(root.resolve()), files, D.DATA_VERSION)
    path = cache_dir / "textcls" / f"texts-{key}.json"
    if path.is_file():
        return [D.LabeledText(**row) for row in json.loads(path.read_text(encoding="utf-8"))]
    progress.write(f"reading the documented functions under {root}")
    texts = D.labeled_texts(root=root)
    write_json(path, [asdict(t) for t in texts])
    return texts


def prepare_encoder(config: ClassifierConfig, cache_dir: Path, progress: Any) -> Encoder:
    """Parse the corpus, then train (or read back) the tokenizer and the MLM-pre-trained encoder on the
    training split's texts only: validation and test texts are never seen before the arms' evaluation."""
    from ...workbench.tokenizers import train_wordpiece
    from ...workbench.training import quiet_transformers
    from .model import pretrain_encoder

    quiet_transformers()
    use_threads(config.threads)
    texts = _cached_texts(Path(config.corpus) if config.corpus else D.stdlib_root(), cache_dir, progress)
    train_texts = sorted({t.text for t in texts if t.split == "train"})
    if not train_texts:
        raise ValueError("the corpus has no documented function in the training split")
    sizes = [
        config.vocab_size,
        config.max_length,
        config.hidden_size,
        config.layers,
        config.heads,
        config.dropout,
        config.pretrain_epochs,
        config.pretrain_learning_rate,
        config.batch_size,
    ]
    key = cache_key(train_texts, sizes, ENCODER_VERSION)
    work = cache_dir / "textcls" / key
    tokenizer_dir, pretrained = work / "tokenizer", work / "pretrained"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        progress.write(f"training the tokenizer on {len(train_texts)} texts")
        train_wordpiece(train_texts, config.vocab_size).save_pretrained(str(tokenizer_dir))
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    if config.pretrain_epochs == 0:
        return Encoder(texts, tokenizer, None)
    if not (pretrained / "config.json").is_file():
        progress.write(
            f"pre-training the encoder ({config.pretrain_epochs} MLM epochs on {len(train_texts)} texts)"
        )
        model = pretrain_encoder(tokenizer, train_texts, config, work / "trainer")
        model.save_pretrained(str(pretrained))
    return Encoder(texts, tokenizer, pretrained)
