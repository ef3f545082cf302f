"""The report of a ``tunekit train`` run, rewritten after every epoch: ``metrics.json`` (everything
measured), ``report.md`` (the table per epoch, the curves, how to load the model, the options) and a PNG per
curve (``loss.png`` with the training and evaluation losses, one per evaluation metric)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..losses.registry import GENERATION_TASKS, SINGLE_LABEL
from ..runs.config import config_to_dict
from ..runs.report import (
    format_duration,
    markdown_table,
    plot_curves,
    require,
    write_json,
    write_text,
)

__all__ = ["epoch_rows", "write_report"]

METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"


def epoch_rows(log_history: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """One dict per finished epoch from the Trainer's ``state.log_history``: ``epoch``, ``train_loss`` (the
    mean over the epoch's steps) and the evaluation's values without their ``eval_`` prefix (``loss`` as
    ``eval_loss``); the Trainer's timing entries are left out."""
    by_epoch: dict[int, dict[str, float]] = {}
    for entry in log_history:
        if "epoch" not in entry:
            continue
        epoch = round(float(entry["epoch"]))
        row = by_epoch.setdefault(epoch, {"epoch": epoch})
        if "loss" in entry:
            row["train_loss"] = float(entry["loss"])
        for key, value in entry.items():
            if key == "eval_loss":
                row["eval_loss"] = float(value)
            elif (
                key.startswith("eval_")
                and not key.endswith(("_runtime", "_per_second"))
                and key != "eval_epoch"
            ):
                row[key.removeprefix("eval_")] = float(value)
    return [by_epoch[e] for e in sorted(by_epoch) if e >= 1]


def write_report(
    out_dir: Path,
    *,
    config: Any,
    facts: Mapping[str, Any],
    epochs: Sequence[Mapping[str, float]],
    metric_names: Sequence[str],
    complete: bool,
    seconds: float,
) -> list[str]:
    """Write metrics.json, report.md and the curves into `out_dir` (each file atomically); return the names
    written."""
    write_json(
        out_dir / METRICS_FILE,
        {
            "complete": complete,
            **facts,
            "epochs": list(epochs),
            "final": dict(epochs[-1]) if epochs else {},
            "seconds": round(seconds, 1),
            "config": config_to_dict(config),
        },
    )
    yaml = require("yaml", "Writing the report")
    plots = _plots(out_dir, epochs, metric_names)
    options_yaml = yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True)
    markdown = _markdown(config, facts, epochs, metric_names, complete, seconds, plots, options_yaml)
    write_text(out_dir / REPORT_FILE, markdown)
    return [METRICS_FILE, REPORT_FILE, *plots]


def _plots(out_dir: Path, epochs: Sequence[Mapping[str, float]], metric_names: Sequence[str]) -> list[str]:
    if not epochs:
        return []
    files = []
    losses = {
        label: [(row["epoch"], row[key]) for row in epochs if _finite(row.get(key))]
        for label, key in (("train", "train_loss"), ("eval", "eval_loss"))
    }
    losses = {label: points for label, points in losses.items() if points}
    if losses:
        plot_curves(losses, out_dir / "loss.png", title="loss per epoch", xlabel="epoch", ylabel="loss")
        files.append("loss.png")
    for name in metric_names:
        points = [(row["epoch"], row[name]) for row in epochs if _finite(row.get(name))]
        if points:
            plot_curves({"eval": points}, out_dir / f"{name}.png", title=name, xlabel="epoch", ylabel=name)
            files.append(f"{name}.png")
    return files


