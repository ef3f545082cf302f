"""A one-minute tour of tunekit's training objectives: ``python -m tunekit.demo``.

It builds a tiny GPT-2 from a `transformers` config (random weights, nothing downloaded) and an offline
instruction-style data set from the running Python's own standard library: the prompt is a function's
signature (``def name(args):``), the response is the first line of its docstring, both as UTF-8 bytes
(one token per byte). As in supervised fine-tuning, only the response is learnt: the prompt and the padding
are labelled -100. A copy of the same initial model is then trained for the same steps, on the same
batches, with each objective of the registry ``tunekit.losses.registry.TOKEN_LOSSES`` in its module form,
on the model's shifted logits:

- cross-entropy, plain and label-smoothed;
- DeCE (Yang et al. 2024), whose epoch is advanced with ``DeCELoss.set_epoch`` at every epoch;
- SMILE (Yue et al. 2023), whose softmax at each position is restricted to the tokens of its own sequence.

The table shows each objective's own training loss at the first step and over the last epoch (objectives
are not on a common scale), the plain cross-entropy (next-token NLL, nats per byte) on held-out functions,
which is comparable across objectives, and the wall time. The objectives pursue different goals (DeCE
resists memorising poisoned data, SMILE favours longer, more descriptive answers), so the held-out NLL is one
view of them, not a ranking.

Seeds are fixed (the data depend on the Python version's sources); on two CPU cores the run takes well under
a minute. It needs the "hf" extra: ``pip install "tunekit[hf]"``.
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import math
import sys
import time

import torch
from torch import Tensor, nn

from tunekit.losses import cross_entropy
from tunekit.losses.registry import TOKEN_LOSSES

SEED = 0
IGNORE = -100
EOS, PAD = 256, 257  # byte tokens are 0..255
VOCAB = 258
MAX_PROMPT, MAX_RESPONSE = 40, 55  # bytes; a sequence is prompt + response + EOS
NUM_TRAIN, NUM_HELD_OUT = 400, 100
BATCH, EPOCHS, LR = 16, 4, 3e-3
# A model this small gains little from more threads, and on a busy machine they contend: 10x slower or worse.
THREADS = 1

# Standard-library modules whose functions make the data set (any that cannot be read are skipped).
SOURCE_MODULES = (
    "argparse", "ast", "bisect", "calendar", "collections", "csv", "dataclasses", "difflib", "fractions",
    "functools", "heapq", "inspect", "json", "os", "pathlib", "posixpath", "random", "shutil", "statistics",
    "string", "tarfile", "tempfile", "textwrap", "tokenize", "typing", "zipfile",
)  # fmt: skip

# (label, registry name, module keyword arguments); registered objectives not listed run with defaults.
RUNS = (
    ("cross-entropy", "cross_entropy", {}),
    ("cross-entropy, smoothing 0.1", "cross_entropy", {"label_smoothing": 0.1}),
    ("DeCE, epoch set per epoch", "dece", {}),
    ("SMILE, sequence subset", "smile", {"subset": "sequence"}),
)


def load_transformers():
    try:
        import transformers
    except ImportError:
        sys.exit('tunekit.demo needs Hugging Face transformers: pip install "tunekit[hf]"')
    transformers.logging.set_verbosity_error()
    return transformers


def documented_functions() -> list[tuple[str, str]]:
    """(signature, first docstring line) of the public functions of SOURCE_MODULES, sorted, deduplicated."""
    pairs = set()
    for module_name in SOURCE_MODULES:
        try:
            tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
        except (ImportError, OSError, TypeError, SyntaxError):  # e.g. a Python shipped without its sources
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                doc = (ast.get_docstring(node) or "").strip()
                summary = doc.splitlines()[0].strip() if doc else ""
                if len(summary) >= 12 and summary.isascii():
                    pairs.add((f"def {node.name}({ast.unparse(node.args)}):\n", summary))
    return sorted(pairs)


def encode(prompt: str, response: str) -> tuple[list[int], int]:
    """Byte ids of the truncated prompt, response and EOS, and the prompt's length."""
    prompt_ids = list(prompt.encode()[:MAX_PROMPT])
    return [*prompt_ids, *response.encode()[:MAX_RESPONSE], EOS], len(prompt_ids)


