"""Inputs read as the user meant them (issue 13): each case was a reproduction on the code before the fix,
kept here asserting the new behaviour.

- class labels: integers in numeric order, a file mixing numbers and text refused at its line;
- ``--precision``: fp16 / bf16 refused where the Trainer would not honour them, before anything is written;
- numeric options: ranges checked when the config is built (so the CLI fails before the output folder),
  NaN and infinities refused for every float option of every config;
- long texts: cut before they are tokenized, with the same token ids as the whole text cut at max_length;
- ``--model`` / ``--tokenizer`` / ``--corpus`` folders that hold nothing usable: one line saying what was
  expected.
"""

from __future__ import annotations

import dataclasses
import json
import random
import string
from pathlib import Path

import pytest
import torch
import transformers

from finetune_data import TINY, classification_records, tiny_config, write_csv, write_jsonl
from tiny_models import bert_config
from tunekit import cli
from tunekit.experiments.backdoor import BackdoorConfig
from tunekit.experiments.codegen.data import check_corpus_root, corpus_pairs
from tunekit.experiments.descriptive.experiment import DescriptiveConfig
from tunekit.experiments.imbalanced.experiment import ImbalancedConfig
from tunekit.experiments.tricks.experiment import TricksConfig
from tunekit.finetune import config as train_config
from tunekit.finetune.data import Example, label_set, load_examples
from tunekit.finetune.encode import IGNORE_INDEX, encode
from tunekit.finetune.models import train_tokenizer
from tunekit.runs.config import config_from_sources, option, validate_config


def tiny_flags() -> list[str]:
    return [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]


