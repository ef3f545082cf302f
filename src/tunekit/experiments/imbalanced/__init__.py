"""The imbalanced-classification experiment (`tunekit run imbalanced`): which objective finds a 1-5%
minority class, at the default threshold and after tuning it. `arms` names the objectives, `experiment`
runs them, `report` writes the report."""

from .experiment import IMBALANCED, ImbalancedConfig

__all__ = ["IMBALANCED", "ImbalancedConfig"]
