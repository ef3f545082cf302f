"""The documentation site and the README front page.

- `mkdocs build --strict` passes: no broken link or anchor, every page in the nav, every docstring parsed,
  every marker of `mkdocs_hooks.py` filled from its source;
- every public name of the documented modules has an entry in the generated API reference;
- the quickstart runs as written (the second block with a tiny Llama, a tokenizer trained here and TRL's
  real SFTTrainer), and the README's copy of it is the same code;
- the README is a front page, and the numbers it quotes are the ones in the files the experiment and the
  benchmark wrote.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# module -> where its public names come from: ``__all__``, or (no ``__all__``) the names it defines itself
DOCUMENTED = (
    "tunekit.losses",
    "tunekit.losses.registry",
    "tunekit.tricks",
    "tunekit.hf",
    "tunekit.long_text",
    "tunekit.decoding",
    "tunekit.finetune",
    "tunekit.experiments",
    "tunekit.runs",
    "tunekit.runs.config",
    "tunekit.runs.report",
    "tunekit.workbench.tokenizers",
    "tunekit.workbench.folders",
    "tunekit.workbench.training",
    "tunekit.workbench.metrics",
    "tunekit.cli",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    warnings = [line for line in done.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert done.returncode == 0, "\n".join(warnings) or done.stderr[-3000:]
    return out


def test_the_site_builds_strictly_with_every_page(site):
    pages = ("", "getting-started", "guides/token-objectives", "backdoor/report", "performance/benchmarks",
             "reference/losses")
    for page in pages:
        assert (site / page / "index.html").is_file(), page
    # the markers were filled from their sources, none is left as a comment
    for html in site.rglob("*.html"):
        assert "<!-- report:" not in html.read_text() and "<!-- tunekit:" not in html.read_text(), html


def public_names(module_name: str) -> dict[str, object]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module_name
        ]
    return {name: getattr(module, name) for name in names}


def resolve(identifier: str) -> object:
    """The object a mkdocstrings anchor (``tunekit.losses.dece.dece_loss``) names."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            value = getattr(value, attribute)
        return value
    raise LookupError(identifier)


def test_every_public_name_has_a_reference_entry(site):
    anchors = set()
    for html in (site / "reference").rglob("*.html"):
        anchors.update(re.findall(r'id="(tunekit\.[\w.]+)"', html.read_text()))
    documented = set()
    for anchor in anchors:
        try:
            documented.add(id(resolve(anchor)))
        except (LookupError, AttributeError):
            continue
    missing = [
        f"{module}.{name}"
        for module in DOCUMENTED
        for name, value in public_names(module).items()
        if id(value) not in documented
    ]
    assert not missing, f"no reference entry for {missing}"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_the_readme_quickstart_is_the_sites():
    assert python_blocks(ROOT / "README.md")[:2] == python_blocks(ROOT / "docs" / "getting-started.md")[:2]


