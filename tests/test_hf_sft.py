"""`TunekitSFTTrainer`: TRL's SFTTrainer with tunekit's objectives (fused or not), tricks and packing.

Tiny Llama models from configs with random weights, a byte-level BPE trained locally, the real
`trl.SFTTrainer` (its dataset preparation, collators and packing) and real Trainer steps. Checked:

- with cross-entropy, one SGD step makes plain SFTTrainer's update, fused or not, padded or packed ("bfd",
  padding-free; "wrapped"), completion-only and assistant-only; with SFTConfig's defaults (bf16 autocast,
  gradient checkpointing) too, at a looser tolerance;
- SFTTrainer's logged metrics (entropy, mean token accuracy, num_tokens) are SFTTrainer's own, and counted
  once per micro-batch when FGM / PGD and R-Drop run extra passes;
- every token objective gives the same loss and update on the same sequences padded or packed into one row;
- gradient accumulation, DeCE's epoch, all the tricks at once; R-Drop's repeated packed batch; refusals.
"""

from __future__ import annotations

import datasets
import pytest
import torch
import transformers
import trl

from tiny_lm import make_llama
from tiny_tokenizer import bpe_tokenizer, stdlib_text
from tunekit.hf import TrainerLoss, TrainerTricks, TunekitSFTTrainer
from tunekit.hf.loss_func import repeat_batch

RTOL = 1e-5
OBJECTIVES = ("cross_entropy", "dece", "gce", "smile")


@pytest.fixture(scope="module")
def tokenizer():
    return bpe_tokenizer()


def texts(count: int, offset: int = 0) -> list[str]:
    """Docstrings cut at 30 to 160 characters: sequences of different lengths."""
    return [text[: 30 + (i * 37) % 130] for i, text in enumerate(stdlib_text(offset + count)[offset:])]


def text_dataset(count: int = 8) -> datasets.Dataset:
    return datasets.Dataset.from_list([{"text": text} for text in texts(count)])


def prompt_completion_dataset(count: int = 8) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [{"prompt": text[:12], "completion": text[12:]} for text in texts(count, offset=20)]
    )


CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)


def conversation_dataset(count: int = 8) -> datasets.Dataset:
    return datasets.Dataset.from_list(
        [
            {
                "messages": [
                    {"role": "user", "content": text[:15]},
                    {"role": "assistant", "content": text[15:]},
                ]
            }
            for text in texts(count, offset=40)
        ]
    )


def sft_config(output_dir, **overrides) -> trl.SFTConfig:
    """Plain SGD (lr 0.5, no decay, no clipping), fp32 without checkpointing, one step of 8 rows of at most
    48 tokens, metrics logged at every step."""
    options = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        max_steps=1,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        bf16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        max_length=48,
        seed=0,
    )
    options.update(overrides)
    return trl.SFTConfig(**options)


def train(
    tmp_path,
    tokenizer,
    *,
    loss: TrainerLoss | None,
    dataset=None,
    trainer_class=None,
    tricks: TrainerTricks | None = None,
    dropout: float = 0.0,
    callbacks=(),
    **config,
):
    """Train a fresh tiny Llama one step (by default); its weights, the logged metrics and the trainer."""
    model = make_llama(vocab=len(tokenizer), seed=0, attention_dropout=dropout)
    extra = {} if loss is None else {"compute_loss_func": loss}
    if tricks is not None:
        extra["tricks"] = tricks
    trainer_class = trainer_class or (
        trl.SFTTrainer if loss is None and tricks is None else TunekitSFTTrainer
    )
    trainer = trainer_class(
        model=model,
        args=sft_config(tmp_path / f"run{len(list(tmp_path.iterdir()))}", **config),
        train_dataset=text_dataset() if dataset is None else dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks),
        **extra,
    )
    trainer.train()
    logs = next(log for log in trainer.state.log_history if "entropy" in log)
    return {name: p.detach().clone() for name, p in model.named_parameters()}, logs, trainer


def assert_same_weights(actual: dict, expected: dict, rtol: float = RTOL) -> None:
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=rtol, atol=rtol * 0.1, msg=name)


