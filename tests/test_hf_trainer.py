"""The Hugging Face integration with the real Trainer: `TrainerLoss` and `TunekitTrainer`.

Tiny models are built from configs with random weights (GPT-2, T5, BERT, Llama). Checked:

- `TrainerLoss` with cross-entropy equals each model's built-in loss, in value and in the gradients it sends
  into the model (causal LM with shifted labels, seq2seq, sequence classification of each problem type);
- gradient accumulation is exact: micro-batches 8 x 1 and 2 x 4 (and 3 uneven ones) give the same update,
  for every token objective, on sequences whose numbers of supervised tokens differ;
- DeCE's epoch follows the Trainer's; layer-wise LR decay builds the optimizer's groups;
- EMA: the averages equal a hand-run EMA of the weights after each step, evaluation and saving use them,
  and a run resumed from a checkpoint ends bit-identical to an uninterrupted one;
- FGM / PGD and R-Drop change the update exactly as computing them by hand does;
- all the tricks at once train and resume; the Seq2SeqTrainer generates from the averages; a
  `PooledClassifier` trains with a tunekit objective.
"""

from __future__ import annotations

import copy

import pytest
import safetensors.torch
import torch
import transformers

from tiny_lm import (
    UNEVEN_LENGTH,
    UNEVEN_VOCAB,
    make_gpt2,
    rows_of,
    trainer_args,
    trainer_update,
    uneven_prompted_batch,
)
from tiny_models import bert_config, t5_config
from tunekit.hf.loss_func import TrainerLoss
from tunekit.hf.trainer import STATE_FILE, TrainerTricks, TunekitTrainer
from tunekit.losses import cross_entropy, rdrop_kl
from tunekit.losses.registry import TOKEN_LOSSES
from tunekit.tricks import layer_decay_param_groups
from tunekit.tricks.adversarial import FGM, PGD

VOCAB, LENGTH = UNEVEN_VOCAB, UNEVEN_LENGTH


def lm_rows(seed: int, count: int) -> list[dict[str, torch.Tensor]]:
    """`count` prompted sequences of different numbers of supervised tokens, as Trainer dataset rows."""
    return rows_of(uneven_prompted_batch(seed, count))