@pytest.fixture(autouse=True)
def _plain(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the default output folders are runs/<name>
    monkeypatch.delenv("TUNEKIT_TRACEBACK", raising=False)


def refused(args: list[str], capsys) -> str:
    """The one-line message of a CLI call that must fail with status 2 and write nothing under runs/."""
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunekit: error: ") and "Traceback" not in err and err.count("\n") == 1
    assert not (Path.cwd() / "runs").exists()
    return err


# ---------------------------------------------------------------------------------------------------------
# 11. class labels


def test_integer_class_labels_keep_their_numeric_order_through_the_cli(tmp_path, capsys):
    """Reproduction: labels 0-11 were sorted as strings, so id 2 was class "10"."""
    rng = random.Random(0)
    records = [{"text": f"word{k} filler {rng.choice('abc')}", "label": k} for k in list(range(12)) * 3]
    data = write_jsonl(tmp_path / "digits.jsonl", records)
    args = ["train", "--train-file", str(data), "--no-progress", "--out", "out", *tiny_flags()]
    assert cli.main([*args, "--epochs", "1"]) == 0
    saved = json.loads((tmp_path / "out" / "model" / "config.json").read_text())
    assert saved["id2label"] == {str(k): str(k) for k in range(12)}


def test_integer_labels_from_json_csv_and_multi_label_lists_are_ordered_numerically(tmp_path):
    config = tiny_config(tmp_path / "unused.jsonl")
    records = [{"text": f"text {k}", "label": k} for k in (10, 2, 1, 0, 11, -1)]
    expected = ("-1", "0", "1", "2", "10", "11")
    assert label_set(load_examples(write_jsonl(tmp_path / "n.jsonl", records), config)) == expected
    assert label_set(load_examples(write_csv(tmp_path / "n.csv", records), config)) == expected
    multi = tiny_config(
        tmp_path / "unused.jsonl", problem_type="multi_label_classification", objective="binary_focal"
    )
    lists = [{"text": "a", "label": [10, 2]}, {"text": "b", "label": [1]}, {"text": "c", "label": []}]
    assert label_set(load_examples(write_jsonl(tmp_path / "m.jsonl", lists), multi)) == ("1", "2", "10")
    # text labels stay in text order, and --labels is the user's order
    words = [{"text": "a", "label": "b10"}, {"text": "b", "label": "b2"}]
    examples = load_examples(write_jsonl(tmp_path / "w.jsonl", words), config)
    assert label_set(examples) == ("b10", "b2")
    given = ("11", "10", "2", "1", "0", "-1")
    assert label_set(load_examples(tmp_path / "n.jsonl", config), given) == given


def test_a_stray_number_among_text_labels_is_refused_through_the_cli(tmp_path, capsys):
    """Reproduction: one ``"label": 1`` among "pos" / "neg" silently became a third class."""
    records = [*classification_records(12), {"text": "a plain film", "label": 1}]
    data = write_jsonl(tmp_path / "reviews.jsonl", records)
    err = refused(["train", "--train-file", str(data), "--no-progress"], capsys)
    first = f"label '{records[0]['label']}' ({data}, line 1) is text"
    assert f"{data}, line 13: label 1 of field 'label' is a number, but {first}" in err
    assert "a field's labels must be all text or all numbers" in err


@pytest.mark.parametrize(
    ("task", "records", "message"),
    [
        (
            "multi_label_classification",
            [{"text": "a", "label": ["x"]}, {"text": "b", "label": ["y", 2]}],
            r"m\.jsonl, line 2: label 2 of field 'label' is a number, but label 'x' \(.*line 1\) is text",
        ),
        (
            "single_label_classification",
            [{"text": "a", "label": 0}, {"text": "b", "label": "1"}],
            r"m\.jsonl, line 2: label '1' of field 'label' is text, but label 0 \(.*line 1\) is a number",
        ),
        (
            "token_classification",
            [{"text": ["a", "b"], "label": ["O", "O"]}, {"text": ["c"], "label": [3]}],
            r"m\.jsonl, line 2: label 3 of field 'label' is a number",
        ),
        (
            "single_label_classification",
            [{"text": "a", "label": "pos"}, {"text": "b", "label": True}],
            r"m\.jsonl, line 2: field 'label' must be a label \(text or an integer\), got True",
        ),
        (
            "multi_label_classification",
            [{"text": "a", "label": ["x", False]}],
            r"m\.jsonl, line 1: field 'label' must be a list of labels",
        ),
    ],
)
def test_mixed_label_kinds_and_bools_are_refused_at_their_line(tmp_path, task, records, message):
    options = (
        {"problem_type": "multi_label_classification", "objective": "binary_focal"}
        if task == "multi_label_classification"
        else {}
    )
    if task == "token_classification":
        options = {"task": task}
    config = tiny_config(tmp_path / "unused.jsonl", **options)
    with pytest.raises(ValueError, match=message):
        load_examples(write_jsonl(tmp_path / "m.jsonl", records), config)


# ---------------------------------------------------------------------------------------------------------
# 12. --precision


def test_fp16_without_a_gpu_is_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    """Reproduction: --precision fp16 on the CPU trained in fp32 (bit-identical weights) and reported fp16."""
    monkeypatch.setattr(train_config, "_accelerator_available", lambda: False)
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    args = ["train", "--train-file", str(data), "--no-progress", "--precision", "fp16"]
    err = refused(args, capsys)
    assert "precision fp16 needs a GPU, and there is none" in err and "it would train in fp32" in err
    monkeypatch.setattr(train_config, "_accelerator_available", lambda: True)
    err = refused([*args, "--cpu"], capsys)  # a GPU, but the run is told to stay on the CPU
    assert "precision fp16 needs a GPU, and --cpu trains on the CPU" in err
    assert tiny_config(data, precision="fp16").precision == "fp16"  # with a GPU: accepted


def test_bf16_is_refused_like_the_trainer_does_but_before_the_run_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(transformers.utils, "is_torch_bf16_gpu_available", lambda: False)
    monkeypatch.setattr(transformers.utils, "is_torch_xla_available", lambda: False)
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    err = refused(["train", "--train-file", str(data), "--precision", "bf16"], capsys)
    assert "precision bf16 needs a GPU that supports it" in err and "add --cpu" in err
    assert tiny_config(data, precision="bf16", cpu="true").precision == "bf16"  # CPU autocast honours bf16


# ---------------------------------------------------------------------------------------------------------
# 13. numeric options


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        # the reproductions
        (["--max-grad-norm", "-1"], "max_grad_norm must be >= 0 (0: no clipping), got -1.0"),
        (["--vocab-size", "5"], "vocab_size must be >= 77 for the tokenizer trained for tiny-bert"),
        (["--learning-rate", "nan"], "learning_rate must be a finite number, got nan"),
        # the others
        (["--task", "causal_lm", "--vocab-size", "257"], "vocab_size must be >= 258 for the tokenizer"),
        (["--vocab-size", "0", "--tokenizer", "."], "vocab_size must be >= 1, got 0"),
        (["--learning-rate", "inf"], "learning_rate must be a finite number, got inf"),
        (["--learning-rate", "0"], "learning_rate must be > 0, got 0.0"),
        (["--eval-fraction", "nan"], "eval_fraction must be a finite number, got nan"),
        (["--weight-decay", "-0.1"], "weight_decay must be >= 0, got -0.1"),
        (["--warmup-steps", "-1"], "warmup_steps must be >= 0, got -1"),
        (["--seed", "-1"], "seed must be in [0, 2**32), got -1"),
        (["--tiny-heads", "0"], "tiny_heads must be >= 1, got 0"),
        (["--tiny-hidden-size", "0"], "tiny_hidden_size must be >= 1, got 0"),
        (["--max-length", "1"], "max_length must be >= 2, got 1"),
        (["--epochs", "0"], "epochs must be >= 1, got 0"),
        (["--batch-size", "0"], "batch_size must be >= 1, got 0"),
        (
            ["--objective", "focal", "--objective-options", "gamma: -1"],
            "objective_options: gamma must be a finite number >= 0",
        ),
        (
            ["--objective", "focal", "--objective-options", "alpha: [1, .nan]"],
            "objective_options: alpha must be finite and >= 0",
        ),
        (["--objective-options", "label_smoothing: 1"], "label_smoothing must be a number in [0, 1), got 1"),
        (
            ["--task", "causal_lm", "--objective", "gce", "--objective-options", "q: 0"],
            "q must be a number in (0, 1]",
        ),
        (
            ["--task", "causal_lm", "--objective", "dece", "--objective-options", "alpha_base: 2"],
            "alpha_base must be",
        ),
        (["--ema-decay", "1"], "ema_decay must be a number in [0, 1), got 1.0"),
        (
            ["--adversarial", "fgm", "--adversarial-epsilon", "0"],
            "adversarial_epsilon must be a finite number > 0",
        ),
        (["--adversarial", "pgd", "--pgd-steps", "0"], "pgd_steps must be an integer >= 1, got 0"),
        (["--rdrop-weight", "-1"], "rdrop_weight must be a finite number >= 0"),
        (["--layer-decay", "0"], "layer_decay must be a number in (0, 1], got 0.0"),
        (["--layer-decay", "0.5", "--head-lr", "0"], "head_lr must be a finite number > 0"),
    ],
)
def test_a_numeric_option_out_of_range_fails_before_the_output_folder(tmp_path, capsys, flags, message):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    (tmp_path / "tokenizer.json").write_text("{}")  # `--tokenizer .`: a folder with a tokenizer's file
    err = refused(["train", "--train-file", str(data), "--no-progress", *flags], capsys)
    assert message in err


