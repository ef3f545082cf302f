"""The fused training path, ``TrainerLoss(..., fused=True)``: the model's output layer never produces the
(tokens x vocabulary) logits, and training is what the logits path gives.

Tiny models from configs with random weights (Llama untied and tied, Qwen2, GPT-2, T5 tied and untied), the
real `TunekitTrainer` / `TunekitSeq2SeqTrainer` and real PEFT. Checked:

- for every token objective, one SGD step through the Trainer gives the loss and the parameter update of
  the logits path (rtol 1e-5), in one batch and in accumulated micro-batches;
- a forward hook on the output layer sees (B, 0, V) outputs in fused steps (one position per row in the
  first, the probe that checks the model returns the layer's output as its logits);
- LoRA on the attention / MLP, with ``modules_to_save=["lm_head"]`` and with tied embeddings: the same
  update as the logits path; only the adapters (and the saved copy) move;
- every case the fused path cannot reproduce raises a ValueError that says so.
"""

from __future__ import annotations

import peft
import pytest
import torch
import transformers
from torch import nn

from tiny_lm import (
    UNEVEN_LENGTH,
    UNEVEN_VOCAB,
    make_gpt2,
    make_llama,
    make_t5,
    rows_of,
    seq2seq_rows,
    trainer_update,
    uneven_prompted_batch,
)
from tiny_models import tiny_config
from tunekit.hf import TrainerLoss, TunekitSeq2SeqTrainer, TunekitTrainer
from tunekit.hf.output_layer import OutputLayerCapture

VOCAB, LENGTH = UNEVEN_VOCAB, UNEVEN_LENGTH
RTOL = 1e-5

# name -> (registered objective, options)
OBJECTIVES = {
    "cross_entropy": ("cross_entropy", {}),
    "label_smoothing": ("cross_entropy", {"label_smoothing": 0.1}),
    "dece": ("dece", {"alpha_base": 0.9}),
    "gce": ("gce", {}),
    "smile": ("smile", {}),
}


def make_qwen2(seed: int) -> transformers.Qwen2ForCausalLM:
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(
        tiny_config(transformers.Qwen2Config, VOCAB, num_key_value_heads=1, tie_word_embeddings=False)
    ).train()


CAUSAL_MODELS = {
    "llama": lambda: make_llama(vocab=VOCAB, seed=0),
    "llama_tied": lambda: make_llama(vocab=VOCAB, seed=0, tied=True),
    "qwen2": lambda: make_qwen2(0),
    "gpt2": lambda: make_gpt2(vocab=VOCAB, positions=LENGTH, dropout=0.0, seed=0),
}


def loss_func(objective: str, fused: bool, task: str = "causal_lm") -> TrainerLoss:
    name, options = OBJECTIVES[objective]
    return TrainerLoss(name, task=task, fused=fused, **options)


def lm_rows(seed: int = 1, count: int = 8) -> list[dict[str, torch.Tensor]]:
    return rows_of(uneven_prompted_batch(seed, count))


def assert_same_update(actual, expected) -> None:
    (weights, loss), (expected_weights, expected_loss) = actual, expected
    assert loss == pytest.approx(expected_loss, rel=RTOL)
    assert weights.keys() == expected_weights.keys()
    for name, value in expected_weights.items():
        torch.testing.assert_close(weights[name], value, rtol=RTOL, atol=RTOL * 1e-1, msg=name)


# ---- the same training as the logits path ----


