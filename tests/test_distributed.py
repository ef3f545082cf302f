"""torch.distributed with 2 real processes (gloo on CPU): tunekit objectives and tricks give the results of
one process over the whole batch.

One torchrun launch (``--standalone``: a free port, RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
MASTER_PORT set by torchrun) runs tests/distributed_worker.py, whose ranks save their results; the tests
compare them here with single-process runs over the same data (BATCH = 8 rows, 4 per rank). Checked:

- plain DistributedDataParallel: each rank scores its half with
  ``objective(logits, target, num_items_in_batch=n) * world_size``, n the number of supervised items
  summed over the ranks with an all_reduce. Each rank's loss is then (its items' summed loss) / n *
  world_size; DDP averages the gradients over the ranks, dividing by world_size, so the gradient is that of
  (the summed loss of all items) / n: exactly the full batch's mean. This is the convention of the Hugging
  Face Trainer's ``average_tokens_across_devices`` (it multiplies the loss by the number of processes).
  For every token objective (DeCE at epoch 3) on a tiny GPT-2 whose halves hold 19 and 25 supervised
  tokens, and focal loss (per-class alpha) on a tiny BERT classifier whose halves hold 3 and 1 labels, the
  gradients equal one process's with ``reduction="mean"``; each rank's local mean instead (a mean of the
  ranks' means) gives other gradients: that is why ``num_items_in_batch`` exists;
- `TunekitTrainer` with ``TrainerLoss`` in 2 processes (the Trainer sets up the process group; per-device
  batch 4 x 2 ranks, and 2 x 2 ranks x 2 accumulated micro-batches) makes the update of one process with
  micro-batches 8 x 1 and 2 x 4; each rank scores the rows the distributed sampler gives it (disjoint
  halves of the 8) with ``num_items_in_batch`` counted over both ranks;
- `tunekit.tricks.EMA` built from the DDP-wrapped model: after 3 DDP steps both ranks hold identical
  averages, those of an EMA of one process trained on the whole batches;
- FSDP2 (``fully_shard`` on each decoder layer and the root of a tiny Llama, untied and tied): one step of
  fused DeCE with half the batch per rank and the global count makes the update of one process on the
  whole batch; the Trainer's fused path under DDP makes the logits path's single-process update;
- `tunekit.tricks.BlockOptimizer` (BAdam) averages the active block's gradients itself: with no DDP, with DDP
  wrapped before it, and with DDP wrapped after it (DDP then never reduces the blocks after the first), both
  ranks make the updates of one process on the whole batch; with that averaging turned off and DDP wrapped
  after, they drift apart (the `badam` package's behaviour).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distributed_worker import (
    BADAM_RUNS,
    EMA_DECAY,
    EMA_LR,
    EMA_SEEDS,
    FOCAL_OPTIONS,
    FSDP_SEED,
    TOKEN_SEED,
    TRAINER_RUNS,
    TRAINER_SEED,
    WORLD_SIZE,
    badam_run,
    classification_batch,
    fused_dece_step,
    gpt2_logits,
    grads,
    half,
    lm_rows,
    run_key,
    shifted,
    tiny_bert,
    tiny_gpt2,
    tiny_llama,
    token_batch,
    token_objective,
    trainer_update,
    weights,
)
from tiny_lm import IGNORE
from tunekit.losses import cross_entropy, focal_loss
from tunekit.losses.registry import TOKEN_LOSSES
from tunekit.tricks import EMA

WORKER = Path(__file__).with_name("distributed_worker.py")
RTOL = 1e-5


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    """The results of the 2 ranks of one torchrun launch of the worker."""
    out_dir = tmp_path_factory.mktemp("distributed")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # torchrun sets RANK, WORLD_SIZE, MASTER_PORT, ...
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={WORLD_SIZE}",
        str(WORKER),
        str(out_dir),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-8000:]}"
    return [torch.load(out_dir / f"rank{rank}.pt", weights_only=True) for rank in range(WORLD_SIZE)]


def assert_tensors_close(actual: dict, expected: dict) -> None:
    """Every tensor within RTOL, with an absolute tolerance of RTOL times the tensor's largest value (its
    near-zero entries carry the rounding of the larger ones they are sums of)."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        atol = RTOL * max(float(value.abs().max()), 1e-6)
        torch.testing.assert_close(actual[name], value, rtol=RTOL, atol=atol, msg=name)


def max_relative_difference(actual: dict, expected: dict) -> float:
    """max |actual - expected| over all tensors, relative to the largest |expected|."""
    difference = max(float((actual[name] - value).abs().max()) for name, value in expected.items())
    return difference / max(float(value.abs().max()) for value in expected.values())


def assert_ranks_equal(first: dict, second: dict) -> None:
    """DDP keeps the replicas identical: the ranks' tensors agree bit for bit."""
    assert first.keys() == second.keys()
    for name, value in first.items():
        assert torch.equal(second[name], value), name


def check_ddp_gradients(ranks: list[dict], key: str, reference_loss: torch.Tensor, reference: dict) -> None:
    """The ranks' DDP gradients with the global count are identical and those of one process over the whole
    batch (`reference`), their mean loss is its loss; with local means they are not."""
    global_count, local_mean = ranks[0][key]["global"], ranks[0][key]["local"]
    for rank in ranks[1:]:
        assert_ranks_equal(rank[key]["global"]["grads"], global_count["grads"])
    torch.testing.assert_close(global_count["loss"], reference_loss.detach(), rtol=RTOL, atol=0.0)
    assert_tensors_close(global_count["grads"], reference)
    # a mean of the ranks' means weighs the items of the smaller half more: other gradients
    assert max_relative_difference(local_mean["grads"], reference) > 100 * RTOL


# ---- plain DDP ----