def _markdown(
    config: Any,
    facts: Mapping[str, Any],
    epochs: Sequence[Mapping[str, float]],
    metric_names: Sequence[str],
    complete: bool,
    seconds: float,
    plots: Sequence[str],
    options_yaml: str,
) -> str:
    multi_or_regression = facts.get("problem_type") not in (None, SINGLE_LABEL)
    status = "finished" if complete else f"in progress: {len(epochs)} of {config.epochs} epochs"
    lines = [
        f"# tunekit train: {config.task}" + (f" ({facts['problem_type']})" if multi_or_regression else ""),
        "",
        f"Status: {status} ({format_duration(seconds)} of training in this run).",
        "",
        f"- model: {facts['model']} ({facts['parameters']:,} parameters), tokenizer: {facts['tokenizer']}",
        f"- data: {facts['train_examples']} training examples from {config.train_file}, "
        f"{facts['eval_examples']} evaluation examples from {facts['eval_source']}",
    ]
    if facts.get("labels"):
        labels = facts["labels"]
        shown = ", ".join(labels[:30]) + (", ..." if len(labels) > 30 else "")
        lines.append(f"- labels ({len(labels)}): {shown}")
    if facts.get("truncated"):
        lines.append(f"- {facts['truncated']} examples were cut at max_length = {config.max_length} tokens")
    if facts.get("unsupervised"):
        lines.append(
            f"- {facts['unsupervised']} examples kept no label after the cut (their target starts past "
            "max_length): they teach nothing"
        )
    if facts.get("lora"):
        lines.append(
            f"- LoRA (r = {config.lora_r}): {facts['trainable_parameters']:,} trainable parameters; the "
            "saved model has the adapters merged in"
        )
    lines += [
        f"- objective: {facts['objective']}",
        f"- loss path: {facts.get('loss_path', 'logits')}",
        *(["- batches: packed, each batch's examples in one row without padding"] if config.packing else []),
        f"- tricks: {facts['tricks'] or 'none'}",
        "",
        "## Per epoch",
        "",
    ]
    columns = ["epoch", "train_loss", "eval_loss", *metric_names]
    if epochs:
        lines.append(markdown_table(columns, [[row.get(c) for c in columns] for row in epochs]))
    else:
        lines.append("No epoch has finished yet.")
    lines += ["", _metric_notes(config.task, config.problem_type), ""]
    lines += [f"![{Path(name).stem}]({name})" for name in plots]
    if complete:
        lines += [
            "",
            "## The model",
            "",
            f"Saved with `save_pretrained` (and its tokenizer) in `{facts['model_dir']}`:",
            "",
            "```python",
            "import transformers",
            f'model = transformers.{facts["auto_class"]}.from_pretrained("{facts["model_dir"]}")',
            f'tokenizer = transformers.AutoTokenizer.from_pretrained("{facts["model_dir"]}")',
            "```",
        ]
    lines += [
        "",
        "## Options",
        "",
        "Every option of the run; a YAML file with these keys (`--config`) reruns it.",
        "",
        "```yaml",
        options_yaml.rstrip(),
        "```",
        "",
    ]
    return "\n".join(lines)


def _metric_notes(task: str, problem_type: str) -> str:
    if task == "sequence_classification" and problem_type == "multi_label_classification":
        return (
            "`eval_loss` is the training objective on the evaluation data; a class is predicted where its "
            "sigmoid is above 0.5; `micro_f1` is the F1 over all (example, class) decisions, `macro_f1` the "
            "F1 averaged over the classes present, `exact_match` the share of examples whose predicted set "
            "of classes is exactly theirs."
        )
    if task == "sequence_classification" and problem_type == "regression":
        return (
            "`eval_loss` is the training objective on the evaluation data; `mse` is the mean squared error "
            "of the predictions and `pearson` their correlation with the targets over the evaluation "
            "examples."
        )
    if task in GENERATION_TASKS:
        return (
            "`eval_loss` is the training objective on the evaluation data; `cross_entropy` is the mean "
            "negative log-likelihood per target token (whatever the objective), `perplexity` its exp, "
            "`token_accuracy` the share of target tokens that are the argmax (teacher forcing)."
        )
    unit = "labelled words (their first token)" if task == "token_classification" else "examples"
    return (
        f"`eval_loss` is the training objective on the evaluation data; `accuracy` and `macro_f1` (F1 "
        f"averaged over the classes present) are over the evaluation {unit}."
    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