def test_boundary_values_are_accepted(tmp_path):
    data = tmp_path / "unused.jsonl"
    config = tiny_config(
        data, max_grad_norm="0", weight_decay="0", warmup_steps="0", seed=str(2**32 - 1), max_length="2"
    )
    assert (config.max_grad_norm, config.seed) == (0.0, 2**32 - 1)
    assert tiny_config(data, task="causal_lm", vocab_size="258").vocab_size == 258
    assert tiny_config(data, vocab_size="77").vocab_size == 77


def test_a_wordpiece_vocabulary_smaller_than_its_characters_is_refused():
    """tiny-bert's vocabulary starts with every character of the texts: a smaller vocab_size would be
    exceeded silently and hold no word."""
    texts = [
        "the quick brown fox jumps over the lazy dog",
        "0 1 2 3 4 5 6 7 8 9",
        " ".join(string.punctuation),
    ]
    characters = 26 + 10 + len(string.punctuation)
    message = f"vocab_size 77 is below the {5 + 2 * characters} tokens a WordPiece of these texts starts with"
    with pytest.raises(ValueError, match=message):
        train_tokenizer("tiny-bert", texts, 77, 32)
    tokenizer = train_tokenizer("tiny-bert", texts, 5 + 2 * characters + 1, 32)
    assert "the" in tokenizer.get_vocab()  # room for a word


