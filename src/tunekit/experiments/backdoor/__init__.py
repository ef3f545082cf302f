"""The backdoor experiment (`tunekit run backdoor`): DeCE against poisoned fine-tuning data, offline.

Built on the code-generation toolkit (`tunekit.experiments.codegen`: the pairs, the tokenizer, the model and
its training, the clean-quality metrics); `attack` is the trigger, the payload and the poisoning, `arms` the
objectives, `metrics` the attack success rates, `report` the report; `experiment` ties them together and
registers the experiment."""

from .experiment import BACKDOOR, BackdoorConfig

__all__ = ["BACKDOOR", "BackdoorConfig"]
