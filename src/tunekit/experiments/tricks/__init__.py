"""The tricks ablation (`tunekit run tricks`): the baseline classifier and the same with EMA, FGM, PGD,
R-Drop, layer-wise LR decay or mean pooling, over several seeds. `arms` defines the arms, `experiment` runs
them, `report` writes the report."""

from .experiment import TRICKS, TricksConfig

__all__ = ["TRICKS", "TricksConfig"]