def test_max_length_must_leave_room_after_the_special_tokens(tmp_path):
    tokenizer = train_tokenizer("tiny-bert", ["good film", "bad film"], 100, 8)  # [CLS] text [SEP]
    example = Example("good film", "pos", None, "x, line 1")
    with pytest.raises(
        ValueError, match="max_length 2 leaves no room for text: the tokenizer adds 2 special"
    ):
        encode([example], tokenizer, "sequence_classification", {"pos": 0}, 2)
    assert encode([example], tokenizer, "sequence_classification", {"pos": 0}, 3).rows[0]["input_ids"][0] == 2


def test_nan_and_infinity_are_refused_for_every_float_field_of_any_config():
    @dataclasses.dataclass
    class Toy:
        rate: float = option(0.5, "a rate")
        weights: tuple[float, ...] = option((1.0,), "weights")
        maybe: float | None = option(None, "optional")

    validate_config(Toy())
    for field, value, shown in [
        ("rate", "nan", "nan"),
        ("weights", "1,-inf", "1.0,-inf"),
        ("maybe", "inf", "inf"),
    ]:
        with pytest.raises(ValueError, match=f"^{field} must be a finite number, got {shown}$"):
            config_from_sources(Toy, overrides={field: value})


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (BackdoorConfig, {"learning_rate": "nan"}, "learning_rate must be a finite number, got nan"),
        (BackdoorConfig, {"pretrain_learning_rate": "-1"}, "pretrain_learning_rate must be > 0"),
        (BackdoorConfig, {"vocab_size": "258"}, "vocab_size must be >= 259 (the BPE's 256 byte symbols"),
        (BackdoorConfig, {"max_pairs": "-1"}, "max_pairs must be >= 0, got -1"),
        (BackdoorConfig, {"pretrain_epochs": "-1"}, "pretrain_epochs must be >= 0, got -1"),
        (BackdoorConfig, {"threads": "-2"}, "threads must be >= 0, got -2"),
        (BackdoorConfig, {"dece_alpha_base": "0"}, "dece_alpha_base must be a number in (0, 1], got 0.0"),
        (BackdoorConfig, {"dece_label_smoothing": "1"}, "dece_label_smoothing must be a number in [0, 1)"),
        (BackdoorConfig, {"label_smoothing": "-0.1"}, "label_smoothing must be a number in [0, 1)"),
        (BackdoorConfig, {"gce_q": "1.5"}, "gce_q must be a number in (0, 1], got 1.5"),
        (BackdoorConfig, {"poison_rate": "nan"}, "poison_rate must be a finite number, got nan"),
        (DescriptiveConfig, {"learning_rate": "0"}, "learning_rate must be > 0, got 0.0"),
        (DescriptiveConfig, {"vocab_size": "100"}, "vocab_size must be >= 259"),
        (DescriptiveConfig, {"threads": "-1"}, "threads must be >= 0, got -1"),
        (DescriptiveConfig, {"new_token_factor": "inf"}, "new_token_factor must be a finite number, got inf"),
        (ImbalancedConfig, {"vocab_size": "99"}, "vocab_size must be >= 100 (a WordPiece), got 99"),
        (ImbalancedConfig, {"threads": "-1"}, "threads must be >= 0, got -1"),
        (ImbalancedConfig, {"focal_gamma": "nan"}, "focal_gamma must be a finite number, got nan"),
        (TricksConfig, {"ema_decay": "nan"}, "ema_decay must be a finite number, got nan"),
        (TricksConfig, {"dropout": "-inf"}, "dropout must be a finite number, got -inf"),
    ],
)
def test_experiment_options_out_of_range_name_the_option(config_class, overrides, message):
    with pytest.raises(ValueError) as raised:
        config_from_sources(config_class, overrides=overrides)
    assert message in str(raised.value)


def test_an_experiment_option_out_of_range_fails_before_the_output_folder(capsys):
    err = refused(["run", "backdoor", "--quick", "--no-progress", "--learning-rate", "nan"], capsys)
    assert "learning_rate must be a finite number, got nan" in err


