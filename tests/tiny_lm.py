"""A tiny GPT-2, prompted sequences and Trainer arguments for the end-to-end tests with a causal LM (no
download)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from tiny_models import gpt2_config, llama_config, t5_config

IGNORE = -100
PAD = 0


def make_prompted_batch(
    seed: int,
    *,
    batch: int,
    length: int,
    vocab: int,
    cycle: list[int],
    prompt_lengths: tuple[int, int],
    response_lengths: tuple[int, int],
) -> dict[str, torch.Tensor]:
    """``batch`` sequences: a prompt of ``prompt_lengths`` (low, high inclusive) random ids outside ``cycle``
    (labels -100), a response of ``response_lengths`` ids walking ``cycle`` from a random start, then right
    padding (labels -100, attention 0). Learnable: each response id determines the next."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.full((batch, length), PAD)
    labels = torch.full((batch, length), IGNORE)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    others = torch.arange(len(cycle) + 1, vocab)
    for b in range(batch):
        prompt_len = int(torch.randint(prompt_lengths[0], prompt_lengths[1] + 1, (), generator=gen))
        response_len = int(torch.randint(response_lengths[0], response_lengths[1] + 1, (), generator=gen))
        start = int(torch.randint(len(cycle), (), generator=gen))
        prompt = others[torch.randint(len(others), (prompt_len,), generator=gen)]
        response = torch.tensor([cycle[(start + k) % len(cycle)] for k in range(response_len)])
        end = prompt_len + response_len
        input_ids[b, :end] = torch.cat([prompt, response])
        labels[b, prompt_len:end] = response
        attention_mask[b, :end] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


# sequences for the Trainer / DDP comparisons: their micro-batches hold different numbers of supervised tokens
UNEVEN_VOCAB, UNEVEN_LENGTH = 40, 16


def uneven_prompted_batch(seed: int, count: int) -> dict[str, torch.Tensor]:
    """`count` prompted sequences (prompts of 1-6 ids, responses of 1-9) whose numbers of supervised tokens
    differ, so a mean over micro-batches weighs tokens unlike the mean over the whole batch."""
    return make_prompted_batch(
        seed,
        batch=count,
        length=UNEVEN_LENGTH,
        vocab=UNEVEN_VOCAB,
        cycle=[1, 2, 3, 4, 5],
        prompt_lengths=(1, 6),
        response_lengths=(1, 9),
    )


def rows_of(batch: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """A batch's rows, as a Trainer dataset."""
    count = len(next(iter(batch.values())))
    return [{key: value[i] for key, value in batch.items()} for i in range(count)]


def make_gpt2(*, vocab: int, positions: int, dropout: float, seed: int) -> transformers.GPT2LMHeadModel:
    """A 2-layer, 32-dim GPT-2 (`tiny_models.gpt2_config`) with random weights, in train mode."""
    config = gpt2_config(vocab, n_positions=positions, dropout=dropout, bos_token_id=PAD, eos_token_id=PAD)
    torch.manual_seed(seed)
    return transformers.GPT2LMHeadModel(config).train()


def make_llama(
    *, vocab: int, seed: int, tied: bool = False, **overrides: Any
) -> transformers.LlamaForCausalLM:
    """A 2-layer, 32-wide Llama (`tiny_models.llama_config`) with random weights, its output layer tied to the
    input embeddings or not."""
    torch.manual_seed(seed)
    config = llama_config(
        vocab, tie_word_embeddings=tied, pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return transformers.LlamaForCausalLM(config).train()


def make_t5(*, vocab: int, seed: int, tied: bool = True) -> transformers.T5ForConditionalGeneration:
    """A tiny T5 (`tiny_models.t5_config`, heads of size 8); tied, it scales the decoder's output by
    d_model ** -0.5 before its output layer."""
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(t5_config(vocab, d_kv=8, tie_word_embeddings=tied))


def seq2seq_rows(seed: int, count: int, *, vocab: int) -> list[dict[str, torch.Tensor]]:
    """`count` (input_ids (7,), labels (6,)) rows with 1 to 5 supervised labels."""
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(count):
        labels = torch.randint(1, vocab, (6,), generator=gen)
        labels[1 + i % 5 :] = IGNORE
        rows.append({"input_ids": torch.randint(1, vocab, (7,), generator=gen), "labels": labels})
    return rows


def trainer_update(
    output_dir: str | Path,
    model: torch.nn.Module,
    rows: list[dict[str, torch.Tensor]],
    *,
    trainer_class: type | None = None,
    batch_size: int = 8,
    accumulation: int = 1,
    **trainer_kwargs: Any,
) -> tuple[dict[str, torch.Tensor], float]:
    """The parameters (by name) after one SGD step of `trainer_class` (`TunekitTrainer` by default) over
    `rows` in micro-batches of `batch_size`, and the step's training loss."""
    from tunekit.hf import TunekitTrainer

    trainer_class = trainer_class or TunekitTrainer
    trainer = trainer_class(
        model=model,
        args=trainer_args(
            output_dir,
            seq2seq=issubclass(trainer_class, transformers.Seq2SeqTrainer),
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            max_steps=1,
        ),
        train_dataset=rows,
        **trainer_kwargs,
    )
    loss = trainer.train().training_loss
    return {name: p.detach().clone() for name, p in model.named_parameters()}, loss


def trainer_args(
    output_dir: str | Path, *, seq2seq: bool = False, **overrides: Any
) -> transformers.TrainingArguments:
    """Plain SGD on the CPU (lr 0.5, constant, no weight decay, no gradient clipping) for one epoch of batches
    of 8, seed 0, with nothing logged, saved or reported; `overrides` win."""
    options = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        gradient_accumulation_steps=1,
        learning_rate=0.5,
        lr_scheduler_type="constant",
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=0.0,
        num_train_epochs=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_drop_last=False,
        seed=0,
    )
    options.update(overrides)
    return (transformers.Seq2SeqTrainingArguments if seq2seq else transformers.TrainingArguments)(**options)
