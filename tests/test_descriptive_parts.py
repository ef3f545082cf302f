"""The descriptive experiment's parts: the MLE + SMILE mixture against the naive references (loss and
gradient), and the metrics (distinct-n, word pieces, TF-IDF self-retrieval) on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_logits, make_prompted_labels
from reference import ref_cross_entropy, ref_smile_loss
from tunekit.experiments.descriptive.arms import ARM_OBJECTIVES, objective_name
from tunekit.experiments.descriptive.experiment import DescriptiveConfig
from tunekit.experiments.descriptive.metrics import distinct_n, self_retrieval_r1, terms
from tunekit.experiments.descriptive.objective import MLESMILEMixture
from tunekit.experiments.descriptive.report import code_span
from tunekit.hf import TrainerLoss


@pytest.mark.parametrize("weight", [0.0, 0.01, 0.5, 1.0])
@pytest.mark.parametrize("num_items", [None, 40])
def test_the_mixture_is_the_weighted_sum_of_the_references(weight, num_items):
    logits = make_logits((3, 7), 11, dtype=torch.float64)
    labels = make_prompted_labels(3, 7, 11)
    loss = MLESMILEMixture(mle_weight=weight, subset="sequence")(logits, labels, num_items_in_batch=num_items)
    (grad,) = torch.autograd.grad(loss, logits)
    reference_logits = logits.detach().clone().requires_grad_(True)
    expected = weight * ref_cross_entropy(reference_logits, labels, num_items_in_batch=num_items) + (
        1 - weight
    ) * ref_smile_loss(reference_logits, labels, num_items_in_batch=num_items)
    (expected_grad,) = torch.autograd.grad(expected, reference_logits)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)


def test_the_mixture_passes_smile_options_on():
    logits = make_logits((2, 6), 9, dtype=torch.float64, requires_grad=False)
    labels = make_prompted_labels(2, 6, 9)
    loss = MLESMILEMixture(mle_weight=0.0, first_token_mle=False)(logits, labels)
    torch.testing.assert_close(loss, ref_smile_loss(logits, labels, first_token_mle=False))


@pytest.mark.parametrize("weight", [-0.1, 1.5, "0.01", True])
def test_a_bad_mixture_weight_is_named(weight):
    with pytest.raises(ValueError, match=r"mle_weight must be a number in \[0, 1\], got"):
        MLESMILEMixture(mle_weight=weight)


def test_every_arm_builds_a_trainer_loss():
    config = DescriptiveConfig()
    names = {}
    for arm, build in ARM_OBJECTIVES.items():
        objective, options = build(config)
        TrainerLoss(objective, task="causal_lm", **options)
        names[arm] = objective_name(objective, options)
    assert names["smile_random"] == "smile(subset='random', num_random=10)"
    assert names["smile_no_first_mle"] == "smile(subset='sequence', first_token_mle=False)"
    assert names["mle+smile"].startswith("MLESMILEMixture(mle_weight=0.01")


def test_distinct_n_counts_pooled_word_ngrams():
    texts = ["The cat sat", "the cat ran", ""]
    # unigrams: the, cat, sat, the, cat, ran: 4 distinct of 6; bigrams: (the cat) twice, (cat sat), (cat ran)
    assert distinct_n(texts, 1) == pytest.approx(4 / 6)
    assert distinct_n(texts, 2) == pytest.approx(3 / 4)
    assert distinct_n(["one"], 2) == 0.0
    with pytest.raises(ValueError, match="n must be a positive integer, got 0"):
        distinct_n(texts, 0)


def test_terms_split_identifiers():
    assert terms("def readLine(self, n_bytes=2): return HTTPServer.x") == [
        "def",
        "read",
        "line",
        "self",
        "bytes",
        "return",
        "http",
        "server",
    ]


def test_self_retrieval_ranks_sources_by_tfidf_cosine():
    sources = ["def read_file(path): return open(path).read()", "def write_file(path, data): pass"]
    # "read" occurs only in source 0 and "write" only in source 1: each output finds its own source
    assert self_retrieval_r1(["Read a file.", "Write data to a file."], sources) == 1.0
    # swapped, both miss; "file" and "path" alone are in both sources: a tie, which counts as a miss
    assert self_retrieval_r1(["Write it.", "Read it."], sources) == 0.0
    assert self_retrieval_r1(["A file.", ""], sources) == 0.0


def test_self_retrieval_matches_a_hand_computed_score():
    sources = ["alpha beta", "alpha alpha gamma"]
    idf = {t: math.log(3 / (1 + df)) + 1 for t, df in {"alpha": 2, "beta": 1, "gamma": 1}.items()}
    source_1 = [2 * idf["alpha"], idf["gamma"]]
    # the output "alpha" is the unit vector on alpha: its cosine with each source is that source's alpha share
    score_0 = idf["alpha"] / math.hypot(idf["alpha"], idf["beta"])
    score_1 = source_1[0] / math.hypot(*source_1)
    assert score_1 > score_0  # so "alpha" retrieves source 1, not its own source 0
    assert self_retrieval_r1(["alpha", "gamma"], sources) == 0.5


def test_outputs_and_sources_must_pair_up():
    with pytest.raises(ValueError, match="need one output per source, got 1 outputs and 2 sources"):
        self_retrieval_r1(["a"], ["b", "c"])


def test_sample_outputs_are_one_line_of_markdown_code():
    assert code_span("Return the\n  value.") == "`Return the value.`"
    assert code_span("x``y`") == "``` x``y` ```"  # fenced by more backticks than any run inside
    assert code_span("  ") == "(empty)"
