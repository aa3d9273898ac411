"""The client side of a deployment: what a node does with a ``train`` request.

A :class:`ClientRuntime` gets the parsed request (:mod:`fedkit.flower.requests`) and the
global parameters and answers :class:`Trained` or :class:`Refused`; the ClientApp
(:func:`fedkit.flower.apps.make_client_app`) does the decoding and encoding around it.
:class:`HonestClient` is the node fedkit runs: it trains its own data (the partition its
node config names) with the task's ``train_client``, the update the simulation computes for
that client, after checking the request against the node's privacy floor; with worker
momentum it sends and keeps its momentum over rounds (:mod:`fedkit.flower.node_state`).

Keys. The server proposes each client's key (the simulation's ``fold_in(k_clients, c)``),
so a deployment reproduces a simulation. Under client DP-SGD the key also draws the Poisson
batches and the noise, and a server that knows them could subtract the noise: an honest
node therefore mixes secret local entropy into the key whenever DP-SGD is on, unless its
node config opts into ``dp-noise = "server-key"`` (reproducible runs in tests).

Node config (``--node-config``): ``partition-id`` (required: the data this node holds),
``privacy-floor`` (JSON, :class:`~fedkit.flower.privacy_floor.PrivacyFloor`), ``dp-noise``
(``"local"`` default, or ``"server-key"``), and, for fault-injection tests only, ``corrupt``
(one of :data:`fedkit.simulation.delivery.CORRUPTIONS`, or ``"crash"``: the ClientApp
raises) and ``impersonate`` (the reply claims this client id instead of the one asked).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import attrs
import torch

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import fold_in
from fedkit.flower.node_state import keep_momentum, momentum_before
from fedkit.flower.privacy_floor import PrivacyFloor
from fedkit.flower.requests import TrainRequest
from fedkit.protocols import Task
from fedkit.simulation.delivery import CORRUPTIONS, corrupt


@attrs.frozen(eq=False)
class Trained:
    """A trained reply: the update (a flat tensor; raw bytes from a broken client), the
    examples it was trained on, metrics (``loss``, ``steps``, ...) and the client id the
    reply claims."""

    update: Any
    num_examples: int
    metrics: dict[str, float]
    client: int


@attrs.frozen
class Refused:
    """The node declines the request; ``reason`` starts with a short code
    (``noise_below_floor: ...``)."""

    reason: str
    client: int

    @property
    def code(self) -> str:
        return self.reason.split(":", 1)[0]


@runtime_checkable
class ClientRuntime(Protocol):
    """Answers one ``train`` request (module doc)."""

    spec: ParamSpec

    def train(self, request: TrainRequest, params: torch.Tensor) -> Trained | Refused: ...


class NodeConfigError(ValueError):
    """The node config is missing a key or holds a bad value."""


def partition_of(node_config: Mapping[str, Any]) -> int:
    """The client data (partition) this SuperNode holds."""
    try:
        return int(node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise NodeConfigError(
            "this SuperNode needs an integer 'partition-id' in --node-config"
        ) from None


@attrs.define(eq=False)
class HonestClient:
    """Trains ``partition`` of ``task`` as asked, within ``floor`` (module doc)."""

    task: Task
    partition: int
    floor: PrivacyFloor | None = None
    server_key_noise: bool = False
    corrupt: str = ""
    impersonate: int | None = None
    node_state: Any = None  # Flower's Context.state, set per message (worker momentum)

    @classmethod
    def from_node_config(
        cls, task: Task, node_config: Mapping[str, Any], *, partition: int | None = None
    ) -> HonestClient:
        """The runtime a node config describes; ``partition`` overrides ``partition-id``
        (nodes of Flower's simulation engine train whichever client they are assigned)."""
        noise = str(node_config.get("dp-noise", "local"))
        if noise not in ("local", "server-key"):
            raise NodeConfigError(f"dp-noise must be 'local' or 'server-key', got {noise!r}")
        fault = str(node_config.get("corrupt", ""))
        if fault and fault != "crash" and fault not in CORRUPTIONS:
            raise NodeConfigError(f"corrupt must be one of {CORRUPTIONS} or 'crash', got {fault!r}")
        other = node_config.get("impersonate")
        return cls(
            task=task,
            partition=partition_of(node_config) if partition is None else partition,
            floor=PrivacyFloor.from_node_config(node_config.get("privacy-floor")),
            server_key_noise=noise == "server-key",
            corrupt=fault,
            impersonate=None if other in (None, "") else int(other),
        )

    @property
    def spec(self) -> ParamSpec:
        return self.task.spec

    def train(self, request: TrainRequest, params: torch.Tensor) -> Trained | Refused:
        cfg, examples = request.config, int(self.task.client_size(self.partition))
        if self.floor is not None:
            reason = self.floor.refusal(cfg, examples, request.work)
            if reason is not None:
                return Refused(reason, request.client)
        key = request.key
        if cfg.dp_sgd is not None and not self.server_key_noise:
            key = fold_in(key, int.from_bytes(os.urandom(8), "little"))
        with torch.no_grad():  # as the engines call it
            update, n, metrics = self.task.train_client(
                params, self.partition, cfg, request.work, key
            )
        if cfg.worker_momentum > 0 and request.work > 0:
            before = momentum_before(self.node_state, request.round)
            before = torch.zeros_like(update) if before is None else before.to(update)
            update = cfg.worker_momentum * before + (1.0 - cfg.worker_momentum) * update
            keep_momentum(self.node_state, request.round, before, update)
        if self.corrupt == "crash":
            raise RuntimeError(f"partition {self.partition}: injected crash")
        if self.corrupt:
            update = corrupt(update, CORRUPTIONS.index(self.corrupt), request.key)
        claimed = request.client if self.impersonate is None else self.impersonate
        numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
        return Trained(update, int(n), numbers, claimed)
