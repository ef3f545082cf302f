"""The worker of tests/test_distributed.py: every check that needs 2 real processes, in one launch.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_worker.py OUT_DIR

Each rank writes ``OUT_DIR/rank{r}.pt``: a dict of plain tensors that the test compares, in the parent
process, with single-process runs over the whole batch. The data, the models and the Trainer set-up live
here and the test imports them, so that both sides build exactly the same ones. In order:

1. "trainer": `TunekitTrainer` with `TrainerLoss` under DDP; it runs first, so the Trainer (through
   accelerate) sets up the gloo process group from torchrun's environment, as in a user's script;
2. "token" / "focal": a tiny GPT-2 / BERT classifier wrapped in DistributedDataParallel, each rank with its
   half of the batch, the gradients after backward;
3. "ema": `tunekit.tricks.EMA` of a DDP-wrapped GPT-2 after a few SGD steps;
4. "fsdp2": a tiny Llama (untied and tied) with FSDP2's ``fully_shard`` on each decoder layer and the root,
   one SGD step of fused DeCE (`TrainerLoss.compute`, the output layer's weight gathered by FSDP2) on each
   rank's half of the batch, then the full parameters;
5. "badam": `tunekit.tricks.BlockOptimizer` over a tiny GPT-2 for BADAM_SEEDS steps (its 2 layers, then
   the first again), without DDP, under DDP wrapped before it and after it (DDP then registers only the
   first block), and after it with the optimizer's own averaging turned off (the pitfall: the ranks drift).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import transformers
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tiny_lm import (
    IGNORE,
    UNEVEN_LENGTH,
    UNEVEN_VOCAB,
    make_gpt2,
    make_llama,
    rows_of,
    trainer_args,
    uneven_prompted_batch,
)
from tiny_models import bert_config
from tunekit.hf.loss_func import TrainerLoss
from tunekit.hf.trainer import TunekitTrainer
from tunekit.losses import cross_entropy, focal_loss
from tunekit.losses.registry import TOKEN_LOSSES
from tunekit.tricks import EMA, BlockOptimizer

WORLD_SIZE = 2
BATCH = 8  # the global batch; each rank takes BATCH // WORLD_SIZE rows
VOCAB, LENGTH = UNEVEN_VOCAB, UNEVEN_LENGTH
TOKEN_SEED = 5  # the supervised-token counts of its halves differ (checked by the test)
EXTRA_ARGS = {"dece": (3,)}  # DeCE at epoch 3, where its smoothing differs from epoch 1's
CLASSES = 3
FOCAL_OPTIONS = {"gamma": 2.0, "alpha": [0.25, 0.5, 1.0]}
EMA_DECAY, EMA_LR, EMA_SEEDS = 0.8, 0.5, (20, 21, 22)  # one SGD step per seed
TRAINER_SEED = 1
# (objective, per-device batch, accumulation steps, fused) of the Trainer runs in 2 processes: 4 x 2 ranks,
# and 2 x 2 ranks x 2 accumulated micro-batches
TRAINER_RUNS = (
    ("cross_entropy", 4, 1, False),
    ("dece", 4, 1, False),
    ("dece", 2, 2, False),
    ("dece", 2, 2, True),
)
FSDP_SEED, FSDP_LR = 7, 0.5
BADAM_SEEDS, BADAM_SWITCH, BADAM_LR = (30, 31, 32, 33, 34), 2, 1e-2
BADAM_RUNS = ("unwrapped", "ddp_before", "ddp_after", "ddp_after_not_averaged")


# ---- data and models, shared with the test ----


def token_batch(seed: int) -> dict[str, Tensor]:
    """BATCH prompted sequences whose numbers of supervised tokens differ."""
    return uneven_prompted_batch(seed, BATCH)


def lm_rows(seed: int) -> list[dict[str, Tensor]]:
    """`token_batch` as Trainer dataset rows."""
    return rows_of(token_batch(seed))


def classification_batch() -> dict[str, Tensor]:
    """BATCH random sequences with class labels, 1 ignored (-100) in the first half and 3 in the second: the
    halves hold 3 and 1 labels, so their local means weigh the items unlike the global mean."""
    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(1, VOCAB, (BATCH, 9), generator=gen)
    labels = torch.randint(CLASSES, (BATCH,), generator=gen)
    labels[[1, 4, 5, 6]] = IGNORE
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels}


def half(batch: dict[str, Tensor], rank: int) -> dict[str, Tensor]:
    """The rows of `rank`: a contiguous half of the batch."""
    size = BATCH // WORLD_SIZE
    return {key: value[rank * size : (rank + 1) * size] for key, value in batch.items()}


def shifted(labels: Tensor) -> Tensor:
    """(B, N) labels aligned with a causal LM's logits: position i is scored against label i + 1."""
    return F.pad(labels, (0, 1), value=IGNORE)[:, 1:]


