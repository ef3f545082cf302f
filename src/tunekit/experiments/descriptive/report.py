"""The descriptive experiment's report: a table per arm (last epoch, mean ± spread over seeds) with the
references as a row of their own, curves per epoch, sample outputs per arm, and a verdict."""

from __future__ import annotations

import re
from pathlib import Path
from statistics import fmean
from typing import Any

from ...runs.report import markdown_table, mean_std, plot_curves
from ..report_parts import last_epoch_values, per_epoch, results_by_arm, spread_cells, write_markdown

METRICS = {
    "length_words": "words",
    "length_tokens": "tokens",
    "capped": "capped",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "bleu": "BLEU",
    "r_at_1": "R@1",
}
PLOTTED = ("length_words", "bleu", "r_at_1", "distinct_2")
GROUNDED_R1 = 3  # R@1 below this multiple of chance: the outputs hardly depend on their source
_PLOT_LABELS = {"length_words": "mean length (words)", "r_at_1": "self-retrieval R@1"}


def write_report(config: Any, results: list, report_dir: Path) -> str:
    """Write report.md and the plots into `report_dir`; return the verdict line."""
    by_arm = results_by_arm(results)
    final = last_epoch_values(by_arm, METRICS)
    first = next(iter(by_arm.values()))[0]
    references, counts = first["references"], first["counts"]
    new_tokens, chance = first["max_new_tokens"], 1 / counts["test_pairs"]
    verdict = _verdict(final, references, chance)

    rows = [[arm, runs[0]["objective"], *spread_cells(final[arm], METRICS)] for arm, runs in by_arm.items()]
    rows.append(["references", "", *(f"{references[m]:.2f}" for m in METRICS)])
    before = first["epochs"][0]
    rows.append(["pre-trained (epoch 0)", "cross_entropy", *(f"{before[m]:.2f}" for m in METRICS)])
    for metric in PLOTTED:
        label = _PLOT_LABELS.get(metric, METRICS[metric])
        plot_curves(
            per_epoch(by_arm, metric),
            report_dir / f"{metric}.png",
            title=f"{label} per epoch",
            xlabel="epoch",
            ylabel=label,
        )
    lines = [
        f"Task: from a standard-library function's code (its docstring removed) generate the docstring's "
        f"first line. A GPT-2 ({config.n_layer} blocks, width {config.n_embd}) pre-trained with MLE for "
        f"{config.pretrain_epochs} epochs on {counts['pretrain_pairs']} pairs from one half of the modules "
        f"is fine-tuned per arm for {config.epochs} epochs on {counts['train_pairs']} pairs from the other "
        f"half and measured on {counts['test_pairs']} held-out pairs; greedy decoding with up to "
        f"{new_tokens} new tokens ({new_tokens / references['length_tokens']:.1f}x the held-out references' "
        f"mean of {references['length_tokens']:.1f} tokens). {config.seeds} seed(s); the table shows the "
        "last epoch, mean ± sample standard deviation over seeds.",
        "",
        markdown_table(["arm", "objective", *METRICS.values()], rows),
        "",
        "How to read it: *words* and *tokens* are the outputs' mean length (tokens before `<eos>`); *capped* "
        "is the share of outputs that hit the new-token limit without `<eos>` (usually a repetition loop, "
        "which makes an output long without making it descriptive); *distinct-n* is distinct word n-grams "
        "over all n-grams, pooled over outputs; *BLEU* is sacrebleu's corpus BLEU against the references; "
        "*R@1* is self-retrieval: the share of outputs for which their own source code is the most similar "
        f"of the {counts['test_pairs']} held-out codes under TF-IDF cosine similarity of word pieces "
        f"(identifiers split at `_` and camelCase; a tie is a miss; chance is {chance:.2f}). It rewards a "
        "description that names what is specific to its function. The *references* row measures the "
        "reference descriptions themselves as if they were outputs.",
        "",
        f"Arms: `smile` restricts each position's softmax to the tokens of its own reference (the paper's "
        f"SMILE) and keeps the full softmax on the first token; `smile_no_first_mle` drops that; `mle+smile` "
        f"is {config.mix_mle_weight:g}·MLE + {1 - config.mix_mle_weight:g}·SMILE; `smile_random` uses the "
        f"label plus {config.num_random} random ids; `smile_reverse` the vocabulary minus the reference's "
        "tokens, plus the label.",
        "",
        *(f"![{metric}]({metric}.png)" for metric in PLOTTED),
        "",
        "## Outputs of each arm (seed 0, last epoch)",
        "",
    ]
    for index, sample in enumerate(first["samples"]):
        code = sample["code"]
        lines += [
            f"### Example {index + 1}",
            "",
            "```python",
            code,
            "```",
            "",
            f"- reference: {code_span(sample['reference'])}",
        ]
        lines += [
            f"- {arm}: {code_span(runs[0]['samples'][index]['output'])}" for arm, runs in by_arm.items()
        ]
        lines.append("")
    write_markdown(
        report_dir, "Descriptive: does SMILE make generated descriptions longer than MLE?", verdict, lines
    )
    return verdict


def code_span(text: str) -> str:
    """`text` as one line of inline markdown code, fenced by more backticks than it holds in a row.

    >>> code_span("a `b` c"), code_span("")
    ('`` a `b` c ``', '(empty)')
    """
    text = " ".join(text.split())
    if not text:
        return "(empty)"
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if "`" in text else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _verdict(final: dict[str, dict[str, list[float]]], references: dict, chance: float) -> str:
    if "mle" not in final or "smile" not in final:
        return "run both the mle and smile arms to compare SMILE with MLE"
    smile, mle = final["smile"], final["mle"]
    gap = fmean(smile["length_words"]) - fmean(mle["length_words"])
    noise = max(0.5, mean_std(smile["length_words"])[1] + mean_std(mle["length_words"])[1])
    how = "longer than" if gap > noise else "shorter than" if gap < -noise else "about as long as"
    return (
        f"at this scale SMILE's descriptions are {how} MLE's: {fmean(smile['length_words']):.1f} vs "
        f"{fmean(mle['length_words']):.1f} words (references {references['length_words']:.1f}; capped "
        f"{fmean(smile['capped']):.0%} vs {fmean(mle['capped']):.0%}), BLEU {fmean(smile['bleu']):.1f} vs "
        f"{fmean(mle['bleu']):.1f}, self-retrieval R@1 {fmean(smile['r_at_1']):.2f} vs "
        f"{fmean(mle['r_at_1']):.2f}" + _mixture(final) + _grounding(smile, mle, chance)
    )


def _grounding(smile: dict[str, list[float]], mle: dict[str, list[float]], chance: float) -> str:
    """A warning when neither model's outputs find their source much better than chance."""
    if max(fmean(smile["r_at_1"]), fmean(mle["r_at_1"])) >= GROUNDED_R1 * chance:
        return ""
    return (
        f"; R@1 is near chance ({chance:.2f}) for both: the model barely reads the code at this scale, so "
        "longer outputs are not shown to be more descriptive"
    )


def _mixture(final: dict[str, dict[str, list[float]]]) -> str:
    if "mle+smile" not in final:
        return ""
    mix = final["mle+smile"]
    return f"; the MLE+SMILE mixture: {fmean(mix['length_words']):.1f} words, BLEU {fmean(mix['bleu']):.1f}"
