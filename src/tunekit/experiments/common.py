"""Small helpers every experiment uses: the key of cached work, and the torch thread count."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["cache_key", "use_threads"]


def cache_key(*parts: Any) -> str:
    """16 hex digits of the SHA-256 of `parts` as JSON (keys sorted, anything else as ``str``): the same
    inputs name the same cache folder, any change a new one.

    Example::

        >>> cache_key([1, 2], {"b": 1, "a": 2}) == cache_key([1, 2], {"a": 2, "b": 1})
        True
        >>> len(cache_key("x")), cache_key("x") == cache_key("y")
        (16, False)
    """
    return hashlib.sha256(json.dumps(parts, default=str, sort_keys=True).encode()).hexdigest()[:16]


def use_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)``; 0 keeps torch's default."""
    if threads:
        import torch  # the experiments package imports without torch (`tunekit run --list` stays fast)

        torch.set_num_threads(threads)
