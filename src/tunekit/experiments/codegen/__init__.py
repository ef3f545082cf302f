"""The toolkit of the code-generation experiments (`tunekit run backdoor`, `tunekit run descriptive`), and the
corpus the classification experiments label.

`data` parses (docstring line, code) pairs out of a tree of ``.py`` files (by default the standard library)
and splits them; `config` checks the options the experiments share; `tokenizer` trains the byte-level BPE
and encodes ``prompt <sep> target <eos>`` examples; `model` builds a tiny GPT-2, pre-trains it (cached) and
trains it through `tunekit.hf.TunekitTrainer`; `metrics` generates greedy continuations and scores them
(token accuracy, BLEU). An experiment imports this toolkit, never another experiment.

`data` and `config` need neither transformers nor tokenizers; the other modules do.
"""