def assert_same_metrics(actual: dict, expected: dict, rtol: float = RTOL) -> None:
    for key in ("loss", "entropy", "mean_token_accuracy", "num_tokens"):
        assert actual[key] == pytest.approx(expected[key], rel=rtol), key


# ---- the same training as SFTTrainer's own loss ----

DATA = {
    "padded": {},
    "packed_bfd": {"packing": True},
    "packed_wrapped": {"packing": True, "packing_strategy": "wrapped"},
    "padding_free": {"padding_free": True, "max_length": None},  # TRL: no truncation without packing
}


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
@pytest.mark.parametrize("data", sorted(DATA))
def test_cross_entropy_makes_sfttrainers_update(tmp_path, tokenizer, data, fused):
    reference, reference_logs, _ = train(tmp_path, tokenizer, loss=None, **DATA[data])
    weights, logs, _ = train(
        tmp_path, tokenizer, loss=TrainerLoss("cross_entropy", task="causal_lm", fused=fused), **DATA[data]
    )
    assert_same_weights(weights, reference)
    assert_same_metrics(logs, reference_logs)


@pytest.mark.parametrize(
    "dataset, options",
    [
        (prompt_completion_dataset, {}),  # completion_only_loss: the prompt is not supervised
        (conversation_dataset, {"assistant_only_loss": True}),
    ],
    ids=["completion_only", "assistant_only"],
)
def test_masked_prompts_make_sfttrainers_update(tmp_path, tokenizer, dataset, options):
    tokenizer = tokenizer.__class__.from_pretrained(_saved(tokenizer, tmp_path))  # a copy with a template
    tokenizer.chat_template = CHAT_TEMPLATE
    reference, reference_logs, _ = train(tmp_path, tokenizer, loss=None, dataset=dataset(), **options)
    weights, logs, trainer = train(
        tmp_path,
        tokenizer,
        loss=TrainerLoss("cross_entropy", task="causal_lm", fused=True),
        dataset=dataset(),
        **options,
    )
    assert_same_weights(weights, reference)
    assert_same_metrics(logs, reference_logs)
    labels = trainer.train_dataset[0]["labels"]  # the prompt is masked, the answer supervised
    assert labels[0] == -100 and any(label != -100 for label in labels)


def _saved(tokenizer, tmp_path) -> str:
    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(str(folder))
    return str(folder)


def test_sfttrainers_defaults_bf16_and_checkpointing_make_nearly_its_update(tmp_path, tokenizer):
    options = {"bf16": True, "gradient_checkpointing": True, "packing": True}
    reference, reference_logs, _ = train(tmp_path, tokenizer, loss=None, **options)
    weights, logs, _ = train(
        tmp_path, tokenizer, loss=TrainerLoss("cross_entropy", task="causal_lm", fused=True), **options
    )
    # the fused path runs the output layer in fp32, SFTTrainer's under bf16 autocast
    assert_same_weights(weights, reference, rtol=2e-2)
    assert_same_metrics(logs, reference_logs, rtol=2e-2)


# ---- packed and padded batches ----


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_objective_trains_the_same_fused_or_not_padded_or_packed(tmp_path, tokenizer, objective):
    runs = {
        (fused, padding_free): train(
            tmp_path,
            tokenizer,
            loss=TrainerLoss(objective, task="causal_lm", fused=fused),
            padding_free=padding_free,
            max_length=None,
        )
        for fused in (False, True)
        for padding_free in (False, True)
    }
    expected, expected_logs, _ = runs[False, False]  # the logits of padded rows
    for (fused, padding_free), (weights, logs, _) in runs.items():
        assert logs["loss"] == pytest.approx(expected_logs["loss"], rel=RTOL), (fused, padding_free)
        assert_same_weights(weights, expected)


def test_a_packed_row_scored_as_one_sequence_would_differ(tmp_path, tokenizer):
    """SMILE needs the packed sequences' position_ids: without them the row is one sequence."""
    _, padded_logs, _ = train(
        tmp_path, tokenizer, loss=TrainerLoss("smile", task="causal_lm"), max_length=None
    )
    loss = TrainerLoss("smile", task="causal_lm")
    loss.uses_position_ids = False  # what a loss that ignores the packing computes
    _, packed_logs, _ = train(tmp_path, tokenizer, loss=loss, padding_free=True, max_length=None)
    assert abs(packed_logs["loss"] - padded_logs["loss"]) > 1e-3


