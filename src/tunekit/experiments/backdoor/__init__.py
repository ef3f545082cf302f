"""The backdoor experiment (`tunekit run backdoor`): DeCE against poisoned fine-tuning data, offline.

`data` builds (description, code) pairs and the attacks, `tokenizer` the BPE and the examples, `train` the
models (through `tunekit.hf.TunekitTrainer`), `metrics` what is measured, `report` the report; `experiment`
ties them together and registers the experiment."""

from .experiment import BACKDOOR, BackdoorConfig

__all__ = ["BACKDOOR", "BackdoorConfig"]
