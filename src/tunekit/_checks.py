"""Checks of scalar options shared by the objectives and the tricks: user errors are `ValueError`s that
name the bad value."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping

from torch import Tensor


def check_fields(check: Callable[..., None], owner: object, keywords: Mapping[str, str]) -> None:
    """Run another component's option check on fields of `owner` that it names otherwise: ``check(**{keyword:
    owner.field})`` for field -> keyword in `keywords`; its ValueError then names the field, not the keyword
    (``decay must be ...`` from `EMA.check_options` becomes ``ema_decay must be ...``)."""
    try:
        check(**{keyword: getattr(owner, field) for field, keyword in keywords.items()})
    except ValueError as error:
        message = str(error)
        for field, keyword in keywords.items():
            if message.startswith(f"{keyword} "):
                raise ValueError(field + message[len(keyword) :]) from None
        raise


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def check_fraction(name: str, value: float, *, zero_ok: bool, one_ok: bool) -> None:
    """Check that `value` is a real number in [0, 1], with the ends allowed as the flags say."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value <= 1
    if not ok or (value == 0 and not zero_ok) or (value == 1 and not one_ok):
        interval = f"{'[' if zero_ok else '('}0, 1{']' if one_ok else ')'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


def check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_integer(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")


def check_non_negative(name: str, value: float, *, positive: bool = False) -> None:
    """Check that `value` is a finite real number >= 0 (> 0 with `positive`)."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and 0 <= value < math.inf
    if not ok or (positive and value == 0):
        raise ValueError(f"{name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")


def check_flag(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")


def describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor"
    return type(value).__name__


def check_count(name: str, value: int, *, minimum: int) -> None:
    """Check that `value` is an integer (not a bool) >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
