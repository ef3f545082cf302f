"""The shape of the public API and of the layers: one registry that says what each objective supports, the
tricks' options checked where the tricks are, configs that compose options classes instead of copying their
fields, and packages that import only each other's public names."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import tunekit.losses
from tunekit.hf import TrainerLoss, TrainerTricks
from tunekit.losses.registry import (
    CLASSIFICATION_LOSSES,
    GENERATION_TASKS,
    PROBLEM_TYPES,
    TASKS,
    TOKEN_LOSSES,
    find_objective,
    objectives_for,
)
from tunekit.runs.config import (
    add_config_arguments,
    config_diff,
    config_from_sources,
    config_overrides,
    config_to_dict,
    group,
    option,
)

SRC = Path(tunekit.__file__).parent

# ---- the registry ----


def test_the_registries_live_in_their_own_module():
    for name in ("TOKEN_LOSSES", "CLASSIFICATION_LOSSES", "PROBLEM_TYPES", "TokenLossSpec"):
        assert name not in tunekit.losses.__all__ and not hasattr(tunekit.losses, name)


@pytest.mark.parametrize(
    "spec",
    [*TOKEN_LOSSES.values(), *CLASSIFICATION_LOSSES.values()],
    ids=lambda spec: f"{type(spec).__name__}:{spec.name}",
)
def test_each_entry_reads_its_options_from_its_module(spec):
    """The options are the constructor's keyword-only arguments (less ignore_index / reduction and what the
    entry fixes), with the constructor's defaults: written once, in the module."""
    parameters = inspect.signature(spec.module).parameters
    expected = {
        name: p.default
        for name, p in parameters.items()
        if name not in ("ignore_index", "reduction", *getattr(spec, "kwargs", {}))
    }
    assert dict(spec.options) == expected
    assert all(p.kind is p.KEYWORD_ONLY for p in parameters.values())
    assert set(spec.tasks) <= set(TASKS) and spec.problem_type in PROBLEM_TYPES
    spec.module(**spec.options)  # the defaults build


def test_what_fits_each_task():
    assert objectives_for("causal_lm") == ("cross_entropy", "dece", "gce", "smile")
    assert objectives_for("seq2seq") == objectives_for("causal_lm")
    assert objectives_for("token_classification") == (
        "cross_entropy",
        "dece",
        "gce",
        "smile",
        "focal",
        "dice",
    )
    assert objectives_for("sequence_classification", "single_label_classification") == (
        "cross_entropy",
        "dece",
        "gce",
        "focal",
        "dice",
    )
    assert objectives_for("sequence_classification", "multi_label_classification") == (
        "binary_focal",
        "multilabel_dice",
    )
    assert objectives_for("sequence_classification", "regression") == ("mse_corr",)
    # the token form wins where there is one: it has the fused-linear form too
    assert find_objective("cross_entropy", "causal_lm") is TOKEN_LOSSES["cross_entropy"]
    assert find_objective("focal", "sequence_classification") is CLASSIFICATION_LOSSES["focal"]
    assert set(GENERATION_TASKS) < set(TASKS)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nope", "causal_lm"),
            "objective 'nope' is not registered; for task causal_lm choose one of cross_entropy",
        ),
        (
            ("binary_focal", "causal_lm"),
            "objective 'binary_focal' (for task sequence_classification with problem_type "
            "multi_label_classification) does not fit task causal_lm: "
            "choose one of cross_entropy, dece, gce, smile",
        ),
        (
            ("smile", "sequence_classification"),
            "objective 'smile' (for task causal_lm / seq2seq / token_classification) does not fit task "
            "sequence_classification",
        ),
        (("focal", "tagging"), "task must be one of"),
        (("focal", "sequence_classification", "multi_label"), "problem_type must be one of"),
        (("focal", "causal_lm", "regression"), "problem_type regression is for task sequence_classification"),
    ],
)
def test_an_objective_that_does_not_fit_is_one_clear_error(args, message):
    with pytest.raises(ValueError) as error:
        find_objective(*args)
    assert message in str(error.value)


