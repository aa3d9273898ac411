"""Renamed arguments: keep an old keyword working for a release, with a warning.

``renamed_arguments(old="new")`` decorates a function or an attrs class (its ``__init__`` is
wrapped, so ``attrs.fields``, ``attrs.evolve``, pickling and Hydra's ``instantiate`` see only
the new names). A call with the old keyword warns and forwards the value; a call with both
raises ``TypeError``.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

REMOVED_IN = "0.3"


def _translate(qualname: str, renames: dict[str, str], kwargs: dict[str, Any]) -> None:
    """Move every old keyword of ``kwargs`` to its new name, in place, warning once each."""
    for old, new in renames.items():
        if old not in kwargs:
            continue
        if new in kwargs:
            raise TypeError(
                f"{qualname}: got both {old!r} and its new name {new!r}; pass only {new!r}"
            )
        warnings.warn(
            f"{qualname}: argument {old!r} is renamed {new!r}; {old!r} will be removed in "
            f"{REMOVED_IN}",
            DeprecationWarning,
            stacklevel=3,
        )
        kwargs[new] = kwargs.pop(old)


def renamed_arguments(**renames: str) -> Callable[[T], T]:
    """Decorator: accept each keyword ``old`` of ``renames`` (``old="new"``) as a deprecated
    spelling of ``new``. Works on a function and on a class (wrapping its ``__init__``)."""
    for old, new in renames.items():
        if not isinstance(new, str) or not new.isidentifier() or new == old:
            raise ValueError(f"renamed_arguments: bad rename {old!r} -> {new!r}")

    def decorate(obj: T) -> T:
        if isinstance(obj, type):
            init = obj.__init__
            qualname = obj.__qualname__

            @functools.wraps(init)
            def __init__(self, *args, **kwargs):
                _translate(qualname, renames, kwargs)
                init(self, *args, **kwargs)

            __init__.__renamed_arguments__ = dict(renames)
            obj.__init__ = __init__
            obj.__renamed_arguments__ = {**getattr(obj, "__renamed_arguments__", {}), **renames}
            return obj
        if not callable(obj):
            raise TypeError(f"renamed_arguments: cannot decorate {obj!r}")
        qualname = getattr(obj, "__qualname__", repr(obj))

        @functools.wraps(obj)
        def wrapper(*args, **kwargs):
            _translate(qualname, renames, kwargs)
            return obj(*args, **kwargs)

        wrapper.__renamed_arguments__ = dict(renames)
        return wrapper  # type: ignore[return-value]

    return decorate
