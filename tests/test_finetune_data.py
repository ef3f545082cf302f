"""`tunekit train`'s data and options without training: JSONL / CSV / TSV read into the same examples, every
bad-data error names the file and the line, the `datasets` folder's missing-package error, the label set,
the metrics, and `TrainConfig`'s errors from flags and YAML."""

from __future__ import annotations

import gzip
import math
import statistics
import sys

import numpy as np
import pytest

from finetune_data import (
    classification_records,
    multi_label_records,
    regression_records,
    tiny_config,
    token_records,
    write_csv,
    write_jsonl,
)
from tunekit.finetune import TrainConfig, train
from tunekit.finetune.data import check_labels, label_set, load_examples, split_off
from tunekit.finetune.encode import encode
from tunekit.finetune.metrics import multi_label_metrics, regression_metrics
from tunekit.finetune.models import train_tokenizer
from tunekit.losses.registry import CLASSIFICATION_LOSSES, objectives_for
from tunekit.runs.config import config_from_sources
from tunekit.workbench.metrics import macro_f1


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# ---- reading ----------------------------------------------------------------------------------------------


def test_jsonl_csv_and_tsv_give_the_same_examples(tmp_path):
    records = classification_records(5)
    config = tiny_config(tmp_path / "unused.jsonl")
    from_jsonl = load_examples(write_jsonl(tmp_path / "a.jsonl", records), config)
    from_csv = load_examples(write_csv(tmp_path / "a.csv", records), config)
    tsv = "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in records)
    from_tsv = load_examples(write(tmp_path / "a.tsv", tsv), config)
    expected = [(r["text"], r["label"]) for r in records]
    for examples in (from_jsonl, from_csv, from_tsv):
        assert [(e.text, e.label) for e in examples] == expected
    assert from_jsonl[1].where == f"{tmp_path / 'a.jsonl'}, line 2"
    assert from_csv[1].where == f"{tmp_path / 'a.csv'}, line 3"  # the header is line 1


def test_token_classification_words_as_lists_or_spaced_strings(tmp_path):
    records = token_records(3)
    config = tiny_config(
        tmp_path / "unused.jsonl", task="token_classification", text_field="tokens", label_field="tags"
    )
    from_jsonl = load_examples(write_jsonl(tmp_path / "t.jsonl", records), config)
    from_csv = load_examples(write_csv(tmp_path / "t.csv", records), config)
    assert [(e.text, e.label) for e in from_jsonl] == [(e.text, e.label) for e in from_csv]
    assert from_jsonl[0].text == tuple(records[0]["tokens"])