def stacked(rows: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


# ---- TrainerLoss against the models' own losses ----


def test_causal_lm_cross_entropy_matches_the_models_loss():
    model = make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0)
    batch = stacked(lm_rows(0, 6))
    twin = copy.deepcopy(model)
    builtin = model(**batch).loss
    builtin.backward()
    outputs = twin(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    ours = TrainerLoss("cross_entropy", task="causal_lm")(outputs, batch["labels"])
    ours.backward()
    torch.testing.assert_close(ours, builtin, rtol=1e-6, atol=1e-7)
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_seq2seq_cross_entropy_matches_t5s_loss():
    model = tiny_t5()
    input_ids = torch.randint(1, VOCAB, (3, 7))
    labels = torch.randint(1, VOCAB, (3, 5))
    labels[0, 3:] = -100
    builtin = model(input_ids=input_ids, labels=labels)
    ours = TrainerLoss("cross_entropy", task="seq2seq")(builtin, labels)
    torch.testing.assert_close(ours, builtin.loss, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "objective, problem_type, options",
    [
        ("cross_entropy", "single_label_classification", {}),
        ("mse_corr", "regression", {"corr_weight": 0.0}),
    ],
)
def test_sequence_classification_matches_berts_loss(objective, problem_type, options):
    num_labels = 1 if problem_type == "regression" else 3
    model = tiny_bert_classifier(num_labels, problem_type=problem_type)
    input_ids = torch.randint(1, VOCAB, (5, 9))
    labels = torch.randn(5) if problem_type == "regression" else torch.randint(3, (5,))
    builtin = model(input_ids=input_ids, labels=labels)
    ours = TrainerLoss(objective, task="sequence_classification", **options)(builtin, labels)
    torch.testing.assert_close(ours, builtin.loss, rtol=1e-5, atol=1e-6)


def test_batch_statistics_are_weighted_by_their_share_of_the_labels():
    logits = torch.randn(4, 3)
    labels = torch.tensor([0, 1, 2, 1])
    loss_func = TrainerLoss("dice", task="sequence_classification")
    whole = loss_func.from_logits(logits, labels)
    torch.testing.assert_close(loss_func.from_logits(logits, labels, num_items_in_batch=8), whole * 4 / 8)


def test_trainer_loss_rejects_what_it_cannot_score():
    with pytest.raises(ValueError, match="task"):
        TrainerLoss("cross_entropy", task="language_modelling")
    with pytest.raises(ValueError, match="'nope'"):
        TrainerLoss("nope", task="causal_lm")
    with pytest.raises(ValueError, match="for task sequence_classification with problem_type multi_label"):
        TrainerLoss("binary_focal", task="causal_lm")
    with pytest.raises(ValueError, match="smile"):
        TrainerLoss("smile", task="sequence_classification")
    with pytest.raises(ValueError, match="labels"):
        TrainerLoss("cross_entropy", task="causal_lm").from_logits(torch.randn(2, 3, 5), None)
    with pytest.raises(ValueError, match="logits"):
        TrainerLoss("cross_entropy", task="causal_lm")((torch.randn(2, 3, 5),), torch.zeros(2, 3).long())


# ---- gradient accumulation in the Trainer ----


def one_update(
    tmp_path, loss_func, *, batch_size: int, accumulation: int, rows, make_model=None, tricks=None
):
    """The model's parameters after one SGD step of the Trainer over all `rows` (a tiny GPT-2 by default)."""
    model = (
        make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0) if make_model is None else make_model()
    )
    weights, _ = trainer_update(
        tmp_path,
        model,
        rows,
        batch_size=batch_size,
        accumulation=accumulation,
        compute_loss_func=loss_func,
        tricks=tricks,
    )
    return weights


