"""What the command-line applications (`tunekit train`, the experiments) share to build and train models on a
machine with no hub access: tokenizers trained in memory, and checks that a local model folder holds what
``from_pretrained`` will read. Needs the ``hf`` extra."""