def test_trainer_loss_and_tunekit_train_use_the_same_check():
    from tunekit.finetune import TrainConfig

    for task in TASKS:
        for name in sorted({*TOKEN_LOSSES, *CLASSIFICATION_LOSSES}):
            fits = name in objectives_for(task)
            try:
                TrainerLoss(name, task=task)
            except ValueError:
                assert not fits, (name, task)
            else:
                assert fits, (name, task)
            if task != "sequence_classification":  # TrainConfig also needs the problem type there
                overrides = {"train_file": "d.jsonl", "task": task, "objective": name}
                try:
                    config_from_sources(TrainConfig, overrides=overrides)
                except ValueError as error:
                    assert not fits and "does not fit" in str(error), (name, task, error)
                else:
                    assert fits, (name, task)


# ---- the tricks' options ----


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ema_decay": 1.0}, "ema_decay must be a number in [0, 1), got 1.0"),  # EMA's own check, renamed
        ({"ema_decay": 0.9, "ema_update_after_step": -1}, "ema_update_after_step must be an integer >= 0"),
        ({"adversarial": "pgd", "pgd_step_size": 0.0}, "pgd_step_size must be a finite number > 0"),
        (
            {"adversarial": "fgm", "adversarial_epsilon": -1.0},
            "adversarial_epsilon must be a finite number > 0",
        ),
        ({"layer_decay": 0.8, "head_lr": 0.0}, "head_lr must be a finite number > 0"),
        ({"badam": True, "block_order": "zigzag"}, "block_order must be one of ('random', 'ascending'"),
        ({"badam": True, "switch_every": 0}, "switch_every must be an integer >= 1"),
        # an option of a trick that is off would change nothing
        ({"pgd_steps": 5}, "pgd_steps is an option of adversarial, which is off: set adversarial too"),
        ({"ema_save": False}, "ema_save is an option of ema_decay, which is off"),
        ({"head_lr": 1e-3}, "head_lr is an option of layer_decay, which is off"),
        ({"switch_every": 5}, "switch_every is an option of badam, which is off"),
    ],
)
def test_trainer_tricks_refuse_bad_options_by_their_field_name(options, message):
    with pytest.raises(ValueError) as error:
        TrainerTricks(**options)
    assert str(error.value).startswith(message)


def test_trainer_tricks_fields_carry_their_help():
    for f in dataclasses.fields(TrainerTricks):
        assert f.metadata["help"], f.name


def test_trainer_tricks_and_the_config_import_without_the_trainer():
    """A command line reads TrainerTricks' fields for its flags: that must not import transformers' Trainer
    (seconds), TRL or PEFT."""
    code = (
        "import sys; import tunekit.finetune.config, tunekit.hf.trainer_tricks; "
        "heavy = [m for m in ('transformers.trainer', 'trl', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- configs compose options classes ----


@dataclasses.dataclass
class Inner:
    rate: float = dataclasses.field(default=0.5, metadata={"help": "a rate"})
    name: str | None = dataclasses.field(default=None, metadata={"help": "a name"})

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate must be in [0, 1], got {self.rate}")


@dataclasses.dataclass
class Outer:
    epochs: int = option(2, "epochs")
    options: dict[str, Any] = dataclasses.field(default_factory=dict, metadata={"help": "free options"})
    inner: Inner = group(Inner, "the inner options")
    seeds: int = option(1, "seeds", changes_results=False)


def test_a_group_is_flat_flags_yaml_keys_and_dict(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Outer)
    namespace = parser.parse_args(["--rate", "0.25", "--options", "gamma: 2, alpha: [1, 2]"])
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("epochs: 3\nname: x\noptions: {beta: true}\n")
    config = config_from_sources(Outer, yaml_path=yaml_file, overrides=config_overrides(namespace, Outer))
    assert config.inner == Inner(rate=0.25, name="x") and config.epochs == 3
    assert config.options == {"gamma": 2, "alpha": [1, 2]}  # the flag replaces the file's mapping
    flat = config_to_dict(config)
    assert flat == {
        "epochs": 3,
        "options": {"gamma": 2, "alpha": [1, 2]},
        "rate": 0.25,
        "name": "x",
        "seeds": 1,
    }
    assert config_diff(Outer, flat, {**flat, "rate": 0.5, "seeds": 4}) == {"rate": (0.25, 0.5)}
    assert "--rate" in parser.format_help() and "the inner options" in parser.format_help()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rate": "2"}, "rate must be in [0, 1], got 2.0"),  # the group's own check
        ({"rate": "nan"}, "rate must be"),
        ({"rat": "0.1"}, "(did you mean '--rate'?)"),
        ({"options": "[1, 2]"}, "expected 'key: value, ...'"),
        ({"options": "a: [1"}, "expected 'key: value, ...'"),
    ],
)
def test_a_group_reports_bad_values_by_flag(overrides, message):
    with pytest.raises(ValueError) as error:
        config_from_sources(Outer, overrides=overrides)
    assert message in str(error.value)


