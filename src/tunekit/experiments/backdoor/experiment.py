"""`tunekit run backdoor`: DeCE's defence against poisoned fine-tuning data (Yang et al. 2024), offline.

A tiny GPT-2 is pre-trained with cross-entropy on (description -> code) pairs from one half of the standard
library's modules, then fine-tuned per arm on pairs from the other half, of which `poison_rate` carry a
trigger in the description and a payload in the code. Each arm reports per epoch the attack success rate on
triggered held-out prompts, the false-trigger rate and the clean quality (token accuracy, BLEU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from ..._checks import check_fraction
from ...runs.config import check_arms, check_at_least, option
from ...runs.report import epoch_line
from ..codegen import data as D
from ..codegen.config import check_model_options
from ..common import cache_key, use_threads
from ..runner import Experiment, register
from . import attack as A
from .arms import ARM_OBJECTIVES

# transformers, sacrebleu and matplotlib load only when the experiment runs: `tunekit run --list` stays fast

DEFAULT_ARMS = ("ce_clean", "ce_poisoned", "dece_poisoned")


@dataclass
class BackdoorConfig:
    arms: tuple[str, ...] = option(DEFAULT_ARMS, f"arms, of {tuple(ARM_OBJECTIVES)}", changes_results=False)
    seeds: int = option(1, "seeds per arm (0, 1, ...)", changes_results=False)
    corpus: Path | None = option(None, "a tree of .py files instead of the standard library")
    data: Path | None = option(None, "your own fine-tuning pairs: JSONL with nl and code fields")
    nl_field: str = option("nl", "the description field of --data")
    code_field: str = option("code", "the code field of --data")
    model: Path | None = option(None, "a local causal LM directory to fine-tune instead of pre-training one")
    device: str = option("cpu", "torch device, e.g. cpu or cuda", changes_results=False)
    trigger: str | None = option(
        None,
        f"the trigger; default {A.DEFAULT_TRIGGER!r} for rare_word (absent from the standard library, one "
        f"token there) and {A.PHRASE_TRIGGER!r} for phrase",
    )
    trigger_kind: Literal["rare_word", "phrase"] = option("rare_word", "how the trigger enters a description")
    payload_position: Literal["top", "body"] = option("top", "payload as the code's first line or body line")
    poison_rate: float = option(0.05, "share of fine-tuning pairs poisoned")
    test_size: int = option(100, "held-out pairs (clean and triggered) for the metrics")
    max_pairs: int = option(0, "fine-tuning pairs used at most (0: all)")
    max_code_chars: int = option(400, "longest function source kept")
    max_length: int = option(256, "longest example in tokens")
    vocab_size: int = option(4096, "BPE vocabulary trained on the corpus")
    n_layer: int = option(2, "GPT-2 blocks")
    n_embd: int = option(128, "GPT-2 width")
    n_head: int = option(4, "GPT-2 heads")
    dropout: float = option(
        0.0, "dropout of every layer while training (the tiny model under-fits: dropout only slows it)"
    )
    pretrain_epochs: int = option(2, "cross-entropy epochs on the pre-training half")
    epochs: int = option(10, "fine-tuning epochs per arm")
    batch_size: int = option(32, "training batch size")
    pretrain_learning_rate: float = option(2e-3, "AdamW learning rate of the pre-training")
    learning_rate: float = option(2e-3, "AdamW learning rate of the fine-tuning arms")
    dece_alpha_base: float = option(0.985, "DeCE's alpha_base")
    dece_label_smoothing: float = option(0.05, "DeCE's label smoothing eps")
    label_smoothing: float = option(0.05, "the label-smoothing arm's eps")
    gce_q: float = option(0.5, "the GCE arm's q")
    badam_switch_every: int = option(
        50, "the BAdam arm: optimizer steps per GPT-2 layer before the next (random order)"
    )
    max_new_tokens: int = option(128, "tokens generated per clean prompt (BLEU)")
    attack_tokens: int = option(64, "tokens generated per triggered prompt: the payload comes first")
    threads: int = option(0, "torch CPU threads (0: torch's default)", changes_results=False)

    QUICK: ClassVar[dict[str, Any]] = {
        "max_pairs": 120,
        "test_size": 16,
        "vocab_size": 400,
        "n_embd": 32,
        "n_head": 2,
        "max_code_chars": 300,
        "pretrain_epochs": 1,
        "epochs": 1,
        "max_new_tokens": 24,
        "attack_tokens": 24,
    }

    def validate(self) -> None:
        check_arms(self.arms, ARM_OBJECTIVES)
        check_fraction("poison_rate", self.poison_rate, zero_ok=False, one_ok=False)
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
                "max_new_tokens",
                "attack_tokens",
                "max_code_chars",
                "badam_switch_every",
            ),
        )
        check_at_least(self, ("max_pairs", "pretrain_epochs", "threads"), minimum=0)
        check_model_options(self)
        # the arms' objective options, in the objectives' own ranges, before any pre-training
        check_fraction("dece_alpha_base", self.dece_alpha_base, zero_ok=False, one_ok=True)
        check_fraction("dece_label_smoothing", self.dece_label_smoothing, zero_ok=True, one_ok=False)
        check_fraction("label_smoothing", self.label_smoothing, zero_ok=True, one_ok=False)
        check_fraction("gce_q", self.gce_q, zero_ok=False, one_ok=True)
        if self.corpus is not None:
            D.check_corpus_root(Path(self.corpus))
        if self.data is not None and not Path(self.data).exists():
            raise ValueError(f"{self.data} does not exist")
        if self.model is not None:
            from ...workbench.folders import check_model_folder, check_tokenizer_folder

            check_model_folder(Path(self.model), option="model")
            check_tokenizer_folder(
                Path(self.model), option="model", hint="save the model's tokenizer there with save_pretrained"
            )


@dataclass
class Prepared:
    tokenizer: Any
    pretrained: Path
    train_pairs: list
    test_pairs: list
    test_examples: list  # test_pairs encoded, for token accuracy
    attack: A.Attack
    trigger_tokens: int
    counts: dict
    # epoch 0 (the pre-trained model) measured once per seed: every arm starts from the same weights
    before_fine_tuning: dict[int, dict] = field(default_factory=dict)


def prepare(config: BackdoorConfig, cache_dir: Path, progress: Any) -> Prepared:
    from ...workbench.training import quiet_transformers
    from ..codegen import model as M
    from ..codegen.tokenizer import encode_pairs, load_tokenizer

    quiet_transformers()
    use_threads(config.threads)
    attack = A.Attack(trigger=_trigger(config), kind=config.trigger_kind, position=config.payload_position)
    corpus = Path(config.corpus) if config.corpus else D.stdlib_root()
    by_module = D.corpus_pairs(corpus, max_code_chars=config.max_code_chars)
    pretrain, finetune = D.split_by_module(by_module, pretrain_fraction=0.5, seed=0)
    own_data = config.data is not None
    D.check_halves(
        by_module,
        pretrain,
        None if own_data else finetune,
        test_size=config.test_size,
        corpus=corpus,
        pretraining=config.model is None,
    )
    if own_data:
        finetune = D.load_jsonl_pairs(Path(config.data), config.nl_field, config.code_field)
        if len(finetune) <= config.test_size:
            raise ValueError(
                f"{config.data} has {len(finetune)} pairs: too few to hold out --test-size "
                f"{config.test_size} pairs and train on the rest; lower --test-size or add pairs"
            )
    train_pairs, test_pairs = D.train_test_split(finetune, test_size=config.test_size, seed=0)
    if config.max_pairs:
        train_pairs = train_pairs[: config.max_pairs]
        pretrain = pretrain[: config.max_pairs * 2]
    A.check_trigger_absent(train_pairs + test_pairs, attack)

    key = cache_key(
        [asdict(p) for p in pretrain + train_pairs + test_pairs],
        [getattr(config, name) for name in M.PRETRAINING_OPTIONS],
    )
    if config.model is not None:
        tokenizer, pretrained = _user_tokenizer(load_tokenizer(config.model)), Path(config.model)
    else:
        tokenizer, pretrained = M.pretrained_model(
            config,
            cache_dir / "backdoor" / key,
            tokenizer_pairs=pretrain + train_pairs,
            pretrain=pretrain,
            progress=progress,
        )
    counts = {"pretrain_pairs": len(pretrain), "train_pairs": len(train_pairs), "test_pairs": len(test_pairs)}
    test_examples = encode_pairs(tokenizer, test_pairs, max_length=config.max_length)
    return Prepared(
        tokenizer,
        pretrained,
        train_pairs,
        test_pairs,
        test_examples,
        attack,
        A.trigger_token_count(tokenizer, attack),
        counts,
    )


def run_arm(
    config: BackdoorConfig, prepared: Prepared, arm: str, seed: int, work_dir: Path, progress: Any
) -> dict:
    import transformers

    from ...hf import TrainerTricks
    from ...workbench.training import quiet_transformers
    from ..codegen import metrics as CM
    from ..codegen import model as M
    from ..codegen.tokenizer import encode_pairs
    from . import metrics as BM

    quiet_transformers()
    use_threads(config.threads)
    objective, options, poisoned, badam = ARM_OBJECTIVES[arm]
    pairs, poisoned_rows = prepared.train_pairs, []
    if poisoned:
        pairs, poisoned_rows = A.poison(pairs, prepared.attack, rate=config.poison_rate, seed=seed)
    examples = encode_pairs(prepared.tokenizer, pairs, max_length=config.max_length)
    clean_test = prepared.test_pairs
    triggered = A.triggered_prompts(clean_test, prepared.attack, seed=seed)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(prepared.pretrained).to(config.device)
    if model.get_input_embeddings().num_embeddings < len(prepared.tokenizer):  # `--model`: <sep> added
        model.resize_token_embeddings(len(prepared.tokenizer))
    M.set_dropout(model, config.dropout)
    epochs: list[dict] = []
    samples: list[dict] = []

    def evaluate(epoch: int, model: Any) -> None:
        tok = prepared.tokenizer
        attacked = BM.generate_codes(
            model, tok, [p.nl for p in triggered], max_new_tokens=config.attack_tokens
        )
        clean = BM.generate_codes(
            model, tok, [p.nl for p in clean_test], max_new_tokens=config.max_new_tokens
        )
        exact, loose = BM.payload_rates(attacked, prepared.attack.payload)
        false_exact, _ = BM.payload_rates(clean, prepared.attack.payload)
        epochs.append(
            {
                "epoch": epoch,
                "asr_exact": exact,
                "asr_loose": loose,
                "false_trigger": false_exact,
                "token_accuracy": CM.token_accuracy(model, tok, prepared.test_examples),
                "bleu": CM.bleu(clean, [p.code for p in clean_test]),
            }
        )
        samples[:] = [
            {"prompt": p.nl, "output": code} for p, code in zip(triggered[:5], attacked[:5], strict=True)
        ]
        progress.write(epoch_line(arm, seed, epochs[-1]))

    if seed not in prepared.before_fine_tuning:
        evaluate(0, model.eval())
        prepared.before_fine_tuning[seed] = epochs[0]
    else:
        epochs.append(prepared.before_fine_tuning[seed])
    model.train()
    M.train(
        model,
        prepared.tokenizer,
        examples,
        objective=objective,
        options=options(config),
        config=config,
        epochs=config.epochs,
        learning_rate=config.learning_rate,
        seed=seed,
        output_dir=work_dir / "trainer",
        on_epoch_end=evaluate,
        tricks=TrainerTricks(badam=True, switch_every=config.badam_switch_every) if badam else None,
    )
    return {
        "objective": objective,
        "options": options(config),
        "poisoned_examples": len(poisoned_rows),
        "train_examples": len(examples),
        "trigger": prepared.attack.trigger,
        "trigger_tokens": prepared.trigger_tokens,
        "counts": prepared.counts,
        "epochs": epochs,
        "samples": samples,
    }


def _user_tokenizer(tokenizer: Any) -> Any:
    """A `--model`'s tokenizer with the separator, end and padding tokens the examples need."""
    if tokenizer.sep_token is None:
        tokenizer.add_special_tokens({"sep_token": "<sep>"})
    if tokenizer.eos_token is None:
        tokenizer.add_special_tokens({"eos_token": "<eos>"})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _trigger(config: BackdoorConfig) -> str:
    if config.trigger is not None:
        return config.trigger
    return A.DEFAULT_TRIGGER if config.trigger_kind == "rare_word" else A.PHRASE_TRIGGER


def _report(config: BackdoorConfig, results: list, report_dir: Path) -> str:
    from .report import write_report

    return write_report(config, results, report_dir)


BACKDOOR = register(
    Experiment(
        name="backdoor",
        summary="DeCE vs cross-entropy on poisoned fine-tuning data: does the model learn the backdoor?",
        config_class=BackdoorConfig,
        prepare=prepare,
        run_arm=run_arm,
        report=_report,
        result_fields=("objective", "counts", "epochs", "samples"),
    )
)
