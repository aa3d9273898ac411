"""A SuperNode the adversary controls: its ClientApp attacks the way the simulation's
adversary does.

The adversary's knowledge is what the simulation gives it, made explicit: its own copy of
the resolved experiment config (a file named by the node config key ``adversary``, written
by whoever sets the node up), hence the run's seed — which clients are sampled each round,
their work and keys — and, for an omniscient attack, every client's data. For each request
to a client it controls, the node recomputes the round as the simulation does
(:func:`fedkit.simulation.transport.train_planned`: the sampled clients' honest updates,
its clients' data poisoned, its rows rewritten by the attack) and sends its client's row.
A request that does not match its copy (another round key: another seed or config) is an
error, not a silent guess. Requests for a client it does not control are answered
honestly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from experiments.build import Experiment, build
from fedkit.core.keys import key as root_key
from fedkit.flower.client import HonestClient, Trained
from fedkit.flower.node_state import keep_momentum, momentum_before
from fedkit.flower.requests import TrainRequest
from fedkit.run.client_state import ClientStates
from fedkit.run.plan import RunKeys, plan_round
from fedkit.simulation import SequentialEngine
from fedkit.simulation.transport import train_planned
from fedkit.strategy import ServerState


class AdversaryMismatch(RuntimeError):
    """The adversary's copy of the experiment does not describe the running one."""


@attrs.define(eq=False)
class AdversaryClient:
    """The runtime of a node the adversary controls (module doc)."""

    exp: Experiment
    honest: HonestClient
    keys: RunKeys = attrs.field(init=False)
    controlled: torch.Tensor = attrs.field(init=False)
    node_state: Any = None  # Flower's Context.state, set per message (worker momentum)

    def __attrs_post_init__(self) -> None:
        self.keys = RunKeys.of(root_key(self.exp.seed))
        n = int(self.exp.task.num_clients)
        chosen = self.exp.adversary.controlled(n, self.keys.controlled)
        self.controlled = torch.unique(torch.as_tensor(chosen, dtype=torch.int64))

    @classmethod
    def from_file(cls, path: str | Path, node_config: Mapping[str, Any]) -> AdversaryClient:
        cfg = json.loads(Path(path).read_text())
        exp = build(cfg)
        return cls(exp, HonestClient.from_node_config(exp.task, node_config))

    @property
    def spec(self) -> Any:
        return self.exp.task.spec

    def train(self, request: TrainRequest, params: torch.Tensor) -> Any:
        if request.client not in set(self.controlled.tolist()):
            self.honest.node_state = self.node_state
            return self.honest.train(request, params)
        exp = self.exp
        state = ServerState(round=request.round - 1, params=params, chain_state=None)
        plan = plan_round(
            exp.strategy, state, int(exp.task.num_clients), self.controlled, self.keys
        )
        if request.key != plan.keys.client(request.client):
            raise AdversaryMismatch(
                f"round {request.round}: the server's key for client {request.client} is not the "
                "one the adversary's copy of the experiment derives (another seed or config)"
            )
        row = plan.clients.tolist().index(request.client)
        n = int(exp.task.num_clients)
        momentum = None
        if exp.strategy.client.worker_momentum > 0:  # replay every client's momentum
            before = momentum_before(self.node_state, request.round)
            states = ClientStates(momentum=before)
            momentum = states.momentum_rows(plan.clients, n, params)
        local, updates = train_planned(
            exp.task,
            exp.strategy,
            exp.adversary,
            SequentialEngine(),
            params,
            plan,
            momentum,
            controlled=self.controlled,
        )
        if momentum is not None:
            trained = torch.nonzero(local.trained).flatten()
            after = states.with_rows(plan.clients[trained], local.updates[trained], n)
            full_before = (
                states.momentum if states.momentum is not None else torch.zeros_like(after.momentum)
            )
            keep_momentum(self.node_state, request.round, full_before, after.momentum)
        metrics = {"loss": float(local.loss[row]), "steps": float(local.steps[row])}
        return Trained(updates[row].clone(), int(local.num_examples[row]), metrics, request.client)