def test_the_quickstart_runs_as_written(tmp_path, monkeypatch):
    import datasets
    import torch
    import trl

    from tiny_lm import make_llama
    from tiny_tokenizer import bpe_tokenizer, stdlib_text

    functions, trainer = python_blocks(ROOT / "docs" / "getting-started.md")[:2]
    namespace: dict = {}
    exec(compile(functions, "getting-started.md: block 1", "exec"), namespace)
    assert namespace["hidden"].grad is not None and namespace["hidden"].grad.abs().sum() > 0

    tokenizer = bpe_tokenizer()
    model = make_llama(vocab=len(tokenizer), seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    dataset = datasets.Dataset.from_list([{"text": text[:120]} for text in stdlib_text(16)])
    monkeypatch.chdir(tmp_path)
    # SFTConfig trains in bf16 by default, which transformers refuses on a machine without a GPU unless
    # told to use the CPU: the one thing the test adds to the block
    if not torch.cuda.is_available():
        monkeypatch.setattr(trl, "SFTConfig", functools.partial(trl.SFTConfig, use_cpu=True))
    namespace = {"model": model, "tokenizer": tokenizer, "dataset": dataset}
    exec(compile(trainer, "getting-started.md: block 2", "exec"), namespace)
    trained = namespace["trainer"]
    assert trained.state.global_step >= 1
    # get_peft_model wrapped the layers in place: the base weights kept, LoRA's B (zeros at first) trained
    params = dict(model.named_parameters())
    for name, value in params.items():
        if "lora_" not in name:
            assert value.detach().equal(before[name.replace(".base_layer", "")]), name
    assert all(params[name].abs().sum() > 0 for name in params if "lora_B" in name)


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert readme.count("```bash") == 2  # exactly the two set-up commands
    for target in re.findall(r"\]\(((?:docs/|CONTRIBUTING)[^)#]*)", readme):
        assert (ROOT / target).is_file(), target


def test_the_readme_headline_is_the_backdoor_reports():
    from tunekit.runs.report import mean_std

    results = json.loads((ROOT / "docs" / "backdoor" / "results.json").read_text())
    last = {}
    for row in results["results"]:
        final = row["result"]["epochs"][-1]
        last.setdefault(row["arm"], []).append(final)
    readme = (ROOT / "README.md").read_text()
    names = {
        "ce_clean": "cross-entropy, clean data",
        "ce_poisoned": "cross-entropy, poisoned data",
        "dece_poisoned": "DeCE, poisoned data",
    }
    for arm, label in names.items():
        cells = [
            "{:.2f} ± {:.2f}".format(*mean_std(epoch[metric] for epoch in last[arm]))
            for metric in ("asr_exact", "asr_loose", "token_accuracy", "bleu")
        ]
        assert f"| {label} | {' | '.join(cells)} |" in readme
    assert f"`--seeds {len(results['seeds'])}`" in readme


def test_the_readme_benchmark_line_is_the_measured_files():
    runs = json.loads((ROOT / "benchmarks" / "measured" / "cpu-2cores.json").read_text())
    line = re.search(
        r"T = ([\d,]+) tokens and V = ([\d,]+).*?took ([\d.]+)x the time and ([\d.]+)x the peak memory",
        (ROOT / "README.md").read_text(),
        flags=re.DOTALL,
    )
    assert line, "the README's benchmark line"
    tokens, vocab = (int(group.replace(",", "")) for group in line.groups()[:2])
    run = next(r for r in runs if (r["kind"], r["tokens"], r["vocab"]) == ("logits", tokens, vocab))
    time = run["time_s"]["tunekit cross_entropy"] / run["time_s"]["F.cross_entropy"]
    memory = run["peak_bytes"]["tunekit cross_entropy"] / run["peak_bytes"]["F.cross_entropy"]
    assert (line.group(3), line.group(4)) == (f"{time:.2f}", f"{memory:.2f}")


def test_the_readme_options_benchmark_line_is_the_measured_files():
    runs = json.loads((ROOT / "benchmarks" / "measured" / "cpu-2cores-options.json").read_text())
    readme = (ROOT / "README.md").read_text()
    line = re.search(
        r"At the same size,\s+with class weights.*?took ([\d.]+)x the time of `F.cross_entropy\(weight=\)`.*?"
        r"probability targets ([\d.]+)x\s+that of `F.cross_entropy`",
        readme,
        flags=re.DOTALL,
    )
    assert line, "the README's line on class weights and probability targets"
    size = re.search(r"T = ([\d,]+) tokens and V = ([\d,]+)", readme)
    tokens, vocab = (int(group.replace(",", "")) for group in size.groups())
    run = next(r for r in runs if (r["kind"], r["tokens"], r["vocab"]) == ("logits", tokens, vocab))
    times = run["time_s"]
    weighted = times["tunekit cross_entropy weight"] / times["F.cross_entropy weight"]
    soft = times["tunekit cross_entropy soft"] / times["F.cross_entropy soft"]
    assert line.groups() == (f"{weighted:.2f}", f"{soft:.2f}")


def test_a_marker_without_its_source_stops_the_build(tmp_path):
    from mkdocs.exceptions import PluginError

    sys.path.insert(0, str(ROOT))
    try:
        hooks = importlib.import_module("mkdocs_hooks")
    finally:
        sys.path.remove(str(ROOT))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "report.md").write_text("# no verdict, no table\n")
    with pytest.raises(PluginError, match="no report"):
        hooks.report_part(tmp_path, "missing", "table", where="page.md")
    with pytest.raises(PluginError, match="has no verdict"):
        hooks.report_part(tmp_path, "empty", "verdict", where="page.md")
    with pytest.raises(PluginError, match="no benchmark table"):
        hooks.benchmark_summary(tmp_path / "missing.md", where="page.md")
    table = tmp_path / "table.md"
    table.write_text(
        "| T | V | objective | time vs F.cross_entropy |\n|---|---|---|---|\n"
        "| 2 | 3 | F.cross_entropy | 1.00x |\n| 2 | 3 | a | 0.50x |\n| 4 | 3 | a | 0.70x |\n"
    )
    assert "| a | 0.50x - 0.70x |" in hooks.benchmark_summary(table, where="page.md")
    with pytest.raises(PluginError, match="exited with 2"):
        hooks.command_output(["no-such-command", "--help"], where="page.md")
    with pytest.raises(PluginError, match="only --help and --list"):
        hooks.command_output(["train", "--train-file", "data.jsonl"], where="page.md")
