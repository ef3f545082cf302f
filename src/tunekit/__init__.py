"""tunekit: drop-in training objectives and fine-tuning tricks for transformer models."""

__version__ = "0.1.0"