@pytest.mark.parametrize("model", sorted(CAUSAL_MODELS))
@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_fused_step_makes_the_update_of_the_logits_path(tmp_path, objective, model):
    rows = lm_rows()
    updates = [
        trainer_update(
            tmp_path / str(fused), CAUSAL_MODELS[model](), rows, compute_loss_func=loss_func(objective, fused)
        )
        for fused in (False, True)
    ]
    assert_same_update(updates[1], updates[0])


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_fused_accumulated_micro_batches_make_the_update_of_one_batch(tmp_path, objective):
    rows = lm_rows()
    whole = trainer_update(
        tmp_path / "8x1", make_llama(vocab=VOCAB, seed=0), rows, compute_loss_func=loss_func(objective, False)
    )
    for batch_size, accumulation in [(2, 4), (3, 3)]:
        split = trainer_update(
            tmp_path / f"{batch_size}x{accumulation}",
            make_llama(vocab=VOCAB, seed=0),
            rows,
            batch_size=batch_size,
            accumulation=accumulation,
            compute_loss_func=loss_func(objective, True),
        )
        assert_same_update((split[0], whole[1]), whole)  # the logged loss is per micro-batch


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("objective", ["dece", "smile"])
def test_fused_seq2seq_step_makes_the_update_of_the_logits_path(tmp_path, objective, tied):
    rows = seq2seq_rows(5, 8, vocab=VOCAB)
    updates = [
        trainer_update(
            tmp_path / str(fused),
            make_t5(vocab=VOCAB, seed=0, tied=tied),
            rows,
            trainer_class=TunekitSeq2SeqTrainer,
            compute_loss_func=loss_func(objective, fused, task="seq2seq"),
        )
        for fused in (False, True)
    ]
    assert_same_update(updates[1], updates[0])


class OutputShapes:
    """A forward hook that records the shapes of a module's outputs."""

    def __init__(self, module: nn.Module) -> None:
        self.shapes: list[tuple[int, ...]] = []
        module.register_forward_hook(lambda module, args, output: self.shapes.append(tuple(output.shape)))


def test_fused_steps_never_produce_the_logits(tmp_path):
    model = make_llama(vocab=VOCAB, seed=0)
    shapes = OutputShapes(model.lm_head)
    trainer = TunekitTrainer(
        model=model,
        args=transformers.TrainingArguments(
            str(tmp_path),
            per_device_train_batch_size=4,
            max_steps=3,
            use_cpu=True,
            report_to=[],
            save_strategy="no",
        ),
        train_dataset=lm_rows(count=12),
        compute_loss_func=loss_func("dece", True),
    )
    trainer.train()
    # the first step is the probe (one position per row), then no position at all
    assert shapes.shapes == [(4, 1, VOCAB), (4, 0, VOCAB), (4, 0, VOCAB)]


def test_evaluation_that_needs_predictions_takes_the_logits(tmp_path):
    model = make_llama(vocab=VOCAB, seed=0)
    rows = lm_rows(count=4)
    shapes = OutputShapes(model.lm_head)
    trainer = TunekitTrainer(
        model=model,
        args=transformers.TrainingArguments(
            str(tmp_path), per_device_eval_batch_size=4, use_cpu=True, report_to=[]
        ),
        eval_dataset=rows,
        compute_loss_func=loss_func("cross_entropy", True),
        compute_metrics=lambda predictions: {"positions": predictions.predictions.shape[1]},
    )
    fused_loss = trainer.evaluate()
    assert fused_loss["eval_positions"] == LENGTH
    assert shapes.shapes == [(4, LENGTH, VOCAB)]
    trainer.compute_metrics = None  # loss only: the fused path (a probe first)
    assert trainer.evaluate()["eval_loss"] == pytest.approx(fused_loss["eval_loss"], rel=1e-6)
    assert shapes.shapes[1:] == [(4, 1, VOCAB)]


# ---- PEFT ----


def lora_model(tied: bool, **lora_options) -> peft.PeftModel:
    config = peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj"], **lora_options
    )
    model = peft.get_peft_model(make_llama(vocab=VOCAB, seed=0, tied=tied), config)
    for name, param in model.named_parameters():  # LoRA's B starts at 0: move it so every adapter matters
        if "lora_B" in name:
            torch.manual_seed(len(name))
            nn.init.normal_(param, std=0.1)
    return model


@pytest.mark.parametrize(
    "tied, options",
    [(False, {}), (True, {}), (False, {"modules_to_save": ["lm_head"]})],
    ids=["untied", "tied", "modules_to_save"],
)
@pytest.mark.parametrize("objective", ["cross_entropy", "smile"])
def test_fused_lora_makes_the_update_of_the_logits_path(tmp_path, objective, tied, options):
    rows = lm_rows()
    updates = [
        trainer_update(
            tmp_path / str(fused),
            lora_model(tied, **options),
            rows,
            compute_loss_func=loss_func(objective, fused),
        )
        for fused in (False, True)
    ]
    assert_same_update(updates[1], updates[0])
    initial = dict(lora_model(tied, **options).named_parameters())
    moved = {name for name, value in updates[1][0].items() if not torch.equal(value, initial[name])}
    assert moved and all("lora_" in name or "modules_to_save" in name for name in moved)
    assert any("modules_to_save" in name for name in moved) == ("modules_to_save" in options)