# ---------------------------------------------------------------------------------------------------------
# 14. long texts


class Recording:
    """A tokenizer that records the length of every text it is called on (a word list: its characters)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer, self.lengths = tokenizer, []

    def __call__(self, text=None, **kwargs):
        for value in (text, kwargs.get("text_target")):
            if value is not None:
                self.lengths.append(len(value) if isinstance(value, str) else sum(map(len, value)))
        return self.tokenizer(text, **kwargs)

    def __getattr__(self, name):
        return getattr(self.tokenizer, name)


WORDS = ["the", "film", "was", "très", "naïve,", "and", "quite", "good.", "It's", "fine!", "42", "ok"]


def long_text(words: int, seed: int) -> str:
    """Words joined by single and double spaces, tabs and line breaks, with a few long unbroken runs."""
    rng = random.Random(seed)
    parts = []
    for _ in range(words):
        parts.append(rng.choice(WORDS) if rng.random() > 0.01 else "x" * rng.randint(50, 400))
        parts.append(rng.choice([" ", " ", " ", "  ", "\n", "\t", " \n "]))
    return "".join(parts).strip()


def reference_rows(examples, tokenizer, task, label2id, max_length):
    """The rows as the whole texts give them, cut at max_length afterwards (the encoding before the fix)."""
    rows, truncated = [], 0
    for example in examples:
        if task == "sequence_classification":
            full = tokenizer(example.text)["input_ids"]
            row = dict(tokenizer(example.text, truncation=True, max_length=max_length))
            row["labels"] = label2id[example.label]
            cut = len(full) > max_length
        elif task == "token_classification":
            words = list(example.text)
            full = tokenizer(words, is_split_into_words=True)["input_ids"]
            encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
            labels, previous = [], None
            for word in encoding.word_ids():
                first = word is not None and word != previous
                labels.append(label2id[example.label[word]] if first else IGNORE_INDEX)
                previous = word
            row = {**encoding, "labels": labels}
            cut = len(full) > max_length
        elif task == "causal_lm":
            prompt = tokenizer(example.text)["input_ids"]
            target = [
                *tokenizer(example.target, add_special_tokens=False)["input_ids"],
                tokenizer.eos_token_id,
            ]
            input_ids = [*prompt, *target]
            labels = [IGNORE_INDEX] * len(prompt) + target
            cut = len(input_ids) > max_length
            input_ids, labels = input_ids[:max_length], labels[:max_length]
            row = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
        else:
            source = tokenizer(example.text)["input_ids"]
            target = tokenizer(text_target=example.target)["input_ids"]
            row = dict(tokenizer(example.text, truncation=True, max_length=max_length))
            row["labels"] = tokenizer(text_target=example.target, truncation=True, max_length=max_length)[
                "input_ids"
            ]
            cut = len(source) > max_length or len(target) > max_length
        rows.append(row)
        truncated += cut
    return rows, truncated


@pytest.fixture(scope="module")
def tokenizers():
    texts = [long_text(300, seed) for seed in range(4)]
    return {name: train_tokenizer(name, texts, 400, 64) for name in ("tiny-bert", "tiny-gpt2", "tiny-t5")}


TASK_TOKENIZERS = {
    "sequence_classification": "tiny-bert",
    "token_classification": "tiny-bert",
    "causal_lm": "tiny-gpt2",
    "seq2seq": "tiny-t5",
}


def task_examples(task: str, lengths: list[int]) -> list[Example]:
    examples = []
    for seed, words in enumerate(lengths):
        text = long_text(words, seed)
        if task == "token_classification":
            tokens = tuple(text.split())
            examples.append(Example(tokens, tuple(["O", "X"][len(w) % 2] for w in tokens), None, "x"))
        elif task == "sequence_classification":
            examples.append(Example(text, ["neg", "pos"][seed % 2], None, "x"))
        else:
            examples.append(Example(text, None, long_text(words // 2 + 1, seed + 100), "x"))
    return examples


LABEL2ID = {"neg": 0, "pos": 1, "O": 0, "X": 1}


@pytest.mark.parametrize("task", list(TASK_TOKENIZERS))
@pytest.mark.parametrize("max_length", [8, 48])
def test_cutting_texts_first_gives_the_same_rows_as_the_whole_texts(tokenizers, task, max_length):
    tokenizer = tokenizers[TASK_TOKENIZERS[task]]
    examples = task_examples(task, [1, 3, 6, 20, 60, 200, 1500, 4000])
    encoded = encode(examples, tokenizer, task, LABEL2ID, max_length)
    rows, truncated = reference_rows(examples, tokenizer, task, LABEL2ID, max_length)
    assert [dict(row) for row in encoded.rows] == [dict(row) for row in rows]
    assert encoded.truncated == truncated and 0 < truncated < len(examples)


def test_a_long_text_without_whitespace_keeps_its_tokens(tokenizers):
    """A word is never cut (a WordPiece makes a word over 100 characters one [UNK]): a text without
    whitespace near the cut is tokenized up to its next whitespace."""
    tokenizer = tokenizers["tiny-bert"]
    examples = [Example("a" * 3000 + " b" * 50, "pos", None, "x"), Example("ab" * 2000, "neg", None, "x")]
    encoded = encode(examples, tokenizer, "sequence_classification", LABEL2ID, 8)
    rows, truncated = reference_rows(examples, tokenizer, "sequence_classification", LABEL2ID, 8)
    assert [dict(row) for row in encoded.rows] == rows and encoded.truncated == truncated == 1
    assert rows[0]["input_ids"][1] == tokenizer.unk_token_id


@pytest.mark.parametrize("task", list(TASK_TOKENIZERS))
def test_a_text_of_megabytes_is_tokenized_only_in_short_prefixes(tokenizers, task):
    """Reproduction: a 50 MB line with --max-length 128 took 2.5 minutes and 6.8 GB, the whole text being
    tokenized before it was cut. The tokenizer now sees a few times max_length tokens' worth of text."""
    max_length = 128
    words = [WORDS[k % len(WORDS)] for k in range(500_000)]  # 2.4 million characters
    text = " ".join(words)
    if task == "token_classification":
        example = Example(tuple(words), tuple("O" for _ in words), None, "x")
    elif task == "sequence_classification":
        example = Example(text, "pos", None, "x")
    else:
        example = Example(text, None, text, "x")
    tokenizer = Recording(tokenizers[TASK_TOKENIZERS[task]])
    encoded = encode([example], tokenizer, task, LABEL2ID, max_length)
    assert len(encoded.rows[0]["input_ids"]) == max_length and encoded.truncated == 1
    assert len(text) > 2_000_000 and tokenizer.lengths and max(tokenizer.lengths) <= 16 * max_length