def test_rdrop_repeats_a_packed_batch_consistently():
    batch = {
        "input_ids": torch.arange(7)[None],
        "position_ids": torch.tensor([[0, 1, 2, 0, 1, 0, 1]]),
        "cu_seq_lens_q": torch.tensor([0, 3, 5, 7], dtype=torch.int32),
        "cu_seq_lens_k": torch.tensor([0, 3, 5, 7], dtype=torch.int32),
        "max_length_q": 3,
        "max_length_k": 3,
        "seq_idx": torch.tensor([[0, 0, 0, 1, 1, 2, 2]], dtype=torch.int32),
    }
    twice = repeat_batch(batch)
    assert torch.equal(twice["input_ids"], torch.arange(7).repeat(2, 1))
    assert torch.equal(twice["position_ids"], batch["position_ids"].repeat(2, 1))
    assert torch.equal(twice["seq_idx"], batch["seq_idx"].repeat(2, 1))
    # the flattened (2, 7) batch: the second copy's sequences follow the first's
    expected = torch.tensor([0, 3, 5, 7, 10, 12, 14], dtype=torch.int32)
    assert torch.equal(twice["cu_seq_lens_q"], expected) and torch.equal(twice["cu_seq_lens_k"], expected)
    assert twice["max_length_q"] == twice["max_length_k"] == 3
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5, 7]  # the caller's batch is unchanged


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
def test_rdrop_on_packed_sequences_equals_rdrop_on_padded_ones(tmp_path, tokenizer, fused):
    """Without dropout both passes agree (KL 0): R-Drop's loss is the task loss, packed or not."""
    tricks = TrainerTricks(rdrop_weight=1.0)
    runs = [
        train(
            tmp_path,
            tokenizer,
            loss=TrainerLoss("smile", task="causal_lm", fused=fused),
            tricks=tricks,
            **data,
        )
        for data in ({"max_length": None}, {"padding_free": True, "max_length": None})
    ]
    assert runs[1][1]["loss"] == pytest.approx(runs[0][1]["loss"], rel=RTOL)
    assert_same_weights(runs[1][0], runs[0][0])


# ---- metrics counted once, tricks, accumulation, DeCE's epoch ----


@pytest.mark.parametrize(
    "tricks",
    [
        TrainerTricks(adversarial="fgm", adversarial_epsilon=0.1),
        TrainerTricks(adversarial="pgd", adversarial_epsilon=0.1, pgd_steps=2),
        TrainerTricks(rdrop_weight=0.5),
        TrainerTricks(adversarial="pgd", adversarial_epsilon=0.1, pgd_steps=2, rdrop_weight=0.5),
    ],
    ids=["fgm", "pgd", "rdrop", "pgd_rdrop"],
)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
def test_metrics_are_counted_once_per_micro_batch_whatever_the_tricks(tmp_path, tokenizer, tricks, fused):
    loss = TrainerLoss("cross_entropy", task="causal_lm", fused=fused)
    _, plain_logs, _ = train(tmp_path, tokenizer, loss=None, max_steps=2, per_device_train_batch_size=4)
    _, logs, trainer = train(
        tmp_path, tokenizer, loss=loss, tricks=tricks, max_steps=2, per_device_train_batch_size=4
    )
    # the first step's clean pass sees the same weights and batch as SFTTrainer's
    assert logs["num_tokens"] == plain_logs["num_tokens"]
    assert logs["entropy"] == pytest.approx(plain_logs["entropy"], rel=RTOL)
    assert logs["mean_token_accuracy"] == pytest.approx(plain_logs["mean_token_accuracy"], rel=RTOL)
    total = sum(
        sum(row["attention_mask"] if "attention_mask" in row else [1] * len(row["input_ids"]))
        for row in trainer.train_dataset.select(range(8))
    )
    assert trainer.state.log_history[-2]["num_tokens"] == total  # two steps of 4 rows: each counted once


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
def test_accumulated_micro_batches_make_the_update_of_one_batch(tmp_path, tokenizer, fused):
    whole, _, _ = train(tmp_path, tokenizer, loss=TrainerLoss("dece", task="causal_lm", fused=fused))
    split, _, _ = train(
        tmp_path,
        tokenizer,
        loss=TrainerLoss("dece", task="causal_lm", fused=fused),
        per_device_train_batch_size=2,
        gradient_accumulation_steps=4,
    )
    assert_same_weights(split, whole)


