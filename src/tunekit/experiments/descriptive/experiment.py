"""`tunekit run descriptive`: SMILE vs MLE (Yue et al. 2023), do subset-softmax objectives make generated
descriptions longer, and at what cost?

The task reverses the backdoor experiment's pairs: from a standard-library function's code (without its
docstring) generate the docstring's first line. A tiny GPT-2 is pre-trained with MLE (cross-entropy) on the
pairs of one half of the modules, then fine-tuned per arm on the other half and measured after every epoch on
held-out pairs: output length, distinct-1/2, BLEU and self-retrieval R@1 (see `metrics`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from ...runs.config import check_arms, check_at_least, option
from ...runs.report import epoch_line
from ..codegen import data as D
from ..codegen.config import check_model_options
from ..common import cache_key, use_threads
from ..runner import Experiment, register
from .arms import ARM_OBJECTIVES, objective_name

# transformers, sacrebleu and matplotlib load only when the experiment runs: `tunekit run --list` stays fast


@dataclass
class DescriptiveConfig:
    """The options of `tunekit run descriptive` (flags, YAML fields); QUICK is the `--quick` preset."""

    arms: tuple[str, ...] = option(
        tuple(ARM_OBJECTIVES), f"arms, of {tuple(ARM_OBJECTIVES)}", changes_results=False
    )
    seeds: int = option(2, "seeds per arm (0, 1, ...)", changes_results=False)
    corpus: Path | None = option(None, "a tree of .py files instead of the standard library")
    device: str = option("cpu", "torch device, e.g. cpu or cuda", changes_results=False)
    test_size: int = option(100, "held-out pairs; also the candidates of self-retrieval")
    max_pairs: int = option(
        0, "fine-tuning pairs used at most, and twice as many pre-training pairs (0: all)"
    )
    max_code_chars: int = option(300, "longest function source kept")
    max_length: int = option(192, "longest example in tokens")
    vocab_size: int = option(2048, "BPE vocabulary trained on the corpus")
    n_layer: int = option(2, "GPT-2 blocks")
    n_embd: int = option(128, "GPT-2 width")
    n_head: int = option(4, "GPT-2 heads")
    dropout: float = option(0.0, "dropout of every layer while training")
    pretrain_epochs: int = option(6, "MLE epochs on the pre-training half")
    epochs: int = option(3, "fine-tuning epochs per arm")
    batch_size: int = option(32, "training batch size")
    pretrain_learning_rate: float = option(2e-3, "AdamW learning rate of the pre-training")
    learning_rate: float = option(3e-4, "AdamW learning rate of the fine-tuning arms")
    mix_mle_weight: float = option(0.01, "the MLE weight of the mle+smile arm (SMILE gets 1 minus it)")
    num_random: int = option(10, "random ids added to each position's label by the smile_random arm")
    new_token_factor: float = option(
        4.0, "new tokens allowed in decoding, as a multiple of the descriptions' mean token length (>= 3)"
    )
    threads: int = option(0, "torch CPU threads (0: torch's default)", changes_results=False)

    QUICK: ClassVar[dict[str, Any]] = {
        "seeds": 1,
        "max_pairs": 100,
        "test_size": 16,
        "vocab_size": 400,
        "n_embd": 32,
        "n_head": 2,
        "pretrain_epochs": 1,
        "epochs": 1,
    }

    def validate(self) -> None:
        check_arms(self.arms, ARM_OBJECTIVES)
        check_at_least(
            self,
            (
                "seeds",
                "test_size",
                "vocab_size",
                "n_layer",
                "n_embd",
                "n_head",
                "epochs",
                "batch_size",
                "max_length",
                "max_code_chars",
                "num_random",
            ),
        )
        if self.max_pairs < 0 or self.pretrain_epochs < 0:
            raise ValueError(
                f"max_pairs and pretrain_epochs must be >= 0, got {self.max_pairs}, {self.pretrain_epochs}"
            )
        check_at_least(self, ("threads",), minimum=0)
        check_model_options(self)
        if not 0 <= self.mix_mle_weight <= 1:
            raise ValueError(f"mix_mle_weight must be in [0, 1], got {self.mix_mle_weight!r}")
        if not self.new_token_factor >= 3:
            raise ValueError(
                f"new_token_factor must be >= 3 (decoding must allow 3x the reference length), got "
                f"{self.new_token_factor!r}"
            )
        if self.corpus is not None:
            D.check_corpus_root(Path(self.corpus))


@dataclass
class Prepared:
    tokenizer: Any
    pretrained: Path
    train_pairs: list  # D.Pair with nl = the code (the prompt) and code = the description (the target)
    test_pairs: list
    max_new_tokens: int
    references: dict  # the references' own length, distinct-n and R@1, as if they were outputs
    counts: dict
    # epoch 0 (the pre-trained model) is the same for every arm and seed: greedy decoding, one model
    before_fine_tuning: dict = field(default_factory=dict)


def describing(pairs: list) -> list:
    """(docstring line, code) pairs turned around: the code is the prompt, the description the target."""
    return [replace(pair, nl=pair.code, code=pair.nl) for pair in pairs]


def prepare(config: DescriptiveConfig, cache_dir: Path, progress: Any) -> Prepared:
    from ...workbench.training import quiet_transformers
    from ..codegen import model as M
    from ..codegen.tokenizer import encode_text
    from .metrics import Generated, describe

    quiet_transformers()
    use_threads(config.threads)
    corpus = Path(config.corpus) if config.corpus else D.stdlib_root()
    by_module = D.corpus_pairs(corpus, max_code_chars=config.max_code_chars)
    pretrain, finetune = D.split_by_module(by_module, pretrain_fraction=0.5, seed=0)
    D.check_halves(by_module, pretrain, finetune, test_size=config.test_size, corpus=corpus)
    if config.max_pairs:
        pretrain = pretrain[: config.max_pairs * 2]
    pretrain, finetune = describing(pretrain), describing(finetune)

    # the tokenizer and the pre-trained model see only the pre-training half: they are shared by any
    # fine-tuning split and know nothing of the held-out pairs
    key = cache_key([asdict(p) for p in pretrain], [getattr(config, name) for name in M.PRETRAINING_OPTIONS])
    tokenizer, pretrained = M.pretrained_model(
        config,
        cache_dir / "descriptive" / key,
        tokenizer_pairs=pretrain,
        pretrain=pretrain,
        progress=progress,
    )

    # decoding allows new_token_factor x the descriptions' mean length; a held-out prompt must leave that
    # much room in the model's max_length positions, so longer codes are dropped before the split
    mean_description = sum(len(encode_text(tokenizer, p.code)) for p in finetune) / max(len(finetune), 1)
    max_new_tokens = math.ceil(config.new_token_factor * mean_description)
    room = config.max_length - max_new_tokens
    finetune = [p for p in finetune if len(encode_text(tokenizer, p.nl)) + 1 <= room]
    if len(finetune) <= config.test_size:
        raise ValueError(
            f"only {len(finetune)} fine-tuning pairs leave {max_new_tokens} tokens to generate within "
            f"max_length={config.max_length}; raise --max-length or lower --test-size={config.test_size}"
        )
    train_pairs, test_pairs = D.train_test_split(finetune, test_size=config.test_size, seed=0)
    if config.max_pairs:
        train_pairs = train_pairs[: config.max_pairs]

    reference_tokens = [len(encode_text(tokenizer, p.code)) for p in test_pairs]
    as_outputs = [Generated(p.code, n, True) for p, n in zip(test_pairs, reference_tokens, strict=True)]
    references = describe(as_outputs, [p.code for p in test_pairs], [p.nl for p in test_pairs])
    counts = {"pretrain_pairs": len(pretrain), "train_pairs": len(train_pairs), "test_pairs": len(test_pairs)}
    return Prepared(
        tokenizer,
        pretrained,
        train_pairs,
        test_pairs,
        max_new_tokens=max_new_tokens,
        references=references,
        counts=counts,
    )


def run_arm(
    config: DescriptiveConfig, prepared: Prepared, arm: str, seed: int, work_dir: Path, progress: Any
) -> dict:
    import transformers

    from ...workbench.training import quiet_transformers
    from ..codegen import model as M
    from ..codegen.tokenizer import encode_pairs
    from .metrics import describe, generate_descriptions

    quiet_transformers()
    use_threads(config.threads)
    objective, options = ARM_OBJECTIVES[arm](config)
    examples = encode_pairs(prepared.tokenizer, prepared.train_pairs, max_length=config.max_length)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(prepared.pretrained).to(config.device)
    M.set_dropout(model, config.dropout)
    codes, references = [p.nl for p in prepared.test_pairs], [p.code for p in prepared.test_pairs]
    epochs: list[dict] = []
    samples: list[dict] = []

    def evaluate(epoch: int, model: Any) -> None:
        generated = generate_descriptions(
            model, prepared.tokenizer, codes, max_new_tokens=prepared.max_new_tokens
        )
        epochs.append({"epoch": epoch, **describe(generated, references, codes)})
        samples[:] = [
            {"code": code, "reference": reference, "output": g.text}
            for code, reference, g in zip(codes[:5], references[:5], generated[:5], strict=True)
        ]
        progress.write(epoch_line(arm, seed, epochs[-1]))

    if "epoch" not in prepared.before_fine_tuning:
        evaluate(0, model.eval())
        prepared.before_fine_tuning.update(epochs[0])
    else:
        epochs.append(dict(prepared.before_fine_tuning))
    model.train()
    M.train(
        model,
        prepared.tokenizer,
        examples,
        objective=objective,
        options=options,
        config=config,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=seed,
        output_dir=work_dir / "trainer",
        on_epoch_end=evaluate,
    )
    return {
        "objective": objective_name(objective, options),
        "train_examples": len(examples),
        "max_new_tokens": prepared.max_new_tokens,
        "references": prepared.references,
        "counts": prepared.counts,
        "epochs": epochs,
        "samples": samples,
    }


def _report(config: DescriptiveConfig, results: list, report_dir: Path) -> str:
    from .report import write_report

    return write_report(config, results, report_dir)


DESCRIPTIVE = register(
    Experiment(
        name="descriptive",
        summary="SMILE vs MLE: does a subset softmax make generated descriptions longer, and at what cost?",
        config_class=DescriptiveConfig,
        prepare=prepare,
        run_arm=run_arm,
        report=_report,
        result_fields=("objective", "references", "counts", "epochs", "samples"),
    )
)
