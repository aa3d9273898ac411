"""The in-process transport: an engine trains the sampled clients in this process, the
adversary plays its clients, and simulated faults decide what reaches the server.

Per round: jobs for the clients asked to train (the adversary poisons the data of its
clients); the engine trains them (:class:`~fedkit.simulation.SequentialEngine` or the
vectorised one); the adversary rewrites its rows of the update matrix, knowing what its
threat model allows; the replies go through the fault plan
(:func:`fedkit.simulation.delivery.deliver`; the transport keeps its replay memory between
rounds, as deep as the fault model's ``replay_depth``, for stale-content faults). Fault
models get the run-level fault key and fold in the round themselves, so a fault that spans
rounds (a crash lasting k rounds, a partitioned group) stays consistent. A fault never stops the run.

Phases (:meth:`fedkit.run.driver.Run.phase`, spans under tracing): ``send`` is the local
training, with one ``client.train`` inside per trained client for the sequential engine
(which then trains one job per call: the same results) and one for the whole batch for any
other engine (attribute ``clients``); ``collect`` is the simulated delivery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import attrs
import torch

from fedkit.core.keys import fold_in, split
from fedkit.protocols import Adversary, FaultModel, NoFaults
from fedkit.replies import Reply
from fedkit.run.client_state import apply_worker_momentum
from fedkit.run.plan import RoundPlan
from fedkit.run.records import describe
from fedkit.run.transport import Exchange
from fedkit.simulation.delivery import ReplayMemory, deliver, replay_depth
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.simulation.sequential import SequentialEngine
from fedkit.strategy import ServerState, Strategy
from fedkit.tasks.base import SupervisedTask


@attrs.define(eq=False)
class InProcessTransport:
    """Trains with ``engine`` in this process (module doc); ``requested`` is the engine name
    the caller asked for (``"auto"`` may pick either)."""

    engine: Any
    faults: FaultModel = attrs.field(factory=NoFaults)
    requested: str = "auto"
    checkpoint_every: int | None = None
    run: Any = None
    replay: ReplayMemory = attrs.field(factory=ReplayMemory)  # for stale-content faults

    @property
    def name(self) -> str:
        return self.engine.name

    def start(self, run: Any) -> None:
        self.run = run
        self.replay = ReplayMemory(depth=replay_depth(self.faults))

    def stop(self) -> None:
        self.run = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requested": self.requested,
            "faults": describe(self.faults),
            "checkpoint_every": self.checkpoint_every,
        }

    def exchange(self, state: ServerState, plan: RoundPlan) -> Exchange:
        run = self.run
        with run.phase("send", clients=len(plan.clients)):
            engine = PhasedEngine(self.engine, run.phase)
            momentum = None
            if run.strategy.client.worker_momentum > 0:
                momentum = run.client_states.momentum_rows(
                    plan.clients, run.num_clients, state.params
                )
            local, updates = train_planned(
                run.task,
                run.strategy,
                run.adversary,
                engine,
                state.params,
                plan,
                momentum,
                controlled=run.controlled,
            )
        sizes, losses = local.num_examples.tolist(), local.loss.tolist()
        steps, trained = local.steps.tolist(), local.trained.tolist()
        clients = plan.clients.tolist()
        replies: list[Reply | None] = [
            Reply(
                client=c,
                round=plan.round,
                update=updates[i],
                num_examples=sizes[i],
                metrics={"loss": losses[i], "steps": steps[i], **local.metrics[i]},
            )
            if trained[i]
            else None
            for i, c in enumerate(clients)
        ]
        with run.phase("collect"):
            arrived = deliver(
                replies,
                self.faults.plan(plan.round, plan.clients, run.keys.faults),
                deadline=run.strategy.deadline,
                key=split(plan.keys.faults)[1],
                memory=self.replay,
            )
        self.replay = arrived.memory
        lost = dict(arrived.lost)
        dropped = int((~local.trained).sum())
        if dropped:
            lost["straggler"] = dropped
        stats = {c: (losses[i], sizes[i]) for i, c in enumerate(clients) if trained[i]}
        kept = {}
        if run.strategy.client.worker_momentum > 0:  # the honest momenta the clients keep
            kept = {c: local.updates[i] for i, c in enumerate(clients) if trained[i]}
        return Exchange(
            client_state=kept,
            replies=list(arrived.replies),
            lost=lost,
            faults=arrived.faults,
            client_stats=stats,
            server_crash=arrived.server_crash,
        )


@attrs.frozen
class PhasedEngine:
    """``engine`` with its training in ``client.train`` phases of ``phase`` (the run's
    :meth:`~fedkit.run.driver.Run.phase`): one per job for the sequential engine, one for
    the whole call otherwise (module doc)."""

    engine: Any
    phase: Callable[..., AbstractContextManager[Any]]

    @property
    def name(self) -> str:
        return self.engine.name

    def train(
        self, task: Any, params: torch.Tensor, jobs: Sequence[ClientJob], cfg: Any
    ) -> LocalResults:
        if type(self.engine) is not SequentialEngine or len(jobs) <= 1:
            clients = [j.client for j in jobs]
            with self.phase("client.train", clients=clients, batched=True):
                return self.engine.train(task, params, jobs, cfg)
        parts = []
        for job in jobs:
            if job.work <= 0:  # a dropped straggler: not trained, no span
                parts.append(self.engine.train(task, params, [job], cfg))
                continue
            with self.phase("client.train", client=job.client, work=job.work):
                parts.append(self.engine.train(task, params, [job], cfg))
        return LocalResults(
            updates=torch.cat([r.updates for r in parts]),
            num_examples=torch.cat([r.num_examples for r in parts]),
            loss=torch.cat([r.loss for r in parts]),
            steps=torch.cat([r.steps for r in parts]),
            trained=torch.cat([r.trained for r in parts]),
            metrics=tuple(m for r in parts for m in r.metrics),
        )


def planned_jobs(
    task: Any, adversary: Adversary, plan: RoundPlan, controlled: torch.Tensor | None = None
) -> list[ClientJob]:
    """One job per sampled client; the adversary poisons its clients' data, or gives them
    none when its rows ignore their updates (``needs_training`` False: they do not train).
    An adversary with ``uses_controlled`` also gets ``controlled``, the run's controlled ids
    (a DBA poison assigns trigger parts by rank among them)."""
    supervised = isinstance(task, SupervisedTask)
    k_data = plan.keys.data
    trains = getattr(adversary, "needs_training", True)
    extra = {"controlled": controlled} if getattr(adversary, "uses_controlled", False) else {}
    out = []
    for c, units, bad in zip(
        plan.clients.tolist(), plan.work.tolist(), plan.byzantine.tolist(), strict=True
    ):
        x = y = None
        if supervised:
            x, y = task.client_x[c], task.client_y[c]
            if bad and units > 0 and not trains:
                x, y = x[:0], y[:0]
            elif bad and units > 0:
                x, y = adversary.poison_data(c, x, y, fold_in(k_data, c), **extra)
        out.append(ClientJob(client=c, work=units, key=plan.keys.client(c), x=x, y=y))
    return out


def train_planned(
    task: Any,
    strategy: Strategy,
    adversary: Adversary,
    engine: Any,
    params: torch.Tensor,
    plan: RoundPlan,
    momentum: torch.Tensor | None = None,
    *,
    controlled: torch.Tensor | None = None,
) -> tuple[LocalResults, torch.Tensor]:
    """The planned round's local training as the simulation computes it: every sampled
    client trains (the adversary's on poisoned data), sends its worker momentum instead of
    its update when the client config has one (``momentum``: the sampled clients' momenta
    before the round, ``[m, d]``; :mod:`fedkit.run.client_state`), then the adversary
    rewrites its rows knowing what its threat model allows. ``(local results, update rows
    [m, d])``; with worker momentum, ``local.updates`` holds the clients' new momenta. The
    deployment's adversary nodes call this too, on their own copy of the experiment.
    ``controlled``: the run's controlled ids (:func:`planned_jobs`). Byzantine rows report
    ``adversary.claimed_examples`` when it has one (e.g. the honest clients' mean count)."""
    jobs = planned_jobs(task, adversary, plan, controlled)
    local = engine.train(task, params, jobs, strategy.client)
    beta = strategy.client.worker_momentum
    if beta > 0:
        previous = momentum if momentum is not None else torch.zeros_like(local.updates)
        sent, _ = apply_worker_momentum(local.updates, previous, local.trained, beta)
        local = attrs.evolve(local, updates=sent)
    updates, byz = local.updates, plan.byzantine
    if bool(byz.any()):
        weights = local.num_examples.to(updates.dtype)
        updates = adversary.poison_updates(updates, byz, weights, plan.round, plan.keys.updates)
        if tuple(updates.shape) != tuple(local.updates.shape):
            raise ValueError(
                f"adversary.poison_updates returned shape {tuple(updates.shape)}, "
                f"expected {tuple(local.updates.shape)}"
            )
        claim = getattr(adversary, "claimed_examples", None)
        if claim is not None:
            local = attrs.evolve(local, num_examples=claim(local.num_examples, byz))
    return local, updates