def test_numbers_as_labels_blank_lines_and_multi_line_csv_cells(tmp_path):
    config = tiny_config(tmp_path / "unused.jsonl")
    jsonl = write(tmp_path / "n.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0}\n')
    examples = load_examples(jsonl, config)
    assert [(e.label, e.where.rsplit(" ", 1)[1]) for e in examples] == [("1", "1"), ("0", "3")]
    csv_text = 'text,label\n"two\nlines",pos\n\nbad one,\n'  # a record on lines 2-3, a blank line 4
    with pytest.raises(ValueError, match=r"m\.csv, line 5: field 'label' \(the label\) is empty"):
        load_examples(write(tmp_path / "m.csv", csv_text), config)


def test_split_off_is_seeded_and_keeps_both_sides():
    examples = list(range(10))
    train_part, held = split_off(examples, 0.2, seed=3)
    assert len(held) == 2 and sorted(train_part + held) == examples
    assert split_off(examples, 0.2, seed=3) == (train_part, held)
    assert split_off(examples[:2], 0.01, seed=0)[1] != []  # at least one example held out
    assert split_off(examples, 0.0, seed=0) == (examples, [])


# ---- errors that name the file and line -------------------------------------------------------------------

BAD_DATA = [
    (
        '{"text": "fine", "label": "pos"}\n{"text": "bad"}\n',
        r"line 2: missing field 'label' \(fields: text\)",
    ),
    ('{"text": "fine", "label": "pos"}\n{"text": "  ", "label": "neg"}\n', r"line 2: field 'text' is empty"),
    (
        '{"text": "fine", "label": "pos"}\n{"text": "ok", "label": ""}\n',
        r"line 2: field 'label' \(the label\)",
    ),
    ('{"text": 3, "label": "pos"}\n', r"line 1: field 'text' must be text, got int 3"),
    ('{"text": "fine", "label": "pos"}\n{"text": "x", "label": "neg"\n', r"line 2: invalid JSON"),
    ('["text", "label"]\n', r"line 1: expected a JSON object, got list"),
    ("text,label\nfine,pos\n", r"line 1: invalid JSON .*is it CSV\?"),
    ('[{"text": "fine",\n "label": "pos"}]\n', r"line 1: invalid JSON .*a JSON array is not JSON Lines"),
]


@pytest.mark.parametrize(("content", "message"), BAD_DATA)
def test_bad_jsonl_names_the_file_and_line(tmp_path, content, message):
    path = write(tmp_path / "reviews.jsonl", content)
    with pytest.raises(ValueError, match=r"reviews\.jsonl, " + message):
        load_examples(path, tiny_config(path))


def test_bad_csv_names_the_file_and_line(tmp_path):
    config = tiny_config(tmp_path / "unused.csv")
    too_many = write(tmp_path / "many.csv", "text,label\nfine,pos\nbad,neg,extra\n")
    with pytest.raises(ValueError, match=r"many\.csv, line 3: 3 values for 2 columns \(text, label\)"):
        load_examples(too_many, config)
    no_label = write(tmp_path / "cols.csv", "text,tag\nfine,pos\n")
    with pytest.raises(ValueError, match=r"cols\.csv, line 2: missing field 'label' \(fields: text, tag\)"):
        load_examples(no_label, config)
    json_inside = write_jsonl(tmp_path / "data.csv", classification_records(2))
    with pytest.raises(
        ValueError, match=r"data\.csv, line 1: this looks like JSON, not CSV: rename it \.jsonl"
    ):
        load_examples(json_inside, config)


def test_a_binary_file_is_not_what_its_extension_says(tmp_path):
    config = tiny_config(tmp_path / "unused.jsonl")
    gzipped = tmp_path / "data.jsonl"
    gzipped.write_bytes(gzip.compress(b'{"text": "fine", "label": "pos"}\n' * 50))
    with pytest.raises(
        ValueError, match=r"data\.jsonl, line 1: not UTF-8 text .*is this really JSON Lines\?"
    ):
        load_examples(gzipped, config)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\nfine,pos\ncaf\xe9,neg\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin\.csv, line 3: not UTF-8 text .*is this really CSV\?"):
        load_examples(latin, config)


def test_unknown_extension_missing_file_and_empty_file(tmp_path):
    config = tiny_config(tmp_path / "unused.jsonl")
    with pytest.raises(ValueError, match=r"data\.txt: unknown data format '\.txt'; use \.jsonl"):
        load_examples(write(tmp_path / "data.txt", "fine\n"), config)
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_examples(tmp_path / "absent.jsonl", config)
    with pytest.raises(ValueError, match=r"empty\.jsonl: no examples"):
        load_examples(write(tmp_path / "empty.jsonl", "\n"), config)


def test_words_and_tags_must_pair_up(tmp_path):
    path = write_jsonl(tmp_path / "tags.jsonl", [{"tokens": ["a", "red", "cat"], "tags": ["O", "COLOR"]}])
    config = tiny_config(path, task="token_classification", text_field="tokens", label_field="tags")
    with pytest.raises(ValueError, match=r"tags\.jsonl, line 1: 3 words in 'tokens' but 2 tags in 'tags'"):
        load_examples(path, config)


def test_a_datasets_folder_gives_the_same_examples_as_jsonl(tmp_path):
    import datasets

    records = classification_records(5)
    config = tiny_config(tmp_path / "unused.jsonl")
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "saved"))
    from_folder = load_examples(tmp_path / "saved", config)
    from_jsonl = load_examples(write_jsonl(tmp_path / "a.jsonl", records), config)
    assert [(e.text, e.label) for e in from_folder] == [(e.text, e.label) for e in from_jsonl]
    assert from_folder[1].where == f"{tmp_path / 'saved'}, row 1"


