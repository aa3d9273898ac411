"""``fedkit.simulate``: run a strategy on a task in this process.

Keys. From the run key: ``k_init, k_controlled, k_rounds, k_faults = split(key, 4)``;
round ``r`` (1-based) uses ``split(fold_in(k_rounds, r), 6)`` = (sampling, work plan,
clients, adversary, corruption bytes, server chain), and client ``c`` trains with
``fold_in(k_clients, c)``. Fault models get the run-level ``k_faults`` and fold in the round
themselves, so a fault that spans rounds (a crash lasting k rounds, a partitioned group)
stays consistent.
A client's randomness therefore depends only on the run key, the round and its id — not
on the engine or on which other clients were sampled — so both engines agree and a
resumed run replays exactly the rounds an uninterrupted one would have run.

One round: sample clients; plan their work (stragglers); let the adversary poison the data
of controlled clients; train (engine); let the adversary rewrite the Byzantine rows of the
update matrix; make replies; apply the fault plan (:mod:`fedkit.simulation.delivery`);
``strategy.round`` validates and aggregates; evaluate; checkpoint. A fault never stops the
run. A fault plan with ``server_crash`` makes the engine drop its in-memory state after the
round and restore the newest checkpoint (or the initial state without one), as a restarted
server would; a round's crash fires once, so the replayed rounds run as before.

Privacy budget. With a :class:`~fedkit.protocols.PrivacyAccountant` (``accountant=`` or
``strategy.accountant``) the engine describes each round before anyone trains (who trains,
on how many examples, for how many local steps: a :class:`~fedkit.protocols.RoundSpend`),
asks the accountant for ε after it, and either runs the round and records ``epsilon`` in its
metrics, or — when that ε would exceed ``accountant.target_epsilon`` — stops: the last
completed round is evaluated and checkpointed, and ``record["run"]["stopped"]`` says why.
The ledger is checkpointed with the server state; replayed rounds after a server crash are
charged again (conservative).
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Protocol

import attrs
import torch

from fedkit.client import num_steps
from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key, fold_in, split
from fedkit.core.keys import key as root_key
from fedkit.protocols import (
    Adversary,
    FaultModel,
    NoAdversary,
    NoFaults,
    PrivacyAccountant,
    RoundSpend,
)
from fedkit.replies import Reply
from fedkit.simulation import checkpoint as ckpt
from fedkit.simulation.delivery import deliver
from fedkit.simulation.evaluation import evaluate
from fedkit.simulation.history import History
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.simulation.progress import RoundProgress
from fedkit.simulation.records import (
    FORMAT,
    TensorBoardLog,
    describe,
    final_metrics,
    jsonable,
    timings,
    totals,
    versions,
)
from fedkit.simulation.sequential import SequentialEngine
from fedkit.simulation.vectorized import VectorizedEngine, vmap_blocker
from fedkit.strategy import ServerState, Strategy

ENGINES = ("auto", "sequential", "vectorized")


class Engine(Protocol):
    name: str

    def train(
        self, task: Any, params: torch.Tensor, jobs: list[ClientJob], cfg: Any
    ) -> LocalResults: ...


def pick_engine(task: Any, strategy: Strategy, engine: str | Engine) -> Engine:
    """The engine to use; a vectorised request the task cannot honour falls back to the
    sequential engine with one warning (silently for tasks with their own training loop
    under ``"auto"``)."""
    if not isinstance(engine, str):
        return engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or an engine object, got {engine!r}")
    if engine == "sequential":
        return SequentialEngine()
    blocker = vmap_blocker(task, strategy.client)
    if blocker is None:
        return VectorizedEngine()
    if engine == "vectorized" or getattr(task, "train_client", None) is None:
        warnings.warn(
            f"vectorised engine unavailable for task {getattr(task, 'name', '?')!r}: {blocker}; "
            "using the sequential engine",
            RuntimeWarning,
            stacklevel=3,
        )
    return SequentialEngine()


def _as_key(key: Key | int) -> tuple[Key, int | None]:
    if isinstance(key, Key):
        return key, None
    if isinstance(key, int) and not isinstance(key, bool):
        return root_key(key), key
    raise TypeError(f"key must be a fedkit Key or an int seed, got {type(key).__name__}")


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> float | None:
    keep = (weights > 0) & torch.isfinite(values)
    if not bool(keep.any()):
        return None
    w = weights[keep].to(torch.float64)
    return float((values[keep] * w).sum() / w.sum())


@attrs.frozen(eq=False)
class _Plan:
    """A round decided but not yet run: sampled clients, their work and jobs, and keys."""

    round: int
    clients: torch.Tensor
    work: torch.Tensor
    straggler: torch.Tensor
    byzantine: torch.Tensor
    jobs: list[ClientJob]
    k_updates: Key
    k_faults: Key
    k_server: Key
    t0: float


class _Run:
    """The state of one simulate call that is not part of the server state."""

    def __init__(self, task, strategy, engine, adversary, faults, run_key, rounds, eval_every):
        self.task, self.strategy, self.engine = task, strategy, engine
        self.adversary, self.faults = adversary, faults
        self.rounds, self.eval_every = rounds, eval_every
        self.k_init, k_controlled, self.k_rounds, self.k_faults = split(run_key, 4)
        self.num_clients = int(task.num_clients)
        controlled = torch.as_tensor(
            adversary.controlled(self.num_clients, k_controlled), dtype=torch.int64
        )
        self.controlled = torch.unique(controlled)
        self.supervised = getattr(task, "train_client", None) is None

    def jobs(
        self,
        clients: torch.Tensor,
        work: torch.Tensor,
        byz: torch.Tensor,
        k_clients: Key,
        k_data: Key,
    ):
        out = []
        for c, units, bad in zip(clients.tolist(), work.tolist(), byz.tolist(), strict=True):
            x = y = None
            if self.supervised:
                x, y = self.task.client_x[c], self.task.client_y[c]
                if bad and units > 0:
                    x, y = self.adversary.poison_data(c, x, y, fold_in(k_data, c))
            out.append(ClientJob(client=c, work=units, key=fold_in(k_clients, c), x=x, y=y))
        return out

    def prepare(self, state: ServerState) -> _Plan:
        """Everything about the next round that is decided before training."""
        r = state.round + 1
        k_sample, k_work, k_clients, k_adv, k_faults, k_server = split(fold_in(self.k_rounds, r), 6)
        k_data, k_updates = split(k_adv)
        t0 = time.perf_counter()
        clients = self.strategy.sample(state, self.num_clients, k_sample)
        work, straggler = self.strategy.plan_work(clients, k_work)
        byz = torch.isin(clients, self.controlled)
        jobs = self.jobs(clients, work, byz, k_clients, k_data)
        return _Plan(r, clients, work, straggler, byz, jobs, k_updates, k_faults, k_server, t0)

    def spend(self, plan: _Plan) -> RoundSpend:
        """What the planned round releases (for the privacy accountant)."""
        cfg = self.strategy.client
        train = [j for j in plan.jobs if j.work > 0]
        sizes = [
            j.num_examples if self.supervised else int(self.task.client_size(j.client))
            for j in train
        ]
        return RoundSpend(
            round=plan.round,
            clients=torch.tensor([j.client for j in train], dtype=torch.int64),
            local_examples=torch.tensor(sizes, dtype=torch.int64),
            local_steps=torch.tensor(
                [num_steps(n, j.work, cfg) for n, j in zip(sizes, train, strict=True)],
                dtype=torch.int64,
            ),
            num_clients=self.num_clients,
            clients_per_round=int(plan.clients.numel()),
            dp_sgd=cfg.dp_sgd,
        )

    def round(self, state: ServerState, plan: _Plan) -> tuple[ServerState, dict[str, Any], bool]:
        r, clients, straggler, byz = plan.round, plan.clients, plan.straggler, plan.byzantine
        k_updates, k_faults, k_server, t0 = plan.k_updates, plan.k_faults, plan.k_server, plan.t0
        k_corrupt = split(k_faults)[1]
        local = self.engine.train(self.task, state.params, plan.jobs, self.strategy.client)
        updates = local.updates
        if bool(byz.any()):
            weights = local.num_examples.to(updates.dtype)
            updates = self.adversary.poison_updates(updates, byz, weights, r, k_updates)
            if tuple(updates.shape) != tuple(local.updates.shape):
                raise ValueError(
                    f"adversary.poison_updates returned shape {tuple(updates.shape)}, "
                    f"expected {tuple(local.updates.shape)}"
                )
        t1 = time.perf_counter()
        sizes, losses = local.num_examples.tolist(), local.loss.tolist()
        steps, trained = local.steps.tolist(), local.trained.tolist()
        replies: list[Reply | None] = [
            Reply(
                client=c,
                round=r,
                update=updates[i],
                num_examples=sizes[i],
                metrics={"loss": losses[i], "steps": steps[i], **local.metrics[i]},
            )
            if trained[i]
            else None
            for i, c in enumerate(clients.tolist())
        ]
        arrived = deliver(
            replies,
            self.faults.plan(r, clients, self.k_faults),
            deadline=self.strategy.deadline,
            key=k_corrupt,
        )
        lost = dict(arrived.lost)
        dropped = int((~local.trained).sum())
        if dropped:
            lost["straggler"] = dropped
        state, info = self.strategy.round(state, list(arrived.replies), k_server, clients=clients)
        t2 = time.perf_counter()
        accepted = torch.isin(clients, torch.tensor(info.accepted_clients, dtype=torch.int64))
        metrics: dict[str, Any] = {
            "round": r,
            **info.metrics(),
            "lost": lost,
            "faults": arrived.faults,
            "stragglers": int(straggler.sum()),
            "byzantine": int(byz.sum()),
            "train_loss": _weighted_mean(local.loss, local.num_examples * accepted),
        }
        if r % self.eval_every == 0 or r == self.rounds:
            metrics.update(evaluate(self.task, state.params))
        t3 = time.perf_counter()
        metrics.update(
            train_time=t1 - t0, aggregate_time=t2 - t1, eval_time=t3 - t2, wall_time=t3 - t0
        )
        return state, jsonable(metrics), arrived.server_crash


def _restore(
    state0: ServerState,
    checkpoint_dir: Path | None,
    run_key: Key,
    spec: ParamSpec,
    upto: int | None = None,
) -> tuple[ServerState, list[dict], list[dict], Any]:
    """The newest checkpoint's (of a round ``<= upto`` when given) state, history, events
    and privacy ledger (``None`` when it has none), or the initial state without a
    checkpoint (:func:`checkpoint.restore`)."""
    found = ckpt.restore(state0, checkpoint_dir, run_key, spec, upto=upto)
    return found.state, found.history, found.events, found.tree.get("ledger")


def _stop_for_budget(
    task: Any, state: ServerState, metrics: list[dict], eps: float, next_eps: float, target: float
) -> dict[str, Any]:
    """Finish a run stopped by its privacy budget: the last completed round gets test
    metrics if it has none; returns the ``stopped`` entry of the record."""
    if metrics and metrics[-1].get("test_accuracy") is None:
        metrics[-1] = {**metrics[-1], **jsonable(evaluate(task, state.params))}
    return jsonable(
        {
            "reason": "privacy_budget",
            "after_round": state.round,
            "epsilon": eps,
            "next_round_epsilon": next_eps,
            "target_epsilon": float(target),
        }
    )


def simulate(
    task: Any,
    strategy: Strategy,
    *,
    rounds: int,
    key: Key | int,
    engine: str | Engine = "auto",
    adversary: Adversary | None = None,
    faults: FaultModel | None = None,
    eval_every: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = 3,
    resume: bool = False,
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    init_params: torch.Tensor | None = None,
    accountant: PrivacyAccountant | None = None,
) -> History:
    """Run ``rounds`` rounds of ``strategy`` on ``task`` and return the :class:`History`.

    ``key``: a fedkit key or an int seed. ``engine``: ``"auto"`` (vectorised when the model
    allows it), ``"sequential"``, ``"vectorized"`` or an engine object. ``adversary`` and
    ``faults`` implement :mod:`fedkit.protocols` (no-ops by default). Test metrics every
    ``eval_every`` rounds and after the last one. Checkpoints every ``checkpoint_every``
    rounds into ``checkpoint_dir`` (newest ``keep_checkpoints`` kept); ``resume`` continues
    from the newest good one and ends bit-identical to an uninterrupted run; without
    ``resume`` the directory must hold no checkpoints (a run never picks up another run's
    checkpoints: :func:`checkpoint.require_fresh`). ``log_dir``
    gets TensorBoard scalars and ``record.json``. ``progress``: a rich progress bar
    (default: when stderr is a terminal). ``init_params`` overrides ``task.init``.
    ``accountant`` (default ``strategy.accountant``) tracks ε and stops the run before a
    round that would exceed its ``target_epsilon`` (see the module docs).
    """
    if not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative int, got {rounds!r}")
    if eval_every < 1 or checkpoint_every < 1:
        raise ValueError("eval_every and checkpoint_every must be >= 1")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a fedkit.Strategy, got {type(strategy).__name__}")
    adversary = NoAdversary() if adversary is None else adversary
    faults = NoFaults() if faults is None else faults
    if not isinstance(adversary, Adversary):
        raise TypeError(
            f"adversary {type(adversary).__name__} does not implement fedkit.protocols.Adversary"
        )
    if not isinstance(faults, FaultModel):
        raise TypeError(
            f"faults {type(faults).__name__} does not implement fedkit.protocols.FaultModel"
        )
    accountant = strategy.accountant if accountant is None else accountant
    if accountant is not None and not isinstance(accountant, PrivacyAccountant):
        raise TypeError(
            f"accountant {type(accountant).__name__} does not implement "
            "fedkit.protocols.PrivacyAccountant"
        )
    run_key, seed = _as_key(key)
    checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
    if checkpoint_dir is not None and not resume:
        ckpt.require_fresh(checkpoint_dir)  # never mix this run's checkpoints with another's
    chosen = pick_engine(task, strategy, engine)
    run = _Run(task, strategy, chosen, adversary, faults, run_key, rounds, eval_every)
    spec: ParamSpec = task.spec
    params0 = task.init(run.k_init) if init_params is None else init_params
    spec.check(params0, what="initial parameters")
    state0 = strategy.init(params0)
    ledger0 = None if accountant is None else accountant.init(run.num_clients)
    state, metrics, events, ledger = state0, [], [], ledger0
    resumed_from = None
    if resume:
        state, metrics, events, saved = _restore(state0, checkpoint_dir, run_key, spec)
        ledger = ledger0 if saved is None else saved
        resumed_from = state.round if state is not state0 else None
        if state.round > rounds:
            warnings.warn(
                f"the newest checkpoint is at round {state.round}, past rounds={rounds}: "
                "returning it as it is",
                RuntimeWarning,
                stacklevel=2,
            )
    config = describe(strategy)

    def save_checkpoint(s: ServerState) -> None:
        meta = {
            "history": metrics,
            "events": events,
            "spec": spec.to_dict(),
            "strategy": config,
            "task": getattr(task, "name", None),
        }
        tree = {"state": s, "key": run_key}
        if ledger is not None:
            tree["ledger"] = ledger
        ckpt.save(checkpoint_dir, s.round, tree, meta, keep=keep_checkpoints)

    board = None if log_dir is None else TensorBoardLog(log_dir, purge_step=state.round + 1)
    crashed: set[int] = set()
    stopped = None
    start = time.perf_counter()
    try:
        with RoundProgress(rounds, state.round, progress) as bar:
            while state.round < rounds:
                plan = run.prepare(state)
                if accountant is not None:
                    after = accountant.spend(ledger, run.spend(plan))
                    eps = float(accountant.epsilon(after))
                    target = accountant.target_epsilon
                    if target is not None and eps > float(target):
                        stopped = _stop_for_budget(
                            task, state, metrics, float(accountant.epsilon(ledger)), eps, target
                        )
                        if board is not None and metrics:
                            board.log(metrics[-1])
                        if checkpoint_dir is not None:
                            save_checkpoint(state)
                        break
                state, m, crash = run.round(state, plan)
                if accountant is not None:
                    ledger = after
                    m["epsilon"] = jsonable(eps)
                metrics.append(m)
                if board is not None:
                    board.log(m)
                bar.update(m)
                if checkpoint_dir is not None and (
                    state.round % checkpoint_every == 0 or state.round == rounds
                ):
                    save_checkpoint(state)
                if crash and state.round not in crashed:
                    crashed.add(state.round)
                    t = time.perf_counter()
                    if checkpoint_dir is None:
                        warnings.warn(
                            "the fault model crashed the server but there is no checkpoint_dir: "
                            "restarting from the initial parameters",
                            RuntimeWarning,
                            stacklevel=2,
                        )
                    crash_round = state.round
                    kept = list(events)
                    state, metrics, _, _ = _restore(
                        state0, checkpoint_dir, run_key, spec, upto=crash_round
                    )
                    events = [
                        *kept,
                        {
                            "event": "server_crash",
                            "round": crash_round,
                            "restored_round": state.round,
                            "rounds_lost": crash_round - state.round,
                            "recovery_s": time.perf_counter() - t,
                        },
                    ]
    finally:
        if board is not None:
            board.close()
    total = time.perf_counter() - start
    record = {
        "format": FORMAT,
        "task": {
            "name": getattr(task, "name", type(task).__name__),
            "num_clients": run.num_clients,
            "num_params": spec.size,
            "meta": describe(dict(getattr(task, "meta", {}) or {})),
        },
        "strategy": config,
        "run": {
            "rounds": rounds,
            "engine": engine if isinstance(engine, str) else type(engine).__name__,
            "engine_used": chosen.name,
            "eval_every": eval_every,
            "seed": seed,
            "key": run_key.to_hex(),
            "adversary": describe(adversary),
            "faults": describe(faults),
            "checkpoint_every": checkpoint_every if checkpoint_dir is not None else None,
            "resumed_from": resumed_from,
            "stopped": stopped,
        },
        "versions": versions(),
        "metrics": metrics,
        "final": final_metrics(metrics),
        "timings": timings(metrics, total, state.round - (resumed_from or 0)),
        "counters": totals(metrics, events),
        "attack": {"controlled": run.controlled.tolist()},
        "events": events,
    }
    if accountant is not None:
        final_eps = float(accountant.epsilon(ledger))
        record["privacy_budget"] = {
            "accountant": describe(accountant),
            "delta": accountant.delta,
            "target_epsilon": accountant.target_epsilon,
            "epsilon": final_eps if math.isfinite(final_eps) else None,
            "rounds": state.round,
            "stopped": stopped is not None,
        }
    history = History(
        metrics=metrics,
        final_params=state.params,
        spec=spec,
        state=state,
        record=jsonable(record),
        events=events,
    )
    if log_dir is not None:
        history.save(Path(log_dir) / "record.json")
    return history
