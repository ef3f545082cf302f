"""BAdam in the real Hugging Face Trainer (`TrainerTricks(badam=True)`): with DeCE, layer decay and EMA, a
run resumed from a mid-block checkpoint ends bit-identical to an uninterrupted one; refusals."""

from __future__ import annotations

import pytest
import torch

from tiny_lm import UNEVEN_LENGTH, UNEVEN_VOCAB, make_gpt2, rows_of, trainer_args, uneven_prompted_batch
from tunekit.hf.loss_func import TrainerLoss
from tunekit.hf.trainer import TrainerTricks, TunekitTrainer
from tunekit.tricks import BlockOptimizer

TRICKS = TrainerTricks(badam=True, switch_every=2, block_order="random", layer_decay=0.8, ema_decay=0.9)


def trainer(output_dir, tricks=TRICKS, **overrides) -> TunekitTrainer:
    """6 AdamW steps (batches of 8) with a linear schedule and clipping, DeCE, the tricks, a tiny GPT-2."""
    options = dict(
        optim="adamw_torch",
        learning_rate=1e-2,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        weight_decay=0.1,
        save_strategy="steps",
        save_steps=3,
    )
    return TunekitTrainer(
        model=make_gpt2(vocab=UNEVEN_VOCAB, positions=UNEVEN_LENGTH, dropout=0.0, seed=0),
        args=trainer_args(output_dir, **{**options, **overrides}),
        train_dataset=rows_of(uneven_prompted_batch(5, 48)),
        compute_loss_func=TrainerLoss("dece", task="causal_lm"),
        tricks=tricks,
    )


def test_badam_with_layer_decay_ema_and_dece_resumes_mid_block_exactly(tmp_path):
    full = trainer(tmp_path / "full")
    initial = {n: p.detach().clone() for n, p in full.model.named_parameters()}
    full.train()
    optimizer = full.optimizer.optimizer  # inside accelerate's wrapper
    assert isinstance(optimizer, BlockOptimizer)
    assert len({group["initial_lr"] for group in optimizer.param_groups}) > 1  # layer decay's groups
    # 6 steps of 2 per block over GPT-2's 2 layers: every layer trained, the embeddings and head frozen
    for name, param in full.model.named_parameters():
        changed = not torch.equal(param, initial[name])
        assert changed == name.startswith("transformer.h."), name
    saved = torch.load(tmp_path / "full" / "checkpoint-3" / "optimizer.pt", weights_only=True)
    assert saved["block_schedule"]["steps_in_block"] == 1  # the checkpoint is mid-block

    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    for name, param in full.model.named_parameters():
        assert torch.equal(dict(resumed.model.named_parameters())[name], param), name
    for name, average in full.ema.averages.items():
        assert torch.equal(resumed.ema.averages[name], average), name


def test_fgm_needs_the_embeddings_trained_at_every_step(tmp_path):
    with pytest.raises(ValueError, match="outside_layers='trainable'"):
        TrainerTricks(badam=True, adversarial="fgm")
    tricks = TrainerTricks(badam=True, switch_every=1, adversarial="fgm", outside_layers="trainable")
    run = trainer(tmp_path, tricks, save_strategy="no", max_steps=2)
    embedding = run.model.transformer.wte.weight.detach().clone()
    run.train()
    assert not torch.equal(run.model.transformer.wte.weight, embedding)


def test_a_second_train_keeps_one_block_optimizer(tmp_path):
    """train() again on the same trainer finds its BlockOptimizer inside accelerate's wrapper (it once
    wrapped it a second time, and accelerate's state round trip then failed)."""
    run = trainer(tmp_path, save_strategy="no", max_steps=2)
    run.train()
    first = run.optimizer.optimizer
    run.train()
    assert run.optimizer.optimizer is first and isinstance(first.base_optimizer, torch.optim.AdamW)


def test_badam_options_are_checked():
    for options, match in [
        ({"switch_every": 0}, "switch_every"),
        ({"block_order": "up"}, "block_order"),
        ({"outside_layers": "none"}, "outside_layers"),
        ({"badam": 1}, "badam must be True or False"),
    ]:
        with pytest.raises(ValueError, match=match):
            TrainerTricks(**options)