def test_a_datasets_folder_of_splits_or_of_nothing_is_refused(tmp_path):
    import datasets

    split = datasets.Dataset.from_list(classification_records(4))
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "splits"))
    with pytest.raises(ValueError, match=r"splits: a DatasetDict with splits \['test', 'train'\]"):
        load_examples(tmp_path / "splits", tiny_config(tmp_path / "splits"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a `datasets` folder saved with save_to_disk"):
        load_examples(tmp_path / "empty", tiny_config(tmp_path / "empty"))


def test_a_datasets_folder_without_the_datasets_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if not installed: its import raises
    folder = tmp_path / "saved"
    folder.mkdir()
    with pytest.raises(
        ImportError, match=r"saved is a folder: .*needs the datasets package \(pip install datasets\)"
    ):
        load_examples(folder, tiny_config(folder))


def test_labels_outside_the_label_set(tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", classification_records(6))
    eval_file = write_jsonl(
        tmp_path / "eval.jsonl", [{"text": "so so", "label": "pos"}, {"text": "meh", "label": "meh"}]
    )
    config = tiny_config(train_file, eval_file=str(eval_file))
    message = r"eval\.jsonl, line 2: label 'meh' is not in the labels of the training data \(neg, pos\)"
    with pytest.raises(ValueError, match=message):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # nothing is written before the data is checked

    given = tiny_config(train_file, labels="pos,neutral")
    examples = load_examples(train_file, given)
    first_neg = next(e for e in examples if e.label == "neg")
    with pytest.raises(
        ValueError, match=rf"{first_neg.where}: label 'neg' is not in the label set given by --labels"
    ):
        label_set(examples, given.labels)
    assert label_set(examples) == ("neg", "pos")
    assert label_set(examples, ("pos", "neg", "neutral")) == ("pos", "neg", "neutral")


def test_every_classification_objective_fits_one_problem_type():
    """The registry decides: each objective of CLASSIFICATION_LOSSES is offered for its own problem type."""
    task = "sequence_classification"
    assert objectives_for(task, "multi_label_classification") == ("binary_focal", "multilabel_dice")
    assert objectives_for(task, "regression") == ("mse_corr",)
    for name, spec in CLASSIFICATION_LOSSES.items():
        assert name in objectives_for(task, spec.problem_type)
        overrides = {"train_file": "d.jsonl", "problem_type": spec.problem_type, "objective": name}
        assert config_from_sources(TrainConfig, overrides=overrides).objective == name


def test_multi_label_as_json_lists_or_separated_csv_text(tmp_path):
    records = [*multi_label_records(6), {"text": "none at all", "label": []}]
    config = tiny_config(
        tmp_path / "unused.jsonl", problem_type="multi_label_classification", objective="binary_focal"
    )
    from_jsonl = load_examples(write_jsonl(tmp_path / "d.jsonl", records), config)
    from_csv = load_examples(write_csv(tmp_path / "d.csv", records, separator="|"), config)
    assert [(e.text, e.label) for e in from_jsonl] == [(e.text, e.label) for e in from_csv]
    assert [e.label for e in from_jsonl] == [tuple(r["label"]) for r in records]
    assert from_jsonl[-1].label == ()  # an example with none of the labels
    assert label_set(from_jsonl) == ("animal", "color")

    spaced = write(tmp_path / "spaced.csv", 'text,label\n"a b",x y x\n')
    config = tiny_config(
        spaced, problem_type="multi_label_classification", objective="binary_focal", label_separator=" "
    )
    assert load_examples(spaced, config)[0].label == ("x", "y")  # duplicates dropped

    tokenizer = train_tokenizer("tiny-bert", [r["text"] for r in records], 300, 32)
    rows = encode(from_jsonl, tokenizer, "sequence_classification", {"animal": 0, "color": 1}, 32).rows
    assert [row["labels"] for row in rows] == [
        [float("animal" in r["label"]), float("color" in r["label"])] for r in records
    ]


def test_regression_labels_are_numbers_from_jsonl_or_csv(tmp_path):
    records = [*regression_records(5), {"text": "minus", "label": -100}]
    config = tiny_config(tmp_path / "unused.jsonl", problem_type="regression", objective="mse_corr")
    from_jsonl = load_examples(write_jsonl(tmp_path / "d.jsonl", records), config)
    from_csv = load_examples(write_csv(tmp_path / "d.csv", records), config)
    assert [e.label for e in from_jsonl] == [float(r["label"]) for r in records]
    assert [e.label for e in from_csv] == pytest.approx([e.label for e in from_jsonl])
    tokenizer = train_tokenizer("tiny-bert", [r["text"] for r in records], 300, 32)
    encoded = encode(from_jsonl, tokenizer, "sequence_classification", {}, 32)
    assert [row["labels"] for row in encoded.rows] == [e.label for e in from_jsonl]
    assert encoded.unsupervised == 0  # -100.0 is a target here, not the ignored index


@pytest.mark.parametrize(
    ("problem_type", "objective", "line", "message"),
    [
        (
            "multi_label_classification",
            "binary_focal",
            '{"text": "t", "label": 3.5}',
            r"field 'label' must be a list of labels",
        ),
        (
            "multi_label_classification",
            "binary_focal",
            '{"text": "t", "label": ["a", ""]}',
            r"field 'label' has an empty label",
        ),
        (
            "multi_label_classification",
            "binary_focal",
            '{"text": "t", "label": [true]}',
            r"field 'label' must be a list of labels",
        ),
        ("multi_label_classification", "binary_focal", '{"text": "t"}', r"missing field 'label'"),
        (
            "regression",
            "mse_corr",
            '{"text": "t", "label": "high"}',
            r"field 'label' must be a finite number \(regression\), got 'high'",
        ),
        (
            "regression",
            "mse_corr",
            '{"text": "t", "label": true}',
            r"field 'label' must be a finite number .*got True",
        ),
        (
            "regression",
            "mse_corr",
            '{"text": "t", "label": "nan"}',
            r"field 'label' must be a finite number .*got 'nan'",
        ),
        (
            "regression",
            "mse_corr",
            '{"text": "t", "label": [1, 2]}',
            r"field 'label' must be a finite number .*got \[1, 2\]",
        ),
    ],
)
def test_bad_multi_label_and_regression_labels_name_the_file_and_line(
    tmp_path, problem_type, objective, line, message
):
    first = (
        '{"text": "fine", "label": ["a"]}'
        if problem_type == "multi_label_classification"
        else '{"text": "fine", "label": 0.5}'
    )
    data = write(tmp_path / "d.jsonl", f"{first}\n{line}\n")
    config = tiny_config(data, problem_type=problem_type, objective=objective)
    with pytest.raises(ValueError, match=rf"d\.jsonl, line 2: {message}"):
        load_examples(data, config)


def test_multi_label_labels_outside_the_label_set(tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", multi_label_records(8))
    eval_file = write_csv(
        tmp_path / "eval.csv",
        [{"text": "a red cat", "label": ["color", "animal"]}, {"text": "t", "label": ["color", "toy"]}],
        separator="|",
    )
    config = tiny_config(
        train_file,
        eval_file=str(eval_file),
        problem_type="multi_label_classification",
        objective="multilabel_dice",
    )
    message = r"eval\.csv, line 3: label 'toy' is not in the labels of the training data \(animal, color\)"
    with pytest.raises(ValueError, match=message):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    examples = load_examples(train_file, config)
    with pytest.raises(ValueError, match=r"train\.jsonl, line \d+: label 'animal' is not in the label set"):
        check_labels(examples, ("color",), "the label set given by --labels")


# ---- options ----------------------------------------------------------------------------------------------


def test_a_yaml_config_with_a_bad_field_names_it(tmp_path):
    path = write(tmp_path / "train.yaml", "train_file: data.jsonl\nlearning_rat: 0.001\n")
    with pytest.raises(
        ValueError, match=r"unknown field 'learning_rat' in config file .*did you mean 'learning_rate'"
    ):
        config_from_sources(TrainConfig, yaml_path=path)
    path = write(tmp_path / "bad_value.yaml", "train_file: data.jsonl\nepochs: three\n")
    with pytest.raises(ValueError, match=r"invalid value for epochs in config file .*expected an integer"):
        config_from_sources(TrainConfig, yaml_path=path)
    path = write(
        tmp_path / "good.yaml", "train_file: data.jsonl\ntask: causal_lm\nobjective: dece\nepochs: 2\n"
    )
    config = config_from_sources(TrainConfig, yaml_path=path, overrides={"epochs": "5"})
    assert (config.task, config.objective, config.epochs) == ("causal_lm", "dece", 5)  # the flag wins


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({}, r"no default for train_file: .*--train-file"),
        (
            {"train_file": "d.jsonl", "objective": "smile"},
            r"objective 'smile' \(for .*\) does not fit task sequence_classification with problem_type "
            r"single_label_classification: choose one of cross_entropy, dece, gce, focal, dice",
        ),
        (
            {"train_file": "d.jsonl", "objective_options": "gamma: 2"},
            r"objective_options: cross_entropy has no option gamma; "
            r"its options: weight \(default None\), label_smoothing \(default 0.0\)",
        ),
        (
            {"train_file": "d.jsonl", "objective": "focal", "objective_options": "gamma: -1"},
            r"objective_options: gamma must be a finite number >= 0, got -1",
        ),
        (
            {"train_file": "d.jsonl", "objective_options": "[1, 2]"},
            r"invalid value for objective_options .*expected 'key: value, ...', got '\[1, 2\]'",
        ),
        (
            {"train_file": "d.jsonl", "task": "causal_lm", "model": "tiny-bert"},
            r"model tiny-bert cannot do task causal_lm",
        ),
        (
            {"train_file": "d.jsonl", "task": "seq2seq", "target_field": "none"},
            r"target_field is required for seq2seq",
        ),
        (
            {"train_file": "d.jsonl", "adversarial": "awp"},
            r"adversarial \(--adversarial\).*expected one of fgm, pgd; got 'awp', or none",
        ),
        ({"train_file": "d.jsonl", "eval_fraction": "1"}, r"eval_fraction must be in \[0, 1\), got 1"),
        (
            {"train_file": "d.jsonl", "objective": "binary_focal"},
            r"objective 'binary_focal' \(for .*\) does not fit task sequence_classification with "
            r"problem_type single_label_classification: choose one of cross_entropy, dece, gce, focal, dice",
        ),
        (
            {"train_file": "d.jsonl", "problem_type": "multi_label_classification", "objective": "mse_corr"},
            r"objective 'mse_corr' \(for .*\) does not fit .*problem_type multi_label_classification: "
            r"choose one of binary_focal, multilabel_dice",
        ),
        (
            {"train_file": "d.jsonl", "problem_type": "regression"},  # the default objective
            r"objective 'cross_entropy' \(for .*\) does not fit .*problem_type regression: "
            r"choose one of mse_corr",
        ),
        (
            {
                "train_file": "d.jsonl",
                "task": "token_classification",
                "problem_type": "multi_label_classification",
            },
            r"problem_type multi_label_classification is for task sequence_classification, not token_",
        ),
        (
            {"train_file": "d.jsonl", "task": "token_classification", "objective": "binary_focal"},
            r"objective 'binary_focal' \(for .*\) does not fit task token_classification",
        ),
        (
            {
                "train_file": "d.jsonl",
                "problem_type": "regression",
                "objective": "mse_corr",
                "rdrop_weight": "1",
            },
            r"rdrop_weight applies to single-label classification .*not problem_type regression",
        ),
        (
            {"train_file": "d.jsonl", "problem_type": "regression", "objective": "mse_corr", "labels": "a,b"},
            r"labels \['a', 'b'\] are for classification, not problem_type regression",
        ),
        (
            {
                "train_file": "d.jsonl",
                "problem_type": "multi_label_classification",
                "objective": "binary_focal",
                "objective_options": "alpha: [1, 2]",
            },
            r"objective_options: alpha must be a number in \[0, 1\], got \[1, 2\]",
        ),
    ],
)
def test_bad_options_name_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        config_from_sources(TrainConfig, overrides=overrides)


def test_a_model_that_is_neither_a_folder_nor_a_tiny_name(tmp_path):
    data = write_jsonl(tmp_path / "train.jsonl", classification_records(6))
    with pytest.raises(ValueError, match=r"model 'bert-base-uncased' is not a folder, nor one of the tiny"):
        train(tiny_config(data, model="bert-base-uncased"), tmp_path / "run", progress=False)


# ---- metrics ----------------------------------------------------------------------------------------------


def test_macro_f1_by_hand():
    predicted = np.array([0, 0, 1, 1, 2, 0])
    gold = np.array([0, 1, 1, 1, 0, 0])
    # class 0: TP 2, FP 1, FN 1 -> 4/6; class 1: TP 2, FP 0, FN 1 -> 4/5; class 2: TP 0, FP 1 -> 0;
    # class 3 is absent from both and does not count
    assert macro_f1(predicted, gold) == pytest.approx((4 / 6 + 4 / 5 + 0) / 3)
    assert macro_f1(gold, gold) == 1.0


def test_multi_label_metrics_against_a_naive_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(40, 4))
    gold = (rng.random((40, 4)) < 0.4).astype(np.float32)
    gold[:, 3] = 0  # a class never gold: it still counts where it is predicted
    logits[:, 3] = -1.0
    logits[0, 3] = 2.0
    predicted = [[1 / (1 + math.exp(-x)) > 0.5 for x in row] for row in logits.tolist()]
    truth = [[y == 1 for y in row] for row in gold.tolist()]
    cells = [
        (p, t) for prow, trow in zip(predicted, truth, strict=True) for p, t in zip(prow, trow, strict=True)
    ]
    tp, fp, fn = (
        sum(1 for p, t in cells if (p, t) == case) for case in ((True, True), (True, False), (False, True))
    )
    per_class = []
    for c in range(4):
        column = [(prow[c], trow[c]) for prow, trow in zip(predicted, truth, strict=True)]
        ctp, cfp, cfn = (
            sum(1 for p, t in column if (p, t) == case)
            for case in ((True, True), (True, False), (False, True))
        )
        if ctp + cfp + cfn:
            per_class.append(2 * ctp / (2 * ctp + cfp + cfn))
    scores = multi_label_metrics(logits, gold)
    assert scores["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert scores["macro_f1"] == pytest.approx(sum(per_class) / len(per_class)) and len(per_class) == 4
    assert scores["exact_match"] == pytest.approx(
        sum(p == t for p, t in zip(predicted, truth, strict=True)) / 40
    )
    assert multi_label_metrics(np.where(gold > 0, 5.0, -5.0), gold) == {
        "micro_f1": 1.0,
        "macro_f1": 1.0,
        "exact_match": 1.0,
    }
    with pytest.raises(ValueError, match=r"multi-label logits \(40, 4\) and labels \(40, 3\) must be"):
        multi_label_metrics(logits, gold[:, :3])


def test_regression_metrics_against_the_standard_library():
    rng = np.random.default_rng(1)
    predicted, target = rng.normal(size=30), rng.normal(size=30)
    scores = regression_metrics(predicted, target)
    assert scores["mse"] == pytest.approx(
        statistics.fmean((p - t) ** 2 for p, t in zip(predicted, target, strict=True))
    )
    assert scores["pearson"] == pytest.approx(statistics.correlation(predicted.tolist(), target.tolist()))
    assert math.isnan(regression_metrics(np.ones(5), target[:5])["pearson"])  # constant predictions
