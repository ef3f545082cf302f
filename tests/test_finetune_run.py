"""`tunekit.finetune.train` end to end on tiny models (the real Trainer, no mocks): each task trains, saves a
model that `from_pretrained` loads and that predicts, and writes the report; an interrupted run resumes to
the same final weights; objectives and tricks are applied as chosen."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
import transformers
from safetensors.torch import load_file

from finetune_data import (
    classification_records,
    generation_records,
    multi_label_records,
    regression_records,
    tiny_config,
    token_records,
    write_csv,
    write_jsonl,
)
from tunekit.finetune import train
from tunekit.finetune.data import load_examples
from tunekit.finetune.encode import collator, encode
from tunekit.finetune.models import load_model, load_tokenizer

CLASSIFICATION_METRICS = {"epoch", "train_loss", "eval_loss", "accuracy", "macro_f1"}
MULTI_LABEL_METRICS = {"epoch", "train_loss", "eval_loss", "micro_f1", "macro_f1", "exact_match"}
REGRESSION_METRICS = {"epoch", "train_loss", "eval_loss", "mse", "pearson"}
GENERATION_METRICS = {"epoch", "train_loss", "eval_loss", "token_accuracy", "cross_entropy", "perplexity"}


def check_report(out, metrics: set[str], epochs: int) -> dict:
    """The report's files and fields after a finished run of `epochs` epochs; metrics.json's content."""
    results = json.loads((out / "metrics.json").read_text())
    assert results["complete"] is True
    assert [row["epoch"] for row in results["epochs"]] == list(range(1, epochs + 1))
    assert all(set(row) == metrics for row in results["epochs"])
    assert results["final"] == results["epochs"][-1]
    text = (out / "report.md").read_text()
    assert "Status: finished" in text and "| epoch | train_loss | eval_loss |" in text
    assert "from_pretrained" in text and "```yaml" in text
    for name in ["loss", *sorted(metrics - {"epoch", "train_loss", "eval_loss"})]:
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
        assert f"({name}.png)" in text
    assert json.loads((out / "config.json").read_text())["task"] == results["task"]
    return results


def test_sequence_classification_saves_a_model_that_predicts_what_was_measured(tmp_path):
    """CSV training data, a JSONL evaluation file; the saved model, loaded with from_pretrained, scores the
    evaluation file as the report says (accuracy and macro-F1 recomputed here from its predictions)."""
    train_file = write_csv(tmp_path / "reviews.csv", classification_records(64))
    eval_records = classification_records(20, seed=1)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", eval_records)
    out = tmp_path / "run"
    rows = []
    config = tiny_config(train_file, eval_file=str(eval_file), tiny_hidden_size="64")
    result = train(config, out, progress=False, on_epoch=rows.append)
    results = check_report(out, CLASSIFICATION_METRICS, 2)
    assert rows == results["epochs"]  # handed over as each epoch finished
    assert results["labels"] == ["neg", "pos"]
    assert (results["train_examples"], results["eval_examples"]) == (64, 20)

    model = transformers.AutoModelForSequenceClassification.from_pretrained(result.model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(result.model_dir)
    batch = tokenizer([r["text"] for r in eval_records], return_tensors="pt", padding=True)
    with torch.no_grad():
        predicted = [model.config.id2label[i] for i in model(**batch).logits.argmax(-1).tolist()]
    gold = [r["label"] for r in eval_records]
    accuracy = sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    f1 = []
    for label in {*gold, *predicted}:
        tp = sum(p == g == label for p, g in zip(predicted, gold, strict=True))
        wrong = sum((p == label) != (g == label) for p, g in zip(predicted, gold, strict=True))
        f1.append(2 * tp / (2 * tp + wrong))
    assert results["final"]["accuracy"] == pytest.approx(accuracy)
    assert results["final"]["macro_f1"] == pytest.approx(sum(f1) / len(f1))


def predict_with_saved_model(model_dir, texts) -> tuple[transformers.PreTrainedModel, list[list[float]]]:
    """The saved model (from_pretrained) and its logits for `texts`, as Python lists."""
    model = transformers.AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    with torch.no_grad():
        return model, model(**batch).logits.tolist()


@pytest.mark.parametrize(
    ("objective", "options"), [("binary_focal", {"objective_options": "gamma: 1"}), ("multilabel_dice", {})]
)
def test_multi_label_saves_a_model_that_predicts_what_was_measured(tmp_path, objective, options):
    """Labels joined by '|' in a CSV for training, JSON lists for evaluation; the saved multi-label model's
    predictions (sigmoid > 0.5) give the reported micro / macro F1 and exact match, recomputed here."""
    train_file = write_csv(tmp_path / "train.csv", multi_label_records(48), separator="|")
    eval_records = multi_label_records(12, seed=1)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", eval_records)
    config = tiny_config(
        train_file,
        eval_file=str(eval_file),
        problem_type="multi_label_classification",
        objective=objective,
        **options,
    )
    result = train(config, tmp_path / "run", progress=False)
    results = check_report(tmp_path / "run", MULTI_LABEL_METRICS, 2)
    assert (
        results["labels"] == ["animal", "color"] and results["problem_type"] == "multi_label_classification"
    )
    assert results["objective"].startswith(objective)
    assert "(multi_label_classification)" in (tmp_path / "run" / "report.md").read_text()

    model, logits = predict_with_saved_model(result.model_dir, [r["text"] for r in eval_records])
    assert model.config.problem_type == "multi_label_classification"
    assert model.config.id2label == {0: "animal", 1: "color"}
    predicted = [
        {model.config.id2label[i] for i, x in enumerate(row) if 1 / (1 + math.exp(-x)) > 0.5}
        for row in logits
    ]
    gold = [set(r["label"]) for r in eval_records]
    counts = {label: [0, 0, 0] for label in ("animal", "color")}  # TP, FP, FN
    for p, g in zip(predicted, gold, strict=True):
        for label, count in counts.items():
            count[0] += label in p and label in g
            count[1] += label in p and label not in g
            count[2] += label not in p and label in g
    f1 = [2 * tp / (2 * tp + fp + fn) for tp, fp, fn in counts.values() if tp + fp + fn]
    tp, fp, fn = (sum(c[i] for c in counts.values()) for i in range(3))
    final = results["final"]
    assert final["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert final["macro_f1"] == pytest.approx(sum(f1) / len(f1))
    assert final["exact_match"] == pytest.approx(
        sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)
    )


def test_regression_saves_a_model_that_predicts_what_was_measured(tmp_path):
    """A numeric label, objective mse_corr: the saved one-output model's predictions give the reported MSE
    and Pearson r (the standard library's statistics.correlation as the reference)."""
    train_file = write_jsonl(tmp_path / "train.jsonl", regression_records(48))
    eval_records = regression_records(12, seed=1)
    eval_file = write_csv(tmp_path / "eval.csv", eval_records)  # the numbers as CSV text
    config = tiny_config(
        train_file,
        eval_file=str(eval_file),
        problem_type="regression",
        objective="mse_corr",
        objective_options="corr_weight: 1",
    )
    result = train(config, tmp_path / "run", progress=False)
    results = check_report(tmp_path / "run", REGRESSION_METRICS, 2)
    assert results["labels"] == [] and results["objective"] == "mse_corr (corr_weight=1)"

    model, logits = predict_with_saved_model(result.model_dir, [r["text"] for r in eval_records])
    assert (model.config.problem_type, model.config.num_labels) == ("regression", 1)
    predicted = [row[0] for row in logits]
    gold = [r["label"] for r in eval_records]
    mse = sum((p - g) ** 2 for p, g in zip(predicted, gold, strict=True)) / len(gold)
    assert results["final"]["mse"] == pytest.approx(mse, rel=1e-5)
    assert results["final"]["pearson"] == pytest.approx(statistics.correlation(predicted, gold), abs=1e-5)
    assert results["final"]["pearson"] > 0.5  # it learned to count the colour words


def test_token_classification_from_jsonl(tmp_path):
    data = write_jsonl(tmp_path / "tags.jsonl", token_records(48))
    config = tiny_config(data, task="token_classification", text_field="tokens", label_field="tags")
    result = train(config, tmp_path / "run", progress=False)
    results = check_report(tmp_path / "run", CLASSIFICATION_METRICS, 2)
    assert results["labels"] == ["ANIMAL", "COLOR", "O"]

    model = transformers.AutoModelForTokenClassification.from_pretrained(result.model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(result.model_dir)
    words = ["the", "red", "cat"]
    encoding = tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        predicted = model(**encoding).logits.argmax(-1)[0].tolist()
    tags = [model.config.id2label[predicted[i]] for i in (1, 2, 3)]  # one token per word, after [CLS]
    assert encoding.word_ids() == [None, 0, 1, 2, None]
    assert all(tag in {"ANIMAL", "COLOR", "O"} for tag in tags)


@pytest.mark.parametrize(
    ("task", "model", "objective", "auto_class"),
    [
        ("causal_lm", "tiny-gpt2", "dece", transformers.AutoModelForCausalLM),
        ("seq2seq", "tiny-t5", "cross_entropy", transformers.AutoModelForSeq2SeqLM),
    ],
)
def test_generation(tmp_path, task, model, objective, auto_class):
    data = write_jsonl(tmp_path / "copy.jsonl", generation_records(40))
    config = tiny_config(
        data, task=task, model=model, objective=objective, text_field="prompt", target_field="answer"
    )
    result = train(config, tmp_path / "run", progress=False)
    results = check_report(tmp_path / "run", GENERATION_METRICS, 2)
    assert results["objective"].startswith(objective)
    final = results["final"]
    assert 0 <= final["token_accuracy"] <= 1
    assert final["perplexity"] == pytest.approx(torch.tensor(final["cross_entropy"]).exp().item(), rel=1e-5)

    loaded = auto_class.from_pretrained(result.model_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(result.model_dir)
    prompt = tokenizer("copy: red cat", return_tensors="pt")
    output = loaded.generate(**prompt, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    start = prompt["input_ids"].shape[1] if task == "causal_lm" else 1  # a decoder starts from one id
    assert output.shape[0] == 1 and 1 <= output.shape[1] - start <= 4
    assert isinstance(tokenizer.decode(output[0], skip_special_tokens=True), str)


def test_causal_lm_without_a_target_trains_on_the_whole_text(tmp_path):
    records = [{"text": r["prompt"] + " -> " + r["answer"]} for r in generation_records(24)]
    data = write_jsonl(tmp_path / "lm.jsonl", records)
    config = tiny_config(data, task="causal_lm", target_field="none", epochs="1", eval_fraction="0.25")
    train(config, tmp_path / "run", progress=False)
    check_report(tmp_path / "run", GENERATION_METRICS, 1)
    # every token but the first is a target: the labels are the ids, <eos> appended, nothing masked
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    rows = encode(load_examples(data, config), tokenizer, "causal_lm", {}, config.max_length).rows
    for row, record in zip(rows, records, strict=True):
        assert row["labels"] == row["input_ids"]
        assert row["input_ids"][-1] == tokenizer.eos_token_id
        assert tokenizer.decode(row["input_ids"][:-1]) == record["text"]


class CtrlCInEpoch2(transformers.TrainerCallback):
    """A Ctrl-C in the middle of epoch 2 (after its first optimizer step), as a user interrupts a run."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.epoch > 1:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_to_the_same_weights(tmp_path):
    """Focal loss + EMA, dropout (the RNG state) and a linear schedule: 2 epochs straight, or a run stopped
    by Ctrl-C during epoch 2 then resumed from epoch 1's checkpoint, end with the same weights (the EMA
    averages: they are what is saved) and the same report."""
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(32))
    options = {
        "objective": "focal",
        "objective_options": "gamma: 1.5",
        "ema_decay": "0.9",
        "lr_scheduler": "linear",
    }
    config = tiny_config(data, **options)
    straight = train(config, tmp_path / "straight", progress=False)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False, callbacks=[CtrlCInEpoch2()])
    kept = json.loads((out / "metrics.json").read_text())  # written when epoch 1's checkpoint was
    assert kept["complete"] is False and [row["epoch"] for row in kept["epochs"]] == [1]
    assert not (out / "model").exists()
    resumed = train(config, out, progress=False)
    assert (
        resumed.resumed_from is not None and resumed.resumed_from.name == "checkpoint-4"
    )  # 29 examples: 4 steps an epoch

    expected = load_file(straight.model_dir / "model.safetensors")
    actual = load_file(resumed.model_dir / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    assert resumed.epochs == straight.epochs  # the report holds both epochs, with the same values
    assert "EMA (decay 0.9" in json.loads((out / "metrics.json").read_text())["tricks"]


def test_a_changed_option_is_refused_on_resume(tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(16))
    out = tmp_path / "run"
    train(tiny_config(data, epochs="1"), out, progress=False)
    with pytest.raises(ValueError, match=r"other options \(epochs: 1 there, 2 now\).*--fresh"):
        train(tiny_config(data, epochs="2"), out, progress=False)
    write_jsonl(data, classification_records(16, seed=1))  # other data under the same name
    with pytest.raises(ValueError, match=r"other options \(train_file contents: sha256 "):
        train(tiny_config(data, epochs="1"), out, progress=False)
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_config(data, epochs="1"), tmp_path / "empty", resume=True, progress=False)


def test_tricks_and_objectives_are_applied(tmp_path):
    """FGM + R-Drop + layer decay with dice on token classification: the Trainer gets them (its optimizer has
    per-layer learning rates) and the run finishes with finite losses."""
    data = write_jsonl(tmp_path / "tags.jsonl", token_records(24))
    config = tiny_config(
        data,
        task="token_classification",
        text_field="tokens",
        label_field="tags",
        epochs="1",
        objective="dice",
        adversarial="fgm",
        rdrop_weight="0.5",
        layer_decay="0.5",
    )
    captured = {}

    class Capture(transformers.TrainerCallback):
        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            captured["lrs"] = sorted({group["lr"] for group in optimizer.param_groups})

    train(config, tmp_path / "run", progress=False, callbacks=[Capture()])
    results = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert results["tricks"] == "FGM (epsilon 1.0), R-Drop (weight 0.5), layer-wise LR decay 0.5"
    assert results["objective"] == "dice (default options)"
    assert math.isfinite(results["final"]["train_loss"]) and math.isfinite(results["final"]["eval_loss"])
    # embeddings, 2 layers and the head: lr x 0.5^3, 0.5^2, 0.5, 1 (the constant schedule keeps them)
    assert captured["lrs"] == pytest.approx([0.005 * 0.5**k for k in (3, 2, 1, 0)])


def test_badam_trains_one_layer_at_a_time(tmp_path):
    """--badam on a causal LM with layer decay: the layers are trained, the embeddings and head stay
    as initialised (a resume mid-block is tested through the Trainer in test_hf_badam.py)."""
    options = {"badam": "true", "switch_every": "3", "block_order": "descending", "layer_decay": "0.8"}
    results, config = generation_run(tmp_path, "straight", **options)
    assert (
        results["tricks"]
        == "layer-wise LR decay 0.8, BAdam (one layer at a time, 3 steps each, descending order)"
    )
    saved = load_file(tmp_path / "straight" / "model" / "model.safetensors")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "straight" / "model")
    initial = dict(load_model(config, tokenizer, ()).named_parameters())
    for name, value in saved.items():
        assert torch.equal(value, initial[name]) != name.startswith("model.layers."), name


def test_badam_options_are_checked(tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    with pytest.raises(ValueError, match="switch_every is an option of badam, which is off"):
        tiny_config(data, switch_every="5")
    with pytest.raises(ValueError, match="BAdam does not train them at every step"):
        tiny_config(data, badam="true", adversarial="fgm")
    with pytest.raises(ValueError, match="switch_every must be an integer >= 1"):
        tiny_config(data, badam="true", switch_every="0")


@pytest.mark.parametrize(("objective", "option"), [("focal", "alpha"), ("cross_entropy", "weight")])
def test_per_class_weights_need_one_value_per_label(tmp_path, objective, option):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(12))
    config = tiny_config(data, objective=objective, objective_options=f"{option}: [0.25, 1, 2]")
    with pytest.raises(ValueError, match=rf"{option} has 3 values for 2 labels \(neg, pos\)"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_local_model_folder_is_fine_tuned(tmp_path):
    """A model saved with save_pretrained (with its tokenizer) is loaded from its folder, its head resized
    to the data's labels."""
    data = write_jsonl(
        tmp_path / "reviews.jsonl", classification_records(24, labels=("neg", "neutral", "pos"))
    )
    base = tiny_config(data)
    tokenizer = load_tokenizer(base, [r["text"] for r in classification_records(24)])
    model = load_model(base, tokenizer, ["a", "b"])
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    result = train(
        tiny_config(data, model=str(tmp_path / "base"), epochs="1"), tmp_path / "run", progress=False
    )
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(result.model_dir)
    assert loaded.config.id2label == {0: "neg", 1: "neutral", 2: "pos"}
    assert "the model folder's" in json.loads((tmp_path / "run" / "metrics.json").read_text())["tokenizer"]


# ---- the fused path, LoRA and packing (causal LM / seq2seq) ----


def generation_run(tmp_path, name: str, **options) -> tuple[dict, dict]:
    """A 2-epoch tiny-llama causal LM run (or `options`' task and model): metrics.json, the config."""
    data = tmp_path / "copy.jsonl"
    if not data.exists():
        write_jsonl(data, generation_records(40))
    settings = {"task": "causal_lm", "model": "tiny-llama", "text_field": "prompt", "target_field": "answer"}
    config = tiny_config(data, **{**settings, **options})
    train(config, tmp_path / name, progress=False)
    return json.loads((tmp_path / name / "metrics.json").read_text()), config


def assert_same_epochs(actual: dict, expected: dict, rel: float) -> None:
    for row, expected_row in zip(actual["epochs"], expected["epochs"], strict=True):
        for key, value in expected_row.items():
            assert row[key] == pytest.approx(value, rel=rel), (row["epoch"], key)


@pytest.mark.parametrize(
    "task, model, objective",
    [("causal_lm", "tiny-llama", "smile"), ("seq2seq", "tiny-t5", "dece")],
)
def test_the_fused_path_is_the_default_and_trains_as_the_logits_path(tmp_path, task, model, objective):
    options = {"task": task, "model": model, "objective": objective}
    fused, _ = generation_run(tmp_path, "fused", **options)
    logits, _ = generation_run(tmp_path, "logits", fused="false", **options)
    assert fused["loss_path"].startswith("fused: the last hidden states")
    assert logits["loss_path"] == "logits (--no-fused)"
    assert "- loss path: fused" in (tmp_path / "fused" / "report.md").read_text()
    assert_same_epochs(fused, logits, rel=1e-4)  # 2 epochs of AdamW: the same training


def test_packing_trains_as_padded_batches(tmp_path):
    """The examples of each batch in one row (position ids restarting at 0): the same losses and metrics."""
    padded, _ = generation_run(tmp_path, "padded", objective="smile")
    packed, config = generation_run(tmp_path, "packed", objective="smile", packing="true")
    assert_same_epochs(packed, padded, rel=1e-4)
    assert "- batches: packed" in (tmp_path / "packed" / "report.md").read_text()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "packed" / "model")
    rows = encode(
        load_examples(config.train_file, config), tokenizer, "causal_lm", {}, config.max_length
    ).rows
    batch = collator("causal_lm", tokenizer, None, packing=True)(rows[:3])
    lengths = [len(row["input_ids"]) for row in rows[:3]]
    assert batch["input_ids"].shape == (1, sum(lengths))
    starts = [sum(lengths[:k]) for k in range(3)]
    assert (batch["position_ids"][0] == 0).nonzero().flatten().tolist() == starts
    assert all(batch["labels"][0, start] == -100 for start in starts)  # no example predicts the next's start


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "q_proj,lm_head"])
def test_lora_trains_the_adapters_and_saves_them_merged(tmp_path, targets):
    results, config = generation_run(tmp_path, "lora", lora_r="4", lora_targets=targets, learning_rate="0.05")
    text = (tmp_path / "lora" / "report.md").read_text()
    assert "- LoRA (r = 4)" in text and "adapters merged in" in text
    assert results["trainable_parameters"] < results["parameters"] / 4
    if "lm_head" in targets:  # an adapter on the output layer: the fused loss would leave it untrained
        assert results["loss_path"].startswith("logits: the fused path does not apply")
        assert "adapter would never train" in results["loss_path"]
    else:
        assert results["loss_path"].startswith("fused")
    saved = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "lora" / "model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "lora" / "model")
    initial = dict(load_model(config, tokenizer, ()).named_parameters())
    changed = {name for name, param in saved.named_parameters() if not torch.equal(param, initial[name])}
    adapted = tuple(targets.split(","))
    assert changed and all(name.split(".")[-2] in adapted for name in changed)  # only the adapted weights


def test_lora_options_need_a_rank_and_packing_a_causal_lm(tmp_path):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    with pytest.raises(ValueError, match="lora_alpha is an option of LoRA: set lora_r too"):
        tiny_config(data, lora_alpha="8").validate()
    with pytest.raises(ValueError, match="lora_r must be >= 1"):
        tiny_config(data, lora_r="0").validate()
    with pytest.raises(ValueError, match="packing is for task causal_lm"):
        tiny_config(data, packing="true").validate()
