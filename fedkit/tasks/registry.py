"""Tasks by name, for configs that arrive as data (a Flower ClientApp building its task from
the run's config): a closed set of builders, nothing imported by a name a message carries.

:func:`build_task` takes a task config of the form Hydra composes (``{"_target_": name,
arg: value, ...}``), looks ``name`` up in :data:`TASKS` and calls the builder with the
arguments its signature accepts; an unknown name, an unknown or missing argument, or a
nested ``_target_`` raises :class:`TaskConfigError` naming it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from fedkit.tasks import builders


class TaskConfigError(ValueError):
    """A task config names a task or an argument outside the closed set."""


def _so100(**kwargs: Any) -> Any:
    from fedkit.tasks.so100.task import so100  # lerobot: only when asked for

    return so100(**kwargs)


def _so100_fixture(**kwargs: Any) -> Any:
    from fedkit.tasks.so100.offline import so100_fixture

    return so100_fixture(**kwargs)


def _lazy_signature(name: str) -> inspect.Signature:
    if name == "fedkit.tasks.so100.so100":
        from fedkit.tasks.so100.task import so100

        return inspect.signature(so100)
    from fedkit.tasks.so100.offline import so100_fixture

    return inspect.signature(so100_fixture)


TASKS: dict[str, Callable[..., Any]] = {
    "fedkit.tasks.digits": builders.digits,
    "fedkit.tasks.fashion_mnist": builders.fashion_mnist,
    "fedkit.tasks.synthetic": builders.synthetic,
    "fedkit.tasks.so100.so100": _so100,
    "fedkit.tasks.so100.offline.so100_fixture": _so100_fixture,
}
_LAZY = ("fedkit.tasks.so100.so100", "fedkit.tasks.so100.offline.so100_fixture")


def _signature(name: str) -> inspect.Signature:
    return _lazy_signature(name) if name in _LAZY else inspect.signature(TASKS[name])


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        if "_target_" in value:
            raise TaskConfigError(f"{where}: a nested _target_ is not accepted in a task config")
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TaskConfigError(f"{where}: {type(value).__name__} values are not accepted")


def build_task(config: Mapping[str, Any]) -> Any:
    """The task ``config`` describes (module doc)."""
    if not isinstance(config, Mapping):
        raise TaskConfigError(f"a task config must be a mapping, got {type(config).__name__}")
    name = config.get("_target_")
    if name not in TASKS:
        raise TaskConfigError(f"unknown task {name!r}: known tasks are {sorted(TASKS)}")
    kwargs = {k: _plain(v, f"task.{k}") for k, v in config.items() if k != "_target_"}
    try:
        _signature(name).bind(**kwargs)
    except TypeError as exc:
        raise TaskConfigError(f"task {name}: {exc}") from None
    return TASKS[name](**kwargs)