def tiny_gpt2() -> transformers.GPT2LMHeadModel:
    return make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0)


def tiny_bert() -> transformers.BertForSequenceClassification:
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(bert_config(VOCAB, num_labels=CLASSES)).train()


def token_objective(name: str) -> Callable[..., Tensor]:
    """``objective(logits, target, **kwargs)`` of a registered token objective, with its extra arguments."""
    spec = TOKEN_LOSSES[name]
    extra = EXTRA_ARGS.get(name, spec.extra_args)
    return lambda logits, target, **kwargs: spec.function(logits, target, *extra, **kwargs)


def gpt2_logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def grads(model: nn.Module) -> dict[str, Tensor]:
    return {name: param.grad.detach().clone() for name, param in model.named_parameters()}


def weights(model: nn.Module) -> dict[str, Tensor]:
    return {name: param.detach().clone() for name, param in model.named_parameters()}


class RecordingTrainer(TunekitTrainer):
    """`TunekitTrainer` that records the rows and ``num_items_in_batch`` of every micro-batch it scores."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[dict[str, Any]] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.seen.append(
            {
                "input_ids": inputs["input_ids"].detach().clone(),
                "num_items_in_batch": None if num_items_in_batch is None else int(num_items_in_batch),
            }
        )
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def trainer_update(
    output_dir: Path,
    objective: str,
    *,
    batch_size: int,
    accumulation: int,
    fused: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """One SGD step (lr 0.5, no clipping) of `RecordingTrainer` over the BATCH rows of `lm_rows`: the
    GPT-2's parameters after it and what `RecordingTrainer.seen` saw (in this process)."""
    model = tiny_gpt2()
    trainer = RecordingTrainer(
        model=model,
        args=trainer_args(
            output_dir,
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
            **overrides,
        ),
        train_dataset=lm_rows(TRAINER_SEED),
        compute_loss_func=TrainerLoss(objective, task="causal_lm", fused=fused),
    )
    trainer.train()
    return {"weights": weights(model), "seen": trainer.seen}


def run_key(objective: str, batch_size: int, accumulation: int, fused: bool = False) -> str:
    return f"{objective} {batch_size}x{accumulation}" + (" fused" if fused else "")


def tiny_llama(tied: bool) -> transformers.LlamaForCausalLM:
    return make_llama(vocab=VOCAB, seed=0, tied=tied)


def fused_dece_step(
    model: nn.Module, batch: dict[str, Tensor], num_items_in_batch: Tensor | None = None
) -> None:
    """One SGD step (lr FSDP_LR) of fused DeCE at epoch 2; `num_items_in_batch` counted over all ranks."""
    loss_func = TrainerLoss("dece", task="causal_lm", fused=True)
    loss_func.set_epoch(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=FSDP_LR)
    loss = loss_func.compute(model, batch, num_items_in_batch).loss
    if num_items_in_batch is not None:  # FSDP2 averages the gradients over the ranks: the factor undoes it
        loss = loss * dist.get_world_size()
    loss.backward()
    optimizer.step()


# ---- the checks of each rank ----


def global_count(target: Tensor) -> Tensor:
    """The number of supervised items over all ranks."""
    count = (target != IGNORE).sum()
    dist.all_reduce(count)
    return count


def ddp_gradients(
    ddp: DistributedDataParallel,
    logits_of: Callable[[], Tensor],
    target: Tensor,
    objective: Callable[..., Tensor],
) -> dict[str, dict[str, Any]]:
    """The gradients DDP leaves after backward, with the global count ("global") and with each rank's local
    mean ("local"), and the loss averaged over the ranks."""
    world = dist.get_world_size()
    items = global_count(target)
    out = {}
    for mode in ("global", "local"):
        ddp.zero_grad(set_to_none=True)
        if mode == "global":  # DDP divides the summed gradients by world: the factor undoes it
            loss = objective(logits_of(), target, num_items_in_batch=items) * world
        else:
            loss = objective(logits_of(), target)
        loss.backward()
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        out[mode] = {"loss": mean_loss / world, "grads": grads(ddp.module)}
    return out


