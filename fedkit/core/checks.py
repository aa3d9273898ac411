"""Argument checks shared by every component and kernel: one rule, one message style.

A component validates its arguments when it is constructed, with attrs validators from this
module; a kernel validates its plain arguments with the ``require_*`` functions. Both raise
with a message that names the argument, the rule and the value::

    >>> Krum(f=-1)
    ValueError: Krum.f must be an int >= 0, got -1

* a value of the wrong type (``f=1.5``, ``f=True``, ``lr="x"``) raises ``TypeError``;
* a value of the right type outside its range (``f=-1``, ``lr=nan``, ``beta1=1.0``) raises
  ``ValueError``.

Validators name the argument ``ClassName.field``; kernels pass the name themselves
(``require_int(f, "krum: f", low=0)``). :func:`check_rows` is the one check of a round's
input ``updates: Tensor[n, d]`` and its weights ``Tensor[n]``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch

from fedkit.core.components import as_weights

__all__ = [
    "check_rows",
    "int_at_least",
    "int_in",
    "number_in",
    "one_of",
    "optional",
    "positive",
    "require_int",
    "require_number",
    "require_one_of",
]

_CLOSED = ("both", "left", "right", "neither")

Validator = Callable[[Any, Any, Any], None]


def _interval(low: float, high: float, closed: str) -> str:
    """The rule as text: ``>= 0``, ``> 0``, ``in [0, 1)``."""
    lo_closed = closed in ("both", "left")
    hi_closed = closed in ("both", "right")
    if math.isinf(high) and high > 0:
        return f">= {low:g}" if lo_closed else f"> {low:g}"
    if math.isinf(low) and low < 0:
        return f"<= {high:g}" if hi_closed else f"< {high:g}"
    return f"in {'[' if lo_closed else '('}{low:g}, {high:g}{']' if hi_closed else ')'}"


def require_int(
    value: object, name: str, *, low: int | None = None, high: int | None = None
) -> int:
    """``value`` as an int (``bool`` refused) with ``low <= value <= high``, or an error
    naming ``name``: ``TypeError`` for a non-int, ``ValueError`` for one out of range."""
    if low is not None and high is not None:
        rule = f"an int in [{low}, {high}]"
    elif low is not None:
        rule = f"an int >= {low}"
    elif high is not None:
        rule = f"an int <= {high}"
    else:
        rule = "an int"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {rule}, got {value!r} ({type(value).__name__})")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return int(value)


def require_number(
    value: object,
    name: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    closed: str = "both",
) -> float:
    """``value`` as a finite float inside the interval from ``low`` to ``high`` (``closed``:
    ``"both"``, ``"left"``, ``"right"`` or ``"neither"`` says which ends belong to it), or an
    error naming ``name``. NaN and ±Inf are always refused."""
    if closed not in _CLOSED:
        raise ValueError(f"closed must be one of {_CLOSED}, got {closed!r}")
    rule = f"a finite number {_interval(low, high, closed)}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {rule}, got {value!r} ({type(value).__name__})")
    v = float(value)
    lo_ok = v >= low if closed in ("both", "left") else v > low
    hi_ok = v <= high if closed in ("both", "right") else v < high
    if not (math.isfinite(v) and lo_ok and hi_ok):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def require_one_of(value: object, name: str, values: Iterable[object]) -> object:
    """``value`` if it is one of ``values``, else a ``ValueError`` naming ``name``."""
    values = tuple(values)
    if value not in values:
        raise ValueError(f"{name} must be one of {values!r}, got {value!r}")
    return value


def _label(instance: object, attribute: Any) -> str:
    return f"{type(instance).__name__}.{attribute.name}"


def int_at_least(low: int) -> Validator:
    """attrs validator: an int (not a bool) ``>= low``."""

    def validate(instance: object, attribute: Any, value: object) -> None:
        require_int(value, _label(instance, attribute), low=low)

    validate.__doc__ = f"an int >= {low}"
    return validate


def int_in(low: int, high: int) -> Validator:
    """attrs validator: an int (not a bool) with ``low <= value <= high``."""

    def validate(instance: object, attribute: Any, value: object) -> None:
        require_int(value, _label(instance, attribute), low=low, high=high)

    return validate


def number_in(low: float = -math.inf, high: float = math.inf, *, closed: str = "both") -> Validator:
    """attrs validator: a finite real number in the interval (see :func:`require_number`)."""
    if closed not in _CLOSED:
        raise ValueError(f"closed must be one of {_CLOSED}, got {closed!r}")

    def validate(instance: object, attribute: Any, value: object) -> None:
        require_number(value, _label(instance, attribute), low=low, high=high, closed=closed)

    return validate


def positive() -> Validator:
    """attrs validator: a finite number ``> 0``."""
    return number_in(0.0, math.inf, closed="neither")


def one_of(values: Iterable[object]) -> Validator:
    """attrs validator: the value is one of ``values``."""
    values = tuple(values)

    def validate(instance: object, attribute: Any, value: object) -> None:
        require_one_of(value, _label(instance, attribute), values)

    return validate


def optional(validator: Validator) -> Validator:
    """attrs validator: None, or a value that passes ``validator``."""

    def validate(instance: object, attribute: Any, value: object) -> None:
        if value is not None:
            validator(instance, attribute, value)

    return validate


def floating_tensor(value: object, who: str, what: str, shape: str) -> torch.Tensor:
    """``value`` as a floating ``torch.Tensor`` with as many dimensions as ``shape`` names
    (``"[n, d]"``, ``"[d]"``), else a TypeError/ValueError saying ``who: what must ...``."""
    lead = f"{who}: " if who else ""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{lead}{what} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim != shape.count(",") + 1:
        raise ValueError(f"{lead}{what} must have shape {shape}, got {tuple(value.shape)}")
    if not torch.is_floating_point(value):
        raise TypeError(f"{lead}{what} must be floating point, got {value.dtype}")
    return value


def check_rows(
    updates: torch.Tensor,
    weights: torch.Tensor | None,
    who: str,
    *,
    require_active: bool = False,
    allow_empty: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a round's input: ``updates`` a floating ``Tensor[n, d]`` with ``n >= 1`` and
    ``weights`` a finite non-negative ``Tensor[n]`` (ones when None). Returns ``(updates,
    weights)`` with the weights as a float tensor on the updates' device. With
    ``require_active`` at least one weight must be positive; ``allow_empty`` accepts
    ``n = 0``. Messages start with ``who`` (none when empty)."""
    lead = f"{who}: " if who else ""
    floating_tensor(updates, who, "updates", "[n, d]")
    n = updates.shape[0]
    if n == 0 and not allow_empty:
        raise ValueError(f"{lead}updates has no rows (n = 0)")
    try:
        w = as_weights(weights, n, updates)
    except ValueError as err:
        raise ValueError(f"{lead}{err}") from None
    if require_active and not bool((w > 0).any()):
        raise ValueError(f"{lead}every weight is zero: no client to aggregate")
    return updates, w