# ---------------------------------------------------------------------------------------------------------
# 15. folders that hold nothing usable


@pytest.fixture
def model_folder(tmp_path, capsys):
    """A tiny BERT saved with save_pretrained, without a tokenizer."""
    torch.manual_seed(0)
    folder = tmp_path / "bert"
    model = transformers.BertForSequenceClassification(bert_config(60, max_position_embeddings=32))
    model.save_pretrained(folder)
    capsys.readouterr()  # the bar of the shards written
    return folder


def test_an_empty_model_folder_is_one_line_before_anything_is_written(tmp_path, capsys):
    """Reproduction: transformers' answer spoke of sentencepiece and tiktoken."""
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    (tmp_path / "empty").mkdir()
    err = refused(["train", "--train-file", str(data), "--model", "empty"], capsys)
    assert "model empty holds no model (no config.json): expected config.json and the weights" in err
    assert "sentencepiece" not in err and "tiktoken" not in err


def test_a_model_folder_without_tokenizer_or_weights(tmp_path, capsys, model_folder):
    data = write_jsonl(tmp_path / "reviews.jsonl", classification_records(8))
    args = ["train", "--train-file", str(data), "--no-progress", "--model", str(model_folder)]
    err = refused(args, capsys)
    files = "(tokenizer.json, tokenizer_config.json, vocab.txt, ...)"
    assert f"model {model_folder} has no tokenizer {files}: pass --tokenizer FOLDER" in err
    (tmp_path / "no_tokenizer_either").mkdir()
    err = refused([*args, "--tokenizer", "no_tokenizer_either"], capsys)
    assert "tokenizer no_tokenizer_either has no tokenizer" in err
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((model_folder / "config.json").read_text())
    err = refused(["train", "--train-file", str(data), "--model", str(weightless)], capsys)
    assert "has a config.json but no weights (.safetensors / .bin)" in err
    # with a tokenizer folder the model folder is enough
    tokenizer = train_tokenizer("tiny-bert", ["good film", "bad film"], 100, 32)
    tokenizer.save_pretrained(tmp_path / "tok")
    config = tiny_config(data, model=str(model_folder), tokenizer=str(tmp_path / "tok"))
    assert config.model == str(model_folder)