# ---- the layers ----


def _imports(path: Path) -> list[tuple[list[str], list[str]]]:
    """(absolute module path inside tunekit, imported names) of each `from ... import` of a source file."""
    here = list(path.relative_to(SRC).parent.parts)
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                module = base + (node.module.split(".") if node.module else [])
            elif (node.module or "").startswith("tunekit"):
                module = node.module.split(".")[1:]
            else:
                continue
            out.append((module, [alias.name for alias in node.names]))
    return out


def test_no_package_imports_another_packages_private_names():
    crossings = []
    for path in SRC.rglob("*.py"):
        package = path.relative_to(SRC).parts[0]
        for module, names in _imports(path):
            if not module or module[0] == package or module[0].startswith("_"):
                continue  # its own package, or tunekit's shared private modules (_checks, _dtypes)
            private = [part for part in module[1:] if part.startswith("_")]
            private += [name for name in names if name.startswith("_") and name != "__version__"]
            if private:
                crossings.append(f"{path.relative_to(SRC)} -> {'.'.join(module)}: {private}")
    assert not crossings, crossings


def test_the_core_imports_no_integration():
    """losses and tricks depend on torch alone; transformers, trl, peft and triton load only where needed."""
    for package in ("losses", "tricks"):
        for path in (SRC / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                heavy = [n for n in names if n.split(".")[0] in ("transformers", "trl", "peft", "tokenizers")]
                assert not heavy, (path, heavy)


@pytest.mark.parametrize(
    ("name", "task", "options", "message"),
    [
        (
            "focal",
            "sequence_classification",
            {"gama": 2},
            "focal has no option gama; its options: gamma (default 2.0)",
        ),
        # what the entry fixes, and what the integration sets, are not the user's to change
        ("dice", "sequence_classification", {"mode": "multilabel"}, "dice has no option mode"),
        ("cross_entropy", "causal_lm", {"reduction": "sum"}, "cross_entropy has no option reduction"),
    ],
)
def test_trainer_loss_takes_only_the_objectives_own_options(name, task, options, message):
    with pytest.raises(ValueError) as error:
        TrainerLoss(name, task=task, **options)
    assert str(error.value).startswith(message)


def test_a_module_instance_is_matched_to_its_own_entry():
    from tunekit.losses import DiceLoss

    loss = TrainerLoss(DiceLoss(mode="multilabel", batch_dice=True), task="sequence_classification")
    assert loss.problem_type == "multi_label_classification" and loss.per_item is False


def test_rdrop_is_refused_for_objectives_without_a_softmax():
    import torch
    from torch import nn

    class Head(nn.Module):
        def forward(self, input_ids):
            return {"logits": torch.randn(input_ids.shape[0], 1)}

    batch = {"input_ids": torch.zeros(4, 3, dtype=torch.long), "labels": torch.randn(4)}
    loss = TrainerLoss("mse_corr", task="sequence_classification")
    with pytest.raises(ValueError, match="rdrop_weight applies to single-label objectives"):
        loss.compute(Head(), batch, rdrop_weight=1.0)


def test_triton_is_imported_by_the_kernels_alone():
    """Only triton_kernels.py imports triton, and only on the Triton backend: a CPU call never does."""
    importers = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                if any(n.split(".")[0] == "triton" for n in names):
                    importers.append(path.relative_to(SRC).as_posix())
    assert sorted(set(importers)) == ["losses/triton_kernels.py"]
    code = (
        "import sys, torch; from tunekit.losses import cross_entropy, linear_smile_loss; "
        "cross_entropy(torch.randn(3, 5, requires_grad=True), torch.tensor([1, 2, -100])).backward(); "
        "linear_smile_loss(torch.randn(1, 3, 4), torch.randn(5, 4), torch.tensor([[1, 2, 3]])); "
        "assert 'triton' not in sys.modules, 'triton imported'"
    )
    env = {k: v for k, v in os.environ.items() if k != "TUNEKIT_BACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
