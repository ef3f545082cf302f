"""``tunekit train`` in 2 real processes: ``torchrun --standalone --nproc-per-node 2 -m tunekit train ...``
on the CPU (the Trainer sets up a gloo process group from torchrun's environment), as a user launches it.

Each rank trains the same tokenizer and model (both deterministic) on its half of every batch; the first
rank alone writes the checkpoints, the model and the report, and the evaluation's metrics are gathered over
both ranks (the generation metrics' per-batch tuples are padded and concatenated across processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import transformers

from finetune_data import TINY, generation_records, write_jsonl


def test_causal_lm_in_two_processes(tmp_path):
    data = write_jsonl(tmp_path / "copy.jsonl", generation_records(40))
    out = tmp_path / "run"
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in TINY.items()]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "tunekit",
        "train",
        "--train-file",
        str(data),
        "--task=causal_lm",
        "--objective=dece",
        "--text-field=prompt",
        "--target-field=answer",
        "--batch-size=4",
        "--eval-fraction=0.2",
        "--no-progress",
        "--out",
        str(out),
        *flags,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"torchrun failed:\n{done.stdout[-3000:]}\n{done.stderr[-8000:]}"
    assert done.stdout.count("epoch 2: ") == 1  # the first rank reports, once
    results = json.loads((out / "metrics.json").read_text())
    assert results["complete"] and [row["epoch"] for row in results["epochs"]] == [1, 2]
    assert (results["train_examples"], results["eval_examples"]) == (32, 8)
    # 32 examples in batches of 4 per rank x 2 ranks: 4 steps per epoch
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint-4", "checkpoint-8"]
    assert 0 <= results["final"]["token_accuracy"] <= 1
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "model")
    assert model.config.model_type == "gpt2"