@pytest.mark.parametrize("objective", sorted(TOKEN_LOSSES))
def test_ddp_gradients_with_the_global_token_count_are_those_of_the_whole_batch(ranks, objective):
    batch = token_batch(TOKEN_SEED)
    counts = [int((shifted(half(batch, rank)["labels"]) != IGNORE).sum()) for rank in range(WORLD_SIZE)]
    assert counts[0] != counts[1]  # else the mean of the halves' means would be the global mean
    model = tiny_gpt2()
    loss = token_objective(objective)(gpt2_logits(model, batch), shifted(batch["labels"]))
    loss.backward()
    check_ddp_gradients([rank["token"] for rank in ranks], objective, loss, grads(model))


def test_ddp_gradients_of_focal_loss_with_the_global_label_count_are_those_of_the_whole_batch(ranks):
    batch = classification_batch()
    counts = [int((half(batch, rank)["labels"] != IGNORE).sum()) for rank in range(WORLD_SIZE)]
    assert counts[0] != counts[1]
    model = tiny_bert()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = focal_loss(logits, batch["labels"], **FOCAL_OPTIONS)
    loss.backward()
    check_ddp_gradients(ranks, "focal", loss, grads(model))


# ---- the Trainer ----


@pytest.fixture(scope="module")
def single_process_updates(tmp_path_factory):
    """objective -> {"8x1": ..., "2x4": ...}: one process's Trainer update with those micro-batches."""
    cache = {}

    def get(objective: str) -> dict:
        if objective not in cache:
            out_dir = tmp_path_factory.mktemp(objective)
            cache[objective] = {
                f"{size}x{steps}": trainer_update(out_dir, objective, batch_size=size, accumulation=steps)
                for size, steps in ((8, 1), (2, 4))
            }
        return cache[objective]

    return get


@pytest.mark.parametrize(
    "objective, batch_size, accumulation, fused", TRAINER_RUNS, ids=[run_key(*run) for run in TRAINER_RUNS]
)
def test_the_trainer_in_two_processes_makes_the_update_of_one(
    ranks, single_process_updates, objective, batch_size, accumulation, fused
):
    runs = [rank["trainer"][run_key(objective, batch_size, accumulation, fused)] for rank in ranks]
    rows = lm_rows(TRAINER_SEED)
    total = sum(int((row["labels"][1:] != IGNORE).sum()) for row in rows)
    # each rank scored its own micro-batches, with the count of supervised tokens over both ranks
    seen_rows = []
    for run in runs:
        assert [len(micro["input_ids"]) for micro in run["seen"]] == [batch_size] * accumulation
        assert [micro["num_items_in_batch"] for micro in run["seen"]] == [total] * accumulation
        seen_rows += [tuple(ids.tolist()) for micro in run["seen"] for ids in micro["input_ids"]]
    assert sorted(seen_rows) == sorted(tuple(row["input_ids"].tolist()) for row in rows)  # each row once
    assert ranks[0]["backend"] == "gloo"

    assert_ranks_equal(runs[1]["weights"], runs[0]["weights"])
    initial = weights(tiny_gpt2())
    assert max_relative_difference(runs[0]["weights"], initial) > 1e-3  # the step moved the weights
    for micro_batches, single in single_process_updates(objective).items():
        counts = [micro["num_items_in_batch"] for micro in single["seen"]]
        assert counts == [total] * int(micro_batches.split("x")[1]), micro_batches
        assert_tensors_close(runs[0]["weights"], single["weights"])


# ---- EMA ----


def test_ema_under_ddp_holds_the_averages_of_one_process_on_both_ranks(ranks):
    model = tiny_gpt2()
    optimizer = torch.optim.SGD(model.parameters(), lr=EMA_LR)
    ema = EMA(model, EMA_DECAY)
    for seed in EMA_SEEDS:
        batch = token_batch(seed)
        loss = cross_entropy(gpt2_logits(model, batch), shifted(batch["labels"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(model)
    first, second = ranks[0]["ema"], ranks[1]["ema"]
    assert first["num_updates"] == second["num_updates"] == len(EMA_SEEDS)
    assert_ranks_equal(second["averages"], first["averages"])
    assert_tensors_close(first["weights"], weights(model))
    assert_tensors_close(first["averages"], ema.averages)
    assert max_relative_difference(first["averages"], first["weights"]) > 1e-3  # the averages lag


# ---- FSDP2 ----


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_fsdp2_fused_dece_makes_the_update_of_one_process(ranks, tied):
    model = tiny_llama(tied)
    initial = weights(model)
    fused_dece_step(model, token_batch(FSDP_SEED))
    expected = weights(model)
    key = "tied" if tied else "untied"
    runs = [rank["fsdp2"][key] for rank in ranks]
    assert_ranks_equal(runs[1], runs[0])
    assert runs[0].keys() == expected.keys()
    assert_tensors_close(runs[0], expected)
    assert max_relative_difference(runs[0], initial) > 1e-3  # the step moved the weights


# ---- BAdam ----


def test_block_optimizer_under_ddp_makes_the_updates_of_one_process(ranks):
    reference = badam_run("one process")
    for how in BADAM_RUNS:
        first, second = ranks[0]["badam"][how], ranks[1]["badam"][how]
        if how == "ddp_after_not_averaged":  # the blocks after the first: each rank steps on its own half
            assert max_relative_difference(second, first) > 1e-3
            continue
        assert_ranks_equal(second, first)
        # Adam divides by the root of the squared gradients: the rounding of two half-batch sums against one
        # whole-batch sum grows on entries with tiny gradients, so the bound is on the whole model (4.7e-7)
        assert max_relative_difference(first, reference) < 1e-5
        assert max_relative_difference(first, weights(tiny_gpt2())) > 1e-3  # it trained