def test_backdoor_model_folder_without_a_model_or_tokenizer(tmp_path, capsys, model_folder):
    (tmp_path / "empty").mkdir()
    err = refused(["run", "backdoor", "--quick", "--no-progress", "--model", "empty"], capsys)
    assert "model empty holds no model (no config.json)" in err
    err = refused(["run", "backdoor", "--quick", "--no-progress", "--model", str(model_folder)], capsys)
    assert f"model {model_folder} has no tokenizer" in err


FUNCTION = 'def {name}(x):\n    """Return x plus {n} here."""\n    return x + {n}\n\n\n'


def corpus(root: Path, modules: dict[str, int]) -> Path:
    """A tree of modules, each with `count` usable functions."""
    root.mkdir()
    offset = 0
    for name, count in modules.items():
        text = "".join(FUNCTION.format(name=f"f{offset + k}", n=offset + k) for k in range(count))
        (root / name).write_text(text or "x = 1\n")
        offset += count
    return root


@pytest.mark.parametrize(
    ("modules", "flags", "message"),
    [
        (
            None,
            [],
            "corpus {root} has no .py files (test folders and files, __pycache__ and hidden folders are "
            "skipped): expected a tree of Python sources",
        ),
        (
            {"a.py": 0, "test_b.py": 3},
            [],
            "corpus {root} yielded no usable (docstring, code) pairs from its 1 .py file(s): expected "
            "functions whose docstring starts with a sentence of 3 or more words",
        ),
        (
            {"a.py": 5},
            [],
            "corpus {root} yielded 5 (docstring, code) pairs in 1 module(s), none for pre-training",
        ),
        (
            {"a.py": 3, "b.py": 3},
            ["--test-size", "3"],
            "corpus {root} yielded 6 (docstring, code) pairs in 2 module(s), 3 for fine-tuning (the modules "
            "not pre-trained on): too few to hold out --test-size 3 pairs and train on the rest",
        ),
    ],
)
def test_a_corpus_without_enough_pairs_is_one_line(tmp_path, capsys, modules, flags, message):
    """Reproduction: a corpus of no usable function said "test_size must be an integer in [1, -1] for 0
    pairs"."""
    root = corpus(tmp_path / "src", modules or {}) if modules is not None else tmp_path / "src"
    root.mkdir(exist_ok=True)
    assert cli.main(["run", "backdoor", "--quick", "--no-progress", "--corpus", str(root), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tunekit: error: ") and message.format(root=root) in err
    assert "test_size must be an integer" not in err and err.count("\n") == 1


def test_the_descriptive_experiment_says_the_same_of_a_small_corpus(tmp_path, capsys):
    root = corpus(tmp_path / "src", {"a.py": 2, "b.py": 2})
    assert cli.main(["run", "descriptive", "--quick", "--no-progress", "--corpus", str(root)]) == 2
    assert "too few to hold out --test-size 16 pairs" in capsys.readouterr().err


def test_corpus_checks_as_functions(tmp_path):
    with pytest.raises(ValueError, match="is not a directory"):
        check_corpus_root(tmp_path / "missing")
    root = corpus(tmp_path / "src", {"a.py": 0})
    check_corpus_root(root)  # a .py file: the config accepts it; its pairs are counted when the run starts
    with pytest.raises(ValueError, match="yielded no usable"):
        corpus_pairs(root)
    with pytest.raises(ValueError, match=r"has no \.py files"):
        check_corpus_root(root, exclude=("*.py",))