def assert_same_update_when_accumulated(tmp_path, make_loss_func, rows, make_model=None):
    """8 x 1, 1 x 8, 2 x 4 and 3 + 3 + 2 micro-batches give the update of one batch of 8 rows."""
    whole = one_update(
        tmp_path / "8x1", make_loss_func(), batch_size=8, accumulation=1, rows=rows, make_model=make_model
    )
    for batch_size, accumulation in [(1, 8), (2, 4), (3, 3)]:
        split = one_update(
            tmp_path / f"{batch_size}x{accumulation}",
            make_loss_func(),
            batch_size=batch_size,
            accumulation=accumulation,
            rows=rows,
            make_model=make_model,
        )
        for name, value in whole.items():
            torch.testing.assert_close(split[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("objective", sorted(TOKEN_LOSSES))
def test_gradient_accumulation_gives_the_update_of_one_big_batch(tmp_path, objective):
    rows = lm_rows(1, 8)
    counts = [int((row["labels"][1:] != -100).sum()) for row in rows]
    assert len(set(counts)) > 2  # uneven micro-batches: a mean of means would differ
    assert_same_update_when_accumulated(tmp_path, lambda: TrainerLoss(objective, task="causal_lm"), rows)


def tiny_t5() -> transformers.T5ForConditionalGeneration:
    torch.manual_seed(0)
    return transformers.T5ForConditionalGeneration(t5_config(VOCAB, d_kv=8))


def test_gradient_accumulation_is_exact_for_seq2seq(tmp_path):
    gen = torch.Generator().manual_seed(5)
    rows = []
    for i in range(8):
        labels = torch.randint(1, VOCAB, (6,), generator=gen)
        labels[1 + i % 5 :] = -100  # 1 to 5 supervised tokens
        rows.append({"input_ids": torch.randint(1, VOCAB, (7,), generator=gen), "labels": labels})
    assert_same_update_when_accumulated(
        tmp_path, lambda: TrainerLoss("dece", task="seq2seq"), rows, make_model=tiny_t5
    )


def tiny_bert_classifier(num_labels: int = 3, **overrides) -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(bert_config(VOCAB, num_labels=num_labels, **overrides))


def test_gradient_accumulation_is_exact_for_token_classification_with_focal(tmp_path):
    gen = torch.Generator().manual_seed(6)
    rows = []
    for i in range(8):
        labels = torch.randint(3, (9,), generator=gen)
        labels[2 + i % 6 :] = -100
        rows.append({"input_ids": torch.randint(1, VOCAB, (9,), generator=gen), "labels": labels})

    def make_model():
        torch.manual_seed(0)
        return transformers.BertForTokenClassification(bert_config(VOCAB, num_labels=3))

    assert_same_update_when_accumulated(
        tmp_path, lambda: TrainerLoss("focal", task="token_classification", gamma=2.0), rows, make_model
    )


# ---- DeCE's epoch, layer-wise LR decay ----


def test_deces_epoch_follows_the_trainers(tmp_path):
    loss_func = TrainerLoss("dece", task="causal_lm")
    seen = []

    class Record(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen.append(loss_func.objective.epoch)

    trainer = TunekitTrainer(
        model=make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0),
        args=trainer_args(tmp_path, per_device_train_batch_size=4, num_train_epochs=3, learning_rate=0.01),
        train_dataset=lm_rows(2, 8),
        compute_loss_func=loss_func,
        callbacks=[Record()],
    )
    trainer.train()
    assert seen == [1, 1, 2, 2, 3, 3]


def test_layer_decay_builds_the_optimizers_groups(tmp_path):
    model = make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0)
    trainer = TunekitTrainer(
        model=model,
        args=trainer_args(tmp_path, optim="adamw_torch", learning_rate=1e-3, weight_decay=0.01),
        train_dataset=lm_rows(2, 8),
        compute_loss_func=TrainerLoss("cross_entropy", task="causal_lm"),
        tricks=TrainerTricks(layer_decay=0.5, head_lr=2e-3),
    )
    optimizer = trainer.create_optimizer()
    expected = layer_decay_param_groups(model, 1e-3, 0.5, weight_decay=0.01, head_lr=2e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [g["lr"] for g in expected]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [g["weight_decay"] for g in expected]
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**3)  # embeddings, under 2 blocks
    trainer.train()  # the scheduler keeps the ratios between groups
    lrs = [g["lr"] for g in optimizer.param_groups]
    assert lrs[0] / lrs[-1] == pytest.approx(1e-3 * 0.5**3 / 2e-3)


# ---- EMA ----


class RecordWeights(transformers.TrainerCallback):
    def __init__(self):
        self.weights = []

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.weights.append({n: p.detach().double().clone() for n, p in model.named_parameters()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.on_train_begin(args, state, control, model=model)


def ema_trainer(tmp_path, record=None, **overrides):
    return TunekitTrainer(
        model=make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0),
        args=trainer_args(tmp_path, learning_rate=0.3, **overrides),
        train_dataset=lm_rows(3, 48),
        eval_dataset=lm_rows(4, 8),
        compute_loss_func=TrainerLoss("cross_entropy", task="causal_lm"),
        tricks=TrainerTricks(ema_decay=0.8, ema_warmup=False),
        callbacks=[] if record is None else [record],
    )


def test_ema_in_the_trainer_averages_every_step_and_serves_evaluation_and_saving(tmp_path):
    record = RecordWeights()
    trainer = ema_trainer(tmp_path, record)
    trainer.train()
    assert len(record.weights) == 7  # the start and 6 steps
    expected = dict(record.weights[0])
    for weights in record.weights[1:]:
        expected = {n: 0.8 * expected[n] + 0.2 * weights[n] for n in expected}
    for name, value in expected.items():
        torch.testing.assert_close(trainer.ema.averages[name].double(), value, rtol=1e-6, atol=1e-7)
    assert trainer.ema.num_updates == 6

    model = trainer.model
    training = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.evaluate()
    averaged = copy.deepcopy(model)
    trainer.ema.copy_to(averaged)
    batch = stacked(lm_rows(4, 8))
    with torch.no_grad():
        outputs = averaged(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    eval_loss = TrainerLoss("cross_entropy", task="causal_lm")(outputs, batch["labels"])
    assert metrics["eval_loss"] == pytest.approx(eval_loss.item(), rel=1e-5)
    for name, param in model.named_parameters():  # the training weights are back
        assert torch.equal(param, training[name]), name

    trainer.save_model(str(tmp_path / "final"))
    saved = safetensors.torch.load_file(str(tmp_path / "final" / "model.safetensors"))
    for name, value in saved.items():
        if name in trainer.ema.averages:
            assert torch.equal(value, trainer.ema.averages[name]), name


def test_ema_resumes_from_a_checkpoint_exactly(tmp_path):
    full = ema_trainer(tmp_path / "full", save_strategy="steps", save_steps=3)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    assert state["ema"]["num_updates"] == 3
    saved = safetensors.torch.load_file(str(checkpoint / "model.safetensors"))
    assert not torch.equal(
        saved["transformer.h.0.mlp.c_fc.weight"], state["training_weights"]["transformer.h.0.mlp.c_fc.weight"]
    )
    assert torch.equal(
        saved["transformer.h.0.mlp.c_fc.weight"], state["ema"]["averages"]["transformer.h.0.mlp.c_fc.weight"]
    )

    resumed = ema_trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.ema.num_updates == 6
    for name, param in full.model.named_parameters():
        assert torch.equal(dict(resumed.model.named_parameters())[name], param), name
    for name, average in full.ema.averages.items():
        assert torch.equal(resumed.ema.averages[name], average), name


# ---- R-Drop ----


def test_rdrop_loss_is_the_mean_task_loss_plus_alpha_times_the_supervised_kl():
    logits = torch.randn(6, 5, 7, requires_grad=True)  # two passes of a batch of 3
    labels = torch.randint(7, (3, 5))
    labels[0, :2] = -100
    seen = {}

    def model(**inputs):  # returns both passes' logits for the repeated batch
        seen.update(inputs)
        return {"logits": logits}

    batch = {"input_ids": torch.arange(15).view(3, 5), "labels": labels}
    loss = TrainerLoss("cross_entropy", task="causal_lm").compute(model, batch, 9, rdrop_weight=0.7).loss
    assert torch.equal(seen["input_ids"], torch.cat([batch["input_ids"]] * 2)) and "labels" not in seen
    assert batch["labels"] is labels and len(batch) == 2  # the caller's batch is left as it was
    a, b = logits[:3], logits[3:]
    target = torch.nn.functional.pad(labels, (0, 1), value=-100)[:, 1:]
    ce = [cross_entropy(x, target, reduction="sum") / 9 for x in (a, b)]
    kl = rdrop_kl(a, b, pad_mask=target == -100, reduction="sum") / 9
    torch.testing.assert_close(loss, (ce[0] + ce[1]) / 2 + 0.7 * kl)


def test_rdrop_in_the_trainer_runs_both_dropout_passes_in_one_forward(tmp_path):
    model = make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.2, seed=0)
    loss_func = TrainerLoss("cross_entropy", task="causal_lm")
    trainer = TunekitTrainer(
        model=model,
        args=trainer_args(tmp_path),
        train_dataset=lm_rows(2, 8),
        compute_loss_func=loss_func,
        tricks=TrainerTricks(rdrop_weight=0.5),
    )
    batch = stacked(lm_rows(2, 4))
    n = int((batch["labels"][:, 1:] != -100).sum())
    model.train()
    torch.manual_seed(7)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
    torch.manual_seed(7)
    twice = {k: torch.cat([v, v]) for k, v in batch.items() if k != "labels"}
    logits = model(**twice).logits
    target = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
    a, b = logits[:4], logits[4:]
    task = sum(cross_entropy(x, target, reduction="sum") for x in (a, b)) / 2 / n
    expected = task + 0.5 * rdrop_kl(a, b, pad_mask=target == -100, reduction="sum") / n
    torch.testing.assert_close(loss, expected)
    plain = loss_func.from_logits(logits[:4], batch["labels"], n)
    assert loss > plain * 0.5  # the KL term is there: the passes differ under dropout
    assert not torch.allclose(logits[:4], logits[4:])
    model.eval()  # evaluation: one pass, no KL
    with torch.no_grad():
        assert trainer.compute_loss(model, dict(batch), num_items_in_batch=n) == pytest.approx(
            loss_func(model(**{k: v for k, v in batch.items() if k != "labels"}), batch["labels"], n).item()
        )


def test_tricks_reject_bad_options(tmp_path):
    with pytest.raises(ValueError, match="ema_decay"):
        TrainerTricks(ema_decay=1.0)
    with pytest.raises(ValueError, match="adversarial"):
        TrainerTricks(adversarial="fgsm")
    with pytest.raises(ValueError, match="pgd_steps"):
        TrainerTricks(adversarial="pgd", pgd_steps=0)
    with pytest.raises(ValueError, match="layer_decay"):
        TrainerTricks(layer_decay=1.5)
    with pytest.raises(ValueError, match="R-Drop"):
        TunekitTrainer(
            model=make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0),
            args=trainer_args(tmp_path),
            tricks=TrainerTricks(rdrop_weight=1.0),
        )


# ---- FGM / PGD ----


@pytest.mark.parametrize("attack", ["fgm", "pgd"])
@pytest.mark.parametrize("accumulation", [1, 2])
def test_adversarial_training_in_the_trainer_matches_the_attack_run_by_hand(tmp_path, attack, accumulation):
    rows = lm_rows(8, 8)
    tricks = TrainerTricks(adversarial=attack, adversarial_epsilon=0.5, pgd_step_size=0.2, pgd_steps=2)
    updated = one_update(
        tmp_path,
        TrainerLoss("cross_entropy", task="causal_lm"),
        batch_size=8 // accumulation,
        accumulation=accumulation,
        rows=rows,
        tricks=tricks,
    )
    # by hand: the same micro-batches (in the order of the Trainer's sampler), clean + adversarial gradients
    model = make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0)
    trainer = TunekitTrainer(
        model=model, args=trainer_args(tmp_path / "order", per_device_train_batch_size=8), train_dataset=rows
    )
    (batch,) = list(trainer.get_train_dataloader())
    n = int((batch["labels"][:, 1:] != -100).sum())
    loss_func = TrainerLoss("cross_entropy", task="causal_lm")
    adversary = FGM(model, 0.5) if attack == "fgm" else PGD(model, 0.5, 0.2, 2)
    size = 8 // accumulation
    for start in range(0, 8, size):
        micro = {k: v[start : start + size] for k, v in batch.items()}
        inputs = {k: v for k, v in micro.items() if k != "labels"}

        def closure(inputs=inputs, labels=micro["labels"]):
            return loss_func(model(**inputs), labels, n)

        adversary.step(closure(), closure)
    with torch.no_grad():
        for name, param in model.named_parameters():
            torch.testing.assert_close(
                updated[name], param - 0.5 * param.grad, rtol=1e-5, atol=1e-6, msg=name
            )
    clean = one_update(
        tmp_path / "clean",
        TrainerLoss("cross_entropy", task="causal_lm"),
        batch_size=8,
        accumulation=1,
        rows=rows,
    )
    embedding = "transformer.wte.weight"
    assert not torch.allclose(updated[embedding], clean[embedding])  # the attack changed the update


