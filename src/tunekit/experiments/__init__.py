"""Experiments behind ``tunekit run <name>``: the runner (registry, arms x seeds, resumable output folder,
report), typed configs from defaults, a YAML file and command-line flags, and report helpers.

An experiment registers itself when its module is imported; `BUILTIN` lists the modules of tunekit's own,
which `load_experiments` imports (a missing one is skipped). This package needs nothing beyond the standard
library to import; progress bars, YAML and plots need the "cli" extra.
"""

from ..runs.config import add_config_arguments, config_from_sources, config_to_dict, option
from .runner import (
    EXPERIMENTS,
    ArmError,
    ArmResult,
    Experiment,
    Progress,
    RunFolderError,
    RunSummary,
    default_cache_dir,
    get_experiment,
    load_experiments,
    register,
    run_experiment,
)

BUILTIN = (
    "tunekit.experiments.backdoor",
    "tunekit.experiments.descriptive",
    "tunekit.experiments.imbalanced",
    "tunekit.experiments.tricks",
)
"""Modules whose import registers tunekit's own experiments."""

__all__ = [
    "BUILTIN",
    "EXPERIMENTS",
    "ArmError",
    "ArmResult",
    "Experiment",
    "Progress",
    "RunFolderError",
    "RunSummary",
    "add_config_arguments",
    "config_from_sources",
    "config_to_dict",
    "default_cache_dir",
    "get_experiment",
    "load_experiments",
    "option",
    "register",
    "run_experiment",
]
