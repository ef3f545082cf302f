"""The dtype every objective computes in (shared with the integrations: `tunekit._dtypes`)."""

from .._dtypes import compute_dtype_for, upcast

__all__ = ["compute_dtype_for", "upcast"]