# ---- everything at once, and the other trainers ----


def test_all_tricks_together_train_checkpoint_and_resume(tmp_path):
    """DeCE + EMA + PGD + R-Drop + layer decay with AdamW and gradient accumulation: the loss falls, and a
    run resumed from its checkpoint ends where the uninterrupted one does."""
    tricks = TrainerTricks(
        ema_decay=0.9, adversarial="pgd", pgd_steps=2, rdrop_weight=0.5, layer_decay=0.8, head_lr=3e-3
    )

    def trainer(output_dir):
        return TunekitTrainer(
            model=make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.1, seed=0),
            args=trainer_args(
                output_dir,
                optim="adamw_torch",
                learning_rate=3e-3,
                per_device_train_batch_size=4,
                gradient_accumulation_steps=2,
                num_train_epochs=4,
                save_strategy="steps",
                save_steps=6,
            ),
            train_dataset=lm_rows(11, 24),
            eval_dataset=lm_rows(12, 16),
            compute_loss_func=TrainerLoss("dece", task="causal_lm"),
            tricks=tricks,
        )

    full = trainer(tmp_path / "full")
    start = full.evaluate()["eval_loss"]
    full.train()
    assert full.compute_loss_func.objective.epoch == 4
    assert full.evaluate()["eval_loss"] < 0.8 * start
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-6"))
    assert resumed.ema.num_updates == full.ema.num_updates == 12
    for name, param in full.model.named_parameters():
        torch.testing.assert_close(dict(resumed.model.named_parameters())[name], param, msg=name)