def token_checks(rank: int) -> dict[str, Any]:
    batch = half(token_batch(TOKEN_SEED), rank)
    ddp = DistributedDataParallel(tiny_gpt2())
    return {
        name: ddp_gradients(
            ddp, lambda: gpt2_logits(ddp, batch), shifted(batch["labels"]), token_objective(name)
        )
        for name in TOKEN_LOSSES
    }


def focal_checks(rank: int) -> dict[str, Any]:
    batch = half(classification_batch(), rank)
    ddp = DistributedDataParallel(tiny_bert())

    def logits_of() -> Tensor:
        return ddp(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    def objective(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
        return focal_loss(logits, target, **FOCAL_OPTIONS, **kwargs)

    return ddp_gradients(ddp, logits_of, batch["labels"], objective)


def ema_checks(rank: int) -> dict[str, Any]:
    ddp = DistributedDataParallel(tiny_gpt2())
    optimizer = torch.optim.SGD(ddp.parameters(), lr=EMA_LR)
    ema = EMA(ddp, EMA_DECAY)  # built from the wrapper: the names carry no "module." prefix
    for seed in EMA_SEEDS:
        batch = half(token_batch(seed), rank)
        target = shifted(batch["labels"])
        loss = cross_entropy(gpt2_logits(ddp, batch), target, num_items_in_batch=global_count(target))
        optimizer.zero_grad(set_to_none=True)
        (loss * dist.get_world_size()).backward()
        optimizer.step()
        ema.update(ddp)
    return {
        "averages": {name: value.clone() for name, value in ema.averages.items()},
        "num_updates": ema.num_updates,
        "weights": weights(ddp.module),
    }


def fsdp2_checks(rank: int) -> dict[str, Any]:
    from torch.distributed.fsdp import fully_shard

    out = {}
    for tied in (False, True):
        model = tiny_llama(tied)
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        batch = half(token_batch(FSDP_SEED), rank)
        fused_dece_step(model, batch, global_count(shifted(batch["labels"])))
        out["tied" if tied else "untied"] = {
            name: param.full_tensor().detach().clone() for name, param in model.named_parameters()
        }
    return out


def badam_run(how: str, rank: int | None = None) -> dict[str, Tensor]:
    """The weights after BADAM_SEEDS steps of BlockOptimizer (AdamW, ascending blocks), on `rank`'s half of
    each batch with the global count, or on the whole batch in one process (``rank`` None)."""
    model = tiny_gpt2()
    forward = DistributedDataParallel(model, find_unused_parameters=True) if how == "ddp_before" else model
    # eps well above the attention key bias's gradient, which is ~0 (softmax ignores a shift of the keys):
    # Adam would blow the rounding of the two sums of halves up to a full step
    base = torch.optim.AdamW(model.parameters(), lr=BADAM_LR, eps=1e-4)
    optimizer = BlockOptimizer(forward, base, switch_every=BADAM_SWITCH, order="ascending")
    if how.startswith("ddp_after"):  # the Hugging Face Trainer's order: the optimizer, then DDP
        forward = DistributedDataParallel(model, find_unused_parameters=True)
    if how == "ddp_after_not_averaged":
        optimizer.average_gradients = lambda: None
    for seed in BADAM_SEEDS:
        batch = token_batch(seed) if rank is None else half(token_batch(seed), rank)
        target = shifted(batch["labels"])
        if rank is None:
            cross_entropy(gpt2_logits(forward, batch), target).backward()
        else:
            loss = cross_entropy(gpt2_logits(forward, batch), target, num_items_in_batch=global_count(target))
            (loss * dist.get_world_size()).backward()
        optimizer.step()
        optimizer.zero_grad()
    return weights(model)


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    results: dict[str, Any] = {"trainer": {}}
    for objective, batch_size, accumulation, fused in TRAINER_RUNS:
        results["trainer"][run_key(objective, batch_size, accumulation, fused)] = trainer_update(
            out_dir / "trainer",
            objective,
            batch_size=batch_size,
            accumulation=accumulation,
            fused=fused,
            ddp_backend="gloo",
            average_tokens_across_devices=True,
        )
    if not dist.is_initialized() or dist.get_world_size() != WORLD_SIZE:
        raise RuntimeError(f"the Trainer did not set up a process group of {WORLD_SIZE} processes")
    results["backend"] = dist.get_backend()
    results["token"] = token_checks(rank)
    results["focal"] = focal_checks(rank)
    results["ema"] = ema_checks(rank)
    results["fsdp2"] = fsdp2_checks(rank)
    results["badam"] = {how: badam_run(how, rank) for how in BADAM_RUNS}
    torch.save(results, out_dir / f"rank{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
