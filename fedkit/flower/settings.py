"""The Flower run config (``[tool.flwr.app.config]``, overridden by ``flwr run -c``) as a value,
and the task and strategy it names. Server and clients read the same run config, so they
build the same task (same seed, same partitions) and the same strategy.

Keys (all optional; defaults below): ``task`` (``"digits"``, ``"synthetic"``, ``"so100"``
or ``"module:attr"`` naming a task or a factory taking ``(settings)``), ``task-clients``,
``task-model``, ``task-hidden``, ``task-dir`` (a data directory; ``so100``: its offline
fixture, see :mod:`fedkit.tasks.so100.run_config`), ``seed``, ``rounds``, ``strategy``
(``""``: built from ``lr``, ``local-epochs``, ``batch-size``, ``clients-per-round``
(0 = all), ``quorum``; else ``"module:attr"`` naming a :class:`~fedkit.strategy.Strategy`
or a factory taking ``(settings)``), ``round-deadline`` and ``sample-timeout`` (seconds),
``min-nodes`` (0 = the quorum), ``poll-interval`` (s), ``eval-every``, ``checkpoint-dir``,
``keep-checkpoints``, ``log-dir`` (``""`` = none), ``registry`` (the node registry file;
``""``: ``log-dir/registry.json``), ``resume`` (continue from the newest checkpoint of the
same configuration; without it the checkpoint directory must be empty).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import attrs

from fedkit.client import ClientConfig
from fedkit.strategy import Strategy

DEFAULTS: dict[str, Any] = {
    "task": "digits",
    "task-clients": 3,
    "task-model": "mlp",
    "task-hidden": 32,
    "task-dir": "",
    "seed": 0,
    "rounds": 2,
    "strategy": "",
    "lr": 0.05,
    "local-epochs": 1,
    "batch-size": 32,
    "clients-per-round": 0,
    "quorum": 1,
    "round-deadline": 120.0,
    "sample-timeout": 60.0,
    "min-nodes": 0,
    "poll-interval": 0.2,
    "eval-every": 1,
    "checkpoint-dir": "",
    "keep-checkpoints": 3,
    "log-dir": "",
    "registry": "",
    "resume": False,
}


@attrs.frozen
class Settings:
    """A run config with the defaults filled in (``values``), plus typed accessors."""

    values: dict[str, Any]

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, Any]) -> Settings:
        unknown = sorted(set(run_config) - set(DEFAULTS))
        values = {**DEFAULTS, **{k: v for k, v in run_config.items() if k in DEFAULTS}}
        if unknown:
            values["_unknown"] = unknown
        return cls(values=values)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def rounds(self) -> int:
        return int(self.values["rounds"])

    @property
    def seed(self) -> int:
        return int(self.values["seed"])

    def path(self, name: str) -> str | None:
        """A directory setting, ``None`` when empty."""
        value = str(self.values[name])
        return value or None


def resolve(ref: str) -> Any:
    """The object named by ``"package.module:attr"``."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:attr', got {ref!r}")
    return getattr(importlib.import_module(module), attr)


def build_task(settings: Settings) -> Any:
    """The task named by ``task`` (every random choice drawn from ``seed``)."""
    from fedkit import tasks

    name = str(settings["task"])
    if name == "digits":
        return tasks.digits(
            int(settings["task-clients"]),
            model=str(settings["task-model"]),
            hidden=(int(settings["task-hidden"]),),
            key=settings.seed,
        )
    if name == "synthetic":
        return tasks.synthetic(num_users=int(settings["task-clients"]), key=settings.seed)
    if name == "so100":
        from fedkit.tasks.so100.run_config import so100_from_settings

        return so100_from_settings(settings)
    if ":" in name:
        found = resolve(name)
        return found(settings) if callable(found) else found
    raise ValueError(f"unknown task {name!r}: use 'digits', 'synthetic', 'so100' or 'module:attr'")


def build_strategy(settings: Settings) -> Strategy:
    """The strategy named by ``strategy``, or FedAvg built from the plain keys."""
    ref = str(settings["strategy"])
    if ref:
        found = resolve(ref)
        strategy = found(settings) if callable(found) and not isinstance(found, Strategy) else found
        if not isinstance(strategy, Strategy):
            raise TypeError(f"{ref} is not a fedkit Strategy (got {type(strategy).__name__})")
        return strategy
    per_round = int(settings["clients-per-round"])
    return Strategy(
        client=ClientConfig(
            epochs=int(settings["local-epochs"]),
            batch_size=int(settings["batch-size"]) or None,
            lr=float(settings["lr"]),
        ),
        clients_per_round=per_round or None,
        quorum=int(settings["quorum"]),
    )