def test_seq2seq_trainer_with_ema_generates_from_the_averaged_weights(tmp_path):
    from tunekit.hf import TunekitSeq2SeqTrainer

    gen = torch.Generator().manual_seed(3)
    rows = [{"input_ids": torch.randint(1, VOCAB, (6,), generator=gen)} for _ in range(8)]
    for row in rows:
        row["labels"] = row["input_ids"].flip(0)  # learn to reverse
    trainer = TunekitSeq2SeqTrainer(
        model=tiny_t5(),
        args=transformers.Seq2SeqTrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=4,
            learning_rate=3e-3,
            num_train_epochs=2,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            disable_tqdm=True,
            predict_with_generate=True,
            generation_max_length=7,
        ),
        train_dataset=rows,
        eval_dataset=rows,
        compute_loss_func=TrainerLoss("smile", task="seq2seq"),
        tricks=TrainerTricks(ema_decay=0.5, ema_warmup=False),
    )
    trainer.train()
    predictions = trainer.predict(rows).predictions
    averaged = copy.deepcopy(trainer.model)
    trainer.ema.copy_to(averaged)
    expected = averaged.generate(input_ids=torch.stack([r["input_ids"] for r in rows]), max_length=7)
    assert torch.equal(torch.as_tensor(predictions)[:, : expected.shape[1]], expected)


