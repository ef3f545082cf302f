"""The Hugging Face integration: `transformers` models, tokenizers, `generate` and the Trainer.

Needs the ``hf`` extra (``pip install 'tunekit[hf]'``); the rest of tunekit depends on torch alone.
"""

try:
    import transformers  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError("tunekit.hf needs transformers and tokenizers: pip install 'tunekit[hf]'") from error

__all__: list[str] = []
