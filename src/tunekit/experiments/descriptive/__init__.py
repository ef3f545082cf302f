"""The descriptive experiment (`tunekit run descriptive`): SMILE vs MLE on describing standard-library code.

Built on the code-generation toolkit (`tunekit.experiments.codegen`: the pairs, tokenizer and training loop);
`objective` holds the MLE + SMILE mixture, `arms` the objectives, `metrics` what is measured, `report` the
report; `experiment` ties them together and registers the experiment."""

from .experiment import DESCRIPTIVE, DescriptiveConfig

__all__ = ["DESCRIPTIVE", "DescriptiveConfig"]