def make_dataset(pairs: list[tuple[str, str]]) -> dict[str, Tensor]:
    """Right-padded input_ids, attention_mask and labels (-100 on the prompt and the padding)."""
    encoded = [encode(prompt, response) for prompt, response in pairs]
    length = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), length), PAD)
    labels = torch.full((len(encoded), length), IGNORE)
    attention_mask = torch.zeros(len(encoded), length, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def split_data(pairs: list[tuple[str, str]]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """A seeded shuffle of the functions into a training and a held-out set."""
    if len(pairs) < 2 * BATCH:
        sys.exit(f"found only {len(pairs)} documented functions in the standard library's sources")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(SEED)).tolist()
    num_held_out = min(NUM_HELD_OUT, len(pairs) // 5)
    held_out = [pairs[i] for i in order[:num_held_out]]
    train = [pairs[i] for i in order[num_held_out : num_held_out + NUM_TRAIN]]
    return make_dataset(train), make_dataset(held_out)


def make_model(transformers, length: int) -> nn.Module:
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=length,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=EOS,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(SEED)
    return transformers.GPT2LMHeadModel(config)


def batches(data: dict[str, Tensor], epoch: int) -> list[dict[str, Tensor]]:
    """The epoch's shuffled batches: the same for every objective."""
    order = torch.randperm(len(data["labels"]), generator=torch.Generator().manual_seed(SEED + epoch))
    return [{key: value[rows] for key, value in data.items()} for rows in order.split(BATCH)]


def next_token_loss(model: nn.Module, batch: dict[str, Tensor], loss_fn) -> Tensor:
    """`loss_fn` of the logits at positions t against the labels at t + 1 (shifted, not copied)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return loss_fn(logits[:, :-1], batch["labels"][:, 1:])


def held_out_nll(model: nn.Module, data: dict[str, Tensor]) -> float:
    """Mean next-token cross-entropy (nats per byte) over the held-out responses."""
    model.eval()
    with torch.no_grad():
        loss = next_token_loss(model, data, cross_entropy).item()
    model.train()
    return loss


def train(model: nn.Module, loss_fn: nn.Module, data: dict[str, Tensor]) -> tuple[float, float]:
    """EPOCHS of AdamW; returns the loss of the first step and the mean loss of the last epoch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    losses = []
    for epoch in range(1, EPOCHS + 1):
        if hasattr(loss_fn, "set_epoch"):  # DeCE: its weight on the prediction, alpha_base ** epoch, falls
            loss_fn.set_epoch(epoch)
        losses.append([])
        for batch in batches(data, epoch):
            loss = next_token_loss(model, batch, loss_fn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses[-1].append(loss.item())
    return losses[0][0], sum(losses[-1]) / len(losses[-1])


def objectives() -> list[tuple[str, nn.Module]]:
    """RUNS, then every registered objective that RUNS does not mention, each as its module."""
    listed = [(label, name, kwargs) for label, name, kwargs in RUNS if name in TOKEN_LOSSES]
    listed += [(name, name, {}) for name in TOKEN_LOSSES if name not in {name for _, name, _ in RUNS}]
    return [(label, TOKEN_LOSSES[name].module(**kwargs)) for label, name, kwargs in listed]


def print_table(rows: list[tuple[str, float, float, float, float]]) -> None:
    header = ("objective", "loss, first step", "loss, last epoch", "held-out NLL", "time")
    width = max(len(header[0]), *(len(row[0]) for row in rows))
    title = f"{header[0]:<{width}}  {header[1]:>16}  {header[2]:>16}  {header[3]:>12}  {header[4]:>7}"
    print(title)
    print("-" * len(title))
    for label, first, last, nll, seconds in rows:
        print(f"{label:<{width}}  {first:>16.3f}  {last:>16.3f}  {nll:>12.3f}  {seconds:>6.1f}s")


def describe(model: nn.Module, train_data: dict[str, Tensor], held_out: dict[str, Tensor]) -> None:
    num_params = sum(p.numel() for p in model.parameters())
    steps = EPOCHS * math.ceil(len(train_data["labels"]) / BATCH)
    print(f"tiny GPT-2: {num_params / 1e3:.0f}k parameters, {VOCAB} byte tokens, random weights")
    print(
        f"data: {len(train_data['labels'])} training and {len(held_out['labels'])} held-out standard-library "
        "functions, signature (masked) -> first docstring line"
    )
    print(f"training: {steps} AdamW steps/objective ({EPOCHS} epochs, batch {BATCH}), lr {LR}, seed {SEED}")
    print(
        f"held-out NLL of the initial model: {held_out_nll(model, held_out):.3f} nats/byte "
        f"(uniform over the vocabulary: {math.log(VOCAB):.3f})\n"
    )


def main() -> None:
    transformers = load_transformers()
    torch.set_num_threads(THREADS)
    train_data, held_out = split_data(documented_functions())
    initial = make_model(transformers, max(train_data["input_ids"].shape[1], held_out["input_ids"].shape[1]))
    describe(initial, train_data, held_out)

    rows = []
    for label, loss_fn in objectives():
        model = copy.deepcopy(initial)
        start = time.perf_counter()
        first, last = train(model, loss_fn, train_data)
        rows.append((label, first, last, held_out_nll(model, held_out), time.perf_counter() - start))
    print_table(rows)
    print(
        "\nEach objective's loss is on its own scale; the held-out NLL is plain cross-entropy for all.\n"
        "SMILE never scores a token against ids absent from its sequence, so its NLL over the whole\n"
        "vocabulary is expected to lag."
    )


if __name__ == "__main__":
    main()