# ---- what the fused path refuses ----


def test_a_lora_adapter_on_the_output_layer_is_refused():
    model = peft.get_peft_model(
        make_llama(vocab=VOCAB, seed=0), peft.LoraConfig(r=4, target_modules=["q_proj", "lm_head"])
    )
    with pytest.raises(ValueError, match="adapter would never train"):
        OutputLayerCapture(model)


@pytest.mark.parametrize(
    "option, value",
    [
        ("final_logit_softcapping", 30.0),
        ("logit_scale", 0.5),
        ("logits_scaling", 4.0),
        ("lm_head_multiplier", 2.0),
    ],
)
def test_configs_that_change_the_logits_are_refused(option, value):
    model = make_llama(vocab=VOCAB, seed=0, **{option: value})
    with pytest.raises(ValueError, match=option):
        OutputLayerCapture(model)


class ScaledLogits(nn.Module):
    """A causal LM that halves its logits after the output layer, which its config does not say."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = make_llama(vocab=VOCAB, seed=0)

    def get_output_embeddings(self) -> nn.Module:
        return self.inner.lm_head

    def forward(self, **inputs):
        outputs = self.inner(**inputs)
        outputs.logits = outputs.logits * 0.5
        return outputs


class FunctionalHead(ScaledLogits):
    """A causal LM that computes its logits with F.linear on the head's weight, not by calling the head."""

    def forward(self, **inputs):
        hidden = self.inner.model(**inputs).last_hidden_state
        return {"logits": nn.functional.linear(hidden, self.inner.lm_head.weight)}


@pytest.mark.parametrize(
    "make_model, message",
    [(ScaledLogits, "logits are not hidden @ weight.T"), (FunctionalHead, "ran 0 times")],
)
def test_models_whose_logits_are_not_the_output_layers_are_refused(make_model, message):
    batch = uneven_prompted_batch(0, 2)
    with pytest.raises(ValueError, match=message):
        loss_func("cross_entropy", True).compute(make_model(), batch)


@pytest.mark.parametrize("where", ["layer", "global"])
def test_a_forward_hook_that_changes_the_output_layers_output_is_refused(where):
    """The probe compares the logits with its own product, not with the (hooked) layer's output."""
    model = make_llama(vocab=VOCAB, seed=0)

    def halve(module, args, output):
        return output / 2 if module is model.lm_head else None

    register = (
        model.lm_head.register_forward_hook
        if where == "layer"
        else nn.modules.module.register_module_forward_hook
    )
    handle = register(halve)
    try:
        with pytest.raises(ValueError, match="forward hook on the layer"):
            loss_func("cross_entropy", True).compute(model, uneven_prompted_batch(0, 2))
    finally:
        handle.remove()


def test_a_compiled_model_whose_graph_lacks_the_hooks_gets_a_clear_error():
    torch._dynamo.reset()  # compiled graphs are shared by the models of a class
    model = make_llama(vocab=VOCAB, seed=0)
    compiled = torch.compile(model, backend="eager")
    batch = uneven_prompted_batch(0, 2)
    loss_func("cross_entropy", False).compute(compiled, batch)  # compiled without the hooks
    with pytest.raises(ValueError, match="compile the model after its first fused step"):
        loss_func("cross_entropy", True).compute(compiled, batch)
    torch._dynamo.reset()