def test_deces_epoch_advances(tmp_path, tokenizer):
    loss = TrainerLoss("dece", task="causal_lm", fused=True)
    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(loss.objective.epoch)

    train(
        tmp_path,
        tokenizer,
        loss=loss,
        callbacks=[Record()],
        max_steps=-1,
        num_train_epochs=3,
        per_device_train_batch_size=4,
        learning_rate=0.01,
    )
    assert seen == [1, 1, 2, 2, 3, 3]


def test_all_the_tricks_at_once_train(tmp_path, tokenizer):
    tricks = TrainerTricks(
        ema_decay=0.9,
        adversarial="pgd",
        adversarial_epsilon=0.1,
        pgd_steps=2,
        rdrop_weight=0.5,
        layer_decay=0.8,
    )
    before = make_llama(vocab=len(tokenizer), seed=0)
    weights, logs, trainer = train(
        tmp_path,
        tokenizer,
        loss=TrainerLoss("dece", task="causal_lm", fused=True),
        tricks=tricks,
        dropout=0.1,
        packing=True,
        max_steps=3,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=0.05,
    )
    assert trainer.ema.num_updates == 3
    assert len({group["lr"] for group in trainer.optimizer.param_groups}) > 1  # layer decay's groups
    assert all(torch.isfinite(value).all() for value in weights.values())
    assert any(
        not torch.equal(value, dict(before.named_parameters())[name]) for name, value in weights.items()
    )
    assert torch.isfinite(torch.tensor(logs["loss"]))


def test_badam_trains_one_layer_at_a_time_on_the_fused_path(tmp_path, tokenizer):
    before = dict(make_llama(vocab=len(tokenizer), seed=0).named_parameters())
    weights, _, trainer = train(
        tmp_path,
        tokenizer,
        loss=TrainerLoss("dece", task="causal_lm", fused=True),
        tricks=TrainerTricks(badam=True, switch_every=2, block_order="descending"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=0.05,
    )
    block_optimizer = trainer.optimizer.optimizer  # inside accelerate's wrapper
    assert block_optimizer.blocks[block_optimizer.active_block].name == "model.layers.0"
    # 2 steps on the top layer, then 1 on the one below (make_llama has 2); the rest frozen
    for name, value in weights.items():
        assert torch.equal(value, before[name]) != name.startswith("model.layers."), name


def test_sft_takes_only_a_causal_lm_trainer_loss(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="TrainerLoss"):
        train(tmp_path, tokenizer, loss=lambda outputs, labels, num_items_in_batch=None: outputs.loss)
    with pytest.raises(ValueError, match="causal_lm"):
        train(tmp_path, tokenizer, loss=TrainerLoss("cross_entropy", task="seq2seq"))


@pytest.mark.parametrize("objective", ["cross_entropy", "smile"])
def test_metrics_come_from_the_objectives_own_pass(tmp_path, tokenizer, objective, monkeypatch):
    """The fused path's entropy and accuracy are recorded while the objective scores the batch: no second
    product with the output layer (the separate computation is never called)."""
    from tunekit.hf import loss_func

    def second_pass(*args, **kwargs):
        raise AssertionError("the statistics took a second pass")

    monkeypatch.setattr(loss_func, "linear_token_statistics", second_pass)
    monkeypatch.setattr(loss_func, "token_statistics", second_pass)
    _, reference_logs, _ = train(tmp_path, tokenizer, loss=None)
    _, logs, _ = train(tmp_path, tokenizer, loss=TrainerLoss(objective, task="causal_lm", fused=True))
    assert logs["entropy"] == pytest.approx(reference_logs["entropy"], rel=RTOL)
    assert logs["mean_token_accuracy"] == pytest.approx(reference_logs["mean_token_accuracy"], rel=RTOL)