def test_pooled_classifier_trains_with_a_tunekit_objective_in_the_trainer(tmp_path):
    from tunekit.hf import PooledClassifier

    gen = torch.Generator().manual_seed(4)
    rows = []
    for i in range(32):
        input_ids = torch.randint(4, VOCAB, (10,), generator=gen)
        label = i % 3
        input_ids[int(torch.randint(10, (), generator=gen))] = label + 1  # the class is a marker token
        rows.append(
            {"input_ids": input_ids, "attention_mask": torch.ones(10, dtype=torch.long), "labels": label}
        )
    torch.manual_seed(0)
    model = PooledClassifier.from_config(bert_config(VOCAB), num_labels=3, pooling="max", dropout=0.0)
    trainer = TunekitTrainer(
        model=model,
        args=trainer_args(tmp_path, optim="adamw_torch", learning_rate=3e-3, num_train_epochs=8),
        train_dataset=rows,
        eval_dataset=rows,
        compute_loss_func=TrainerLoss("focal", task="sequence_classification", gamma=2.0),
        tricks=TrainerTricks(layer_decay=0.9, ema_decay=0.5),
    )
    start = trainer.evaluate()["eval_loss"]
    trainer.train()
    assert trainer.evaluate()["eval_loss"] < 0.5 * start