def test_a_compiled_model_trains_fused_from_its_first_step():
    torch._dynamo.reset()  # no graph of this class compiled without the hooks by another test
    model = make_llama(vocab=VOCAB, seed=0)
    twin = make_llama(vocab=VOCAB, seed=0)
    batch = uneven_prompted_batch(0, 2)
    compiled = loss_func("dece", True).compute(torch.compile(model, backend="eager"), batch).loss
    eager = loss_func("dece", True).compute(twin, batch).loss
    torch.testing.assert_close(compiled, eager)
    compiled.backward()
    eager.backward()
    for (name, a), b in zip(model.named_parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


@pytest.mark.parametrize(
    "option", ["logits_scaling", "lm_head_multiplier", "output_multiplier", "logit_scale"]
)
def test_a_scale_of_one_is_no_scale(option):
    OutputLayerCapture(make_llama(vocab=VOCAB, seed=0, **{option: 1.0}))


def test_an_output_layer_that_is_not_a_plain_linear_is_refused():
    class Head(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    model = make_llama(vocab=VOCAB, seed=0)
    model.lm_head = Head(32, VOCAB, bias=False)
    with pytest.raises(ValueError, match=r"not a plain torch\.nn\.Linear"):
        loss_func("cross_entropy", True).compute(model, uneven_prompted_batch(0, 2))


def test_fused_given_to_a_plain_trainer_is_refused(tmp_path):
    trainer = transformers.Trainer(
        model=make_llama(vocab=VOCAB, seed=0),
        args=transformers.TrainingArguments(
            str(tmp_path), max_steps=1, use_cpu=True, report_to=[], save_strategy="no"
        ),
        train_dataset=lm_rows(),
        compute_loss_func=loss_func("cross_entropy", True),
    )
    with pytest.raises(ValueError, match="TunekitTrainer"):
        trainer.train()


def test_fused_needs_a_token_objective_and_a_language_model_head():
    with pytest.raises(ValueError, match="fused-linear form"):
        TrainerLoss(nn.CrossEntropyLoss(), task="causal_lm", fused=True, per_item=False)
    with pytest.raises(ValueError, match="token_classification"):
        TrainerLoss("focal", task="token_classification", fused=True)
    with pytest.raises(ValueError, match="fused"):
        TrainerLoss("cross_entropy", task="causal_lm", fused="yes")


# ---- context parallelism's shift_labels ----


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "logits"])
def test_shift_labels_are_scored_as_they_are(fused):
    """A batch with shift_labels (labels already shifted, as context parallelism shards them) gives the loss
    of its labels; SMILE, which needs whole sequences, refuses them."""
    model = make_llama(vocab=VOCAB, seed=0)
    batch = uneven_prompted_batch(0, 4)
    expected = loss_func("dece", fused).compute(model, batch).loss
    shifted = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
    with_shift_labels = {key: value for key, value in batch.items() if key != "labels"}
    loss = loss_func("dece", fused).compute(model, {**with_shift_labels, "shift_labels": shifted}).loss
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="context parallelism"):
        loss_func("smile", fused).compute(model, {**batch, "shift_labels": shifted})
    with pytest.raises(ValueError, match="shift_labels"):
        TrainerLoss("cross_entropy", task="seq2seq").compute(
            make_t5(vocab=VOCAB, seed=0), {**batch, "shift_labels": shifted}
        )


def test_seq2seq_evaluation_with_generation_reports_the_objectives_loss(tmp_path):
    """Seq2SeqTrainer scores a predict_with_generate evaluation with the model's own loss; with a
    TrainerLoss its objective's loss is reported, the same as without generation."""
    rows = seq2seq_rows(5, 6, vocab=VOCAB)
    losses = {}
    for generate in (False, True):
        trainer = TunekitSeq2SeqTrainer(
            model=make_t5(vocab=VOCAB, seed=0),
            args=transformers.Seq2SeqTrainingArguments(
                str(tmp_path),
                per_device_eval_batch_size=3,
                predict_with_generate=generate,
                generation_max_length=4,
                use_cpu=True,
                report_to=[],
            ),
            eval_dataset=rows,
            compute_loss_func=loss_func("smile", True, task="seq2seq"),
            compute_metrics=(lambda p: {"n": len(p.predictions)}) if generate else None,
        )
        losses[generate] = trainer.evaluate()["eval_loss"]
    assert losses[True] == pytest.approx(losses[False], rel=1e-6)
    builtin = make_t5(vocab=VOCAB, seed=0)(**{k: torch.stack([r[k] for r in rows]) for k in rows[0]}).loss
    assert abs(losses[True] - builtin.item()) > 1e-3  # not the model's own cross-entropy
