"""What the command-line applications (`tunekit train`, the experiments) share to build, train and score
models on a machine with no hub access: tokenizers trained in memory (`tokenizers`: a byte-level BPE and a
deterministic WordPiece), the Trainer's quiet arguments and an epoch-end hook (`training`), macro-F1
(`metrics`), and checks that a local model folder holds what ``from_pretrained`` will read (`folders`).
Needs the ``hf`` extra; `metrics` the ``cli`` extra (scikit-learn)."""
