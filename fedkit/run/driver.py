"""The one run loop: every run, simulated or deployed, goes through :func:`run`.

Per round: plan (sample clients, plan their work: :mod:`fedkit.run.plan`) → privacy
accountant (ε after the planned round) → callbacks may stop the run (budget) → the
transport sends the work and brings the replies back (:mod:`fedkit.run.transport`) →
``strategy.round`` validates and aggregates → test metrics on the server → the accountant's
ledger advances → callbacks (checkpoint, record, TensorBoard, event stream, progress). A
transport only moves messages; what is sampled, aggregated, charged and recorded is decided
here, identically for the in-process engines and the Flower ServerApp.

Resume: with ``checkpoints`` and ``resume=True`` the run continues from the newest usable
checkpoint, which must have been written by the same run key, model and configuration
(fingerprint; :class:`~fedkit.run.callbacks.Checkpoints` says what differs); without
``resume`` the checkpoint directory must hold none. A simulated server crash (an
:class:`~fedkit.run.transport.Exchange` with ``server_crash``) makes the driver drop its
in-memory state after the round and restore the newest checkpoint (the initial state
without one), as a restarted server would; a round's crash fires once, so the replayed
rounds run as before. The ledger is not rolled back: replayed rounds are charged again
(conservative).

Privacy budget: the accountant describes each round before anyone trains
(:func:`~fedkit.run.plan.round_spend`); ``run.next_epsilon`` is ε after it, and
:class:`~fedkit.run.callbacks.BudgetStop` stops the run before a round that would exceed
the target: the last completed round is evaluated and checkpointed, and
``record["run"]["stopped"]`` says why.

Audit trail: besides the run's events (``resume``, ``server_crash``, ``budget_alert``,
``stop``), the callbacks get the course of the run as events that stay out of the record
(:data:`~fedkit.run.callbacks.TRAIL_EVENTS`): ``round_open`` (the sampled clients) before the
exchange, the transport's own events (a deployment's nodes registered or refused),
``replies`` (every reply's verdict: :mod:`fedkit.run.verdicts`) after aggregation,
``round_close`` (the round's counts and DP spend), ``checkpoint`` for each checkpoint
written (right after :class:`~fedkit.run.callbacks.Checkpoints` saves, before the later
callbacks' ``on_round_end``, so a record written per round holds the round's whole trail),
and ``run_end`` last, before the final record is built; the ``resume`` event comes
after ``on_run_start``. :class:`~fedkit.run.audit_log.AuditLog` writes them all.

Budget alerts: with a target, every round's metrics carry ``budget_fraction`` (ε / target)
and the first round reaching each of the accountant's ``alerts`` fractions (default
:data:`BUDGET_ALERTS`) logs a warning (logger ``fedkit.privacy``) and records a
``budget_alert`` event; the stop at the budget records the ``1.0`` alert if no round reached
it exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs
import torch

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key
from fedkit.core.keys import key as root_key
from fedkit.protocols import Adversary, NoAdversary, PrivacyAccountant, Task
from fedkit.run.callbacks import TRAIL_EVENTS, BudgetStop, Callback, Checkpoints
from fedkit.run.client_state import ClientStates
from fedkit.run.fingerprint import fingerprint
from fedkit.run.history import History
from fedkit.run.plan import RoundPlan, RunKeys, plan_round, round_spend
from fedkit.run.records import FORMAT, describe, final_metrics, jsonable, timings, totals, versions
from fedkit.run.reference import RootData, root_dataset, server_update
from fedkit.run.transport import Exchange, Transport
from fedkit.run.verdicts import detection, round_verdicts, tally
from fedkit.strategy import ServerState, Strategy

BUDGET_ALERTS = (0.5, 0.8, 1.0)
log = logging.getLogger("fedkit.privacy")


def as_key(key: Key | int) -> tuple[Key, int | None]:
    """``(run key, seed)`` from a fedkit key or an int seed (``seed`` None for a key)."""
    if isinstance(key, Key):
        return key, None
    if isinstance(key, int) and not isinstance(key, bool):
        return root_key(key), key
    raise TypeError(f"key must be a fedkit Key or an int seed, got {type(key).__name__}")


def default_config(task: Task, strategy: Strategy, adversary: Any) -> dict[str, Any]:
    """The configuration a run is fingerprinted by when the caller gives none: the task's
    name and meta, the strategy and the adversary as config trees."""
    return {
        "task": {"name": task.name, "meta": describe(dict(task.meta or {}))},
        "strategy": describe(strategy),
        "adversary": describe(adversary),
    }


@attrs.define(eq=False)
class Run:
    """The driver's state of one run, read by callbacks and transports (never changed by
    them): what is run (task, strategy, transport, adversary, accountant, configuration and
    its fingerprint, keys) and where it stands (server state, privacy ledger, metrics and
    events so far, ε spent and after the planned round, resume and stop)."""

    task: Task
    strategy: Strategy
    transport: Transport
    adversary: Adversary
    accountant: PrivacyAccountant | None
    rounds: int
    eval_every: int
    key: Key
    seed: int | None
    keys: RunKeys
    controlled: torch.Tensor
    config: Mapping[str, Any]
    fingerprint: str
    state: ServerState
    ledger: Any = None
    metrics: list[dict[str, Any]] = attrs.field(factory=list)
    events: list[dict[str, Any]] = attrs.field(factory=list)
    resumed_from: int | None = None
    stopped: dict[str, Any] | None = None
    next_epsilon: float | None = None
    started: float = attrs.field(factory=time.perf_counter)
    rounds_at_start: int = 0
    callbacks: tuple[Callback, ...] = ()
    root: RootData | None = None
    client_states: ClientStates = attrs.field(factory=ClientStates)

    @property
    def spec(self) -> ParamSpec:
        return self.task.spec

    @property
    def num_clients(self) -> int:
        return int(self.task.num_clients)

    @property
    def epsilon(self) -> float | None:
        """ε spent so far (``None`` without an accountant)."""
        if self.accountant is None:
            return None
        return float(self.accountant.epsilon(self.ledger))

    def record(self) -> dict[str, Any]:
        """The results record (``fedkit.run/1``, :mod:`fedkit.run.records`) as of now."""
        total = time.perf_counter() - self.started
        record: dict[str, Any] = {
            "format": FORMAT,
            "task": {
                "name": self.task.name,
                "num_clients": self.num_clients,
                "num_params": self.spec.size,
                "meta": describe(dict(self.task.meta or {})),
            },
            "strategy": describe(self.strategy),
            "run": {
                "rounds": self.rounds,
                "engine": self.transport.describe().get("requested", self.transport.name),
                "engine_used": self.transport.name,
                "transport": self.transport.describe(),
                "eval_every": self.eval_every,
                "seed": self.seed,
                "key": self.key.to_hex(),
                "fingerprint": self.fingerprint,
                "adversary": describe(self.adversary),
                "faults": self.transport.describe().get("faults"),
                "checkpoint_every": self.transport.describe().get("checkpoint_every"),
                "resumed_from": self.resumed_from,
                "stopped": self.stopped,
            },
            "versions": versions(),
            "metrics": self.metrics,
            "final": final_metrics(self.metrics),
            "timings": timings(self.metrics, total, self.state.round - self.rounds_at_start),
            "counters": totals(self.metrics, self.events),
            "attack": {"controlled": self.controlled.tolist()},
            "events": self.events,
        }
        if self.accountant is not None:
            eps = self.epsilon
            record["privacy_budget"] = {
                "accountant": describe(self.accountant),
                "delta": self.accountant.delta,
                "target_epsilon": self.accountant.target_epsilon,
                "epsilon": eps if eps is not None and math.isfinite(eps) else None,
                "rounds": self.state.round,
                "stopped": self.stopped is not None,
            }
        for cb in self.callbacks:
            record.update(cb.record_extras(self))
        return jsonable(record)

    @contextlib.contextmanager
    def phase(self, name: str, **attributes: Any) -> Iterator[str | None]:
        """Wrap one phase of the run (``round``, ``aggregate``, ``evaluate``, ``checkpoint``
        here; ``send``, ``collect``, ``client.train`` in the transports) in every callback's
        :meth:`~fedkit.run.callbacks.Callback.phase`; yields the first thing one of them
        yields (a W3C ``traceparent`` under :class:`~fedkit.run.tracing.Tracing`), else
        ``None``. Without such a callback it does nothing."""
        with contextlib.ExitStack() as stack:
            found = None
            for cb in self.callbacks:
                opened = cb.phase(self, name, attributes)
                if opened is not None:
                    got = stack.enter_context(opened)
                    found = got if found is None else found
            yield found


def _train_loss(exchange: Exchange, accepted: Sequence[int]) -> float | None:
    """Example-weighted mean of the accepted clients' reported local losses."""
    num = den = 0.0
    for c in accepted:
        loss, n = exchange.client_stats.get(c, (float("nan"), 0))
        if n > 0 and math.isfinite(loss):
            num += loss * n
            den += n
    return num / den if den > 0 else None


def _merge(a: Mapping[str, int], b: Mapping[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + int(v)
    return out


def _round(run: Run, hooks, plan: RoundPlan) -> tuple[ServerState, dict[str, Any], bool]:
    """Run the planned round through the transport and the strategy."""
    round_open = {
        "event": "round_open",
        "round": plan.round,
        "clients": plan.clients.tolist(),
        "work": plan.work.tolist(),
        "epsilon_after": run.next_epsilon,
    }
    _emit(run, hooks, round_open)
    t0 = time.perf_counter()
    exchange = run.transport.exchange(run.state, plan)
    t1 = time.perf_counter()
    for event in exchange.events:
        _emit(run, hooks, dict(event))
    if exchange.client_state:
        ids = sorted(exchange.client_state)
        run.client_states = run.client_states.with_rows(
            torch.tensor(ids, dtype=torch.int64),
            torch.stack([exchange.client_state[c] for c in ids]),
            run.num_clients,
        )
    with run.phase("aggregate"):
        reference = None
        if run.root is not None:
            reference = server_update(
                run.task, run.strategy, run.state.params, run.root, plan.keys.server
            )
        state, info = run.strategy.round(
            run.state,
            list(exchange.replies),
            plan.keys.server,
            clients=plan.clients,
            num_clients=run.num_clients,
            reference=reference,
        )
    t2 = time.perf_counter()
    verdicts = round_verdicts(plan, exchange, info)
    replies = {
        "event": "replies",
        "round": plan.round,
        "verdicts": [v.to_dict() for v in verdicts],
        "counts": tally(verdicts),
    }
    _emit(run, hooks, replies)
    base = info.metrics()
    metrics: dict[str, Any] = {
        "round": plan.round,
        **base,
        "received": base["received"] + sum(exchange.rejected.values()),
        "rejected": _merge(base["rejected"], exchange.rejected),
        "lost": dict(exchange.lost),
        "faults": dict(exchange.faults),
        "stragglers": int(plan.straggler.sum()),
        "byzantine": int(plan.byzantine.sum()),
        "train_loss": _train_loss(exchange, info.accepted_clients),
        **exchange.metrics,
    }
    if run.controlled.numel():
        metrics["detection"] = detection(verdicts, set(run.controlled.tolist()))
    decided = chain_decisions(info.chain, plan.clients)
    if decided:
        metrics["chain"] = decided
    if plan.round % run.eval_every == 0 or plan.round == run.rounds:
        with run.phase("evaluate"):
            metrics.update(run.task.evaluate(state.params))
            attack_eval = getattr(run.adversary, "evaluate", None)
            if attack_eval is not None:
                metrics.update(attack_eval(run.task, state.params))
    t3 = time.perf_counter()
    metrics.update(train_time=t1 - t0, aggregate_time=t2 - t1, eval_time=t3 - t2, wall_time=t3 - t0)
    return state, jsonable(metrics), exchange.server_crash


def chain_decisions(chain_info: Mapping[str, Any], clients: torch.Tensor) -> dict[str, Any]:
    """What the server chain decided about each sampled client, for the round record: its
    per-client ``scores`` (Krum scores, FLTrust trust, FoolsGold weights, ...) and any other
    per-row tensor a component reported (cluster labels, ...), each as a list aligned with
    ``clients`` (sampling order) under its name, plus ``clients`` itself. Accept/reject
    masks are left out (the verdicts and counters hold them). ``{}`` when there is nothing."""
    m = int(clients.numel())
    out: dict[str, Any] = {}

    def per_row(value: Any) -> list | None:
        if isinstance(value, torch.Tensor) and value.ndim == 1 and value.numel() >= m > 0:
            return value[:m].detach().cpu().tolist()
        return None

    scores = {
        k: v for k, t in chain_info.get("scores", {}).items() if (v := per_row(t)) is not None
    }
    if scores:
        out["scores"] = scores
    for name, value in chain_info.items():
        if name in ("scores", "rejected", "clipped", "accepted"):
            continue
        row = per_row(value)
        if row is not None:
            out[name] = row
    if out:
        out["clients"] = clients.tolist()
    return out


def _emit(run: Run, callbacks: Sequence[Callback], event: dict[str, Any]) -> None:
    name = event.get("event")
    if name != "stop" and name not in TRAIL_EVENTS:
        run.events.append(jsonable(event))
    for cb in callbacks:
        cb.on_event(run, event)


def _emit_checkpoints(run: Run, hooks, checkpoints: Checkpoints | None) -> None:
    """Announce the checkpoints written since the last call."""
    if checkpoints is not None:
        for event in checkpoints.take_written():
            _emit(run, hooks, event)


ROUND_CLOSE = (
    "expected",
    "received",
    "valid",
    "accepted",
    "rejected",
    "lost",
    "faults",
    "quorum_missed",
    "clipped",
    "stragglers",
    "epsilon",
    "budget_fraction",
    "train_loss",
    "test_loss",
    "test_accuracy",
    "wall_time",
)


def _round_close(metrics: Mapping[str, Any], spent: float | None) -> dict[str, Any]:
    """The ``round_close`` event: the round's counts and DP spend (``epsilon_spent``: ε of
    this round, ε after it minus ε before it)."""
    kept = {k: metrics[k] for k in ROUND_CLOSE if k in metrics}
    if spent is not None:
        kept["epsilon_spent"] = spent
    return {"event": "round_close", "round": metrics["round"], **kept}


def run(
    task: Task,
    strategy: Strategy,
    transport: Transport,
    *,
    rounds: int,
    key: Key | int,
    adversary: Adversary | None = None,
    accountant: PrivacyAccountant | None = None,
    eval_every: int = 1,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    config: Mapping[str, Any] | None = None,
    init_params: torch.Tensor | None = None,
) -> History:
    """Run ``rounds`` rounds of ``strategy`` on ``task`` through ``transport`` (module doc)
    and return the :class:`History`.

    ``key``: a fedkit key or an int seed. ``adversary``: the experiment's threat model; its
    controlled clients mark the round's ``byzantine`` count and the record, and a
    transport that simulates clients plays them. ``accountant`` (default
    ``strategy.accountant``) tracks ε; a :class:`BudgetStop` is added when it has a target.
    ``checkpoints`` saves and restores (``resume``); ``callbacks`` get every hook;
    ``config`` is the configuration the run is fingerprinted (and resumed) by (default:
    :func:`default_config`). ``init_params`` overrides ``task.init``.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
        raise ValueError(f"rounds must be a non-negative int, got {rounds!r}")
    if eval_every < 1:
        raise ValueError(f"eval_every must be >= 1, got {eval_every}")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a fedkit.Strategy, got {type(strategy).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task {type(task).__name__} does not implement fedkit.protocols.Task")
    if resume and checkpoints is None:
        raise ValueError("resume=True needs checkpoints (a checkpoint directory)")
    adversary = NoAdversary() if adversary is None else adversary
    if not isinstance(adversary, Adversary):
        raise TypeError(
            f"adversary {type(adversary).__name__} does not implement fedkit.protocols.Adversary"
        )
    accountant = strategy.accountant if accountant is None else accountant
    if accountant is not None and not isinstance(accountant, PrivacyAccountant):
        raise TypeError(
            f"accountant {type(accountant).__name__} does not implement "
            "fedkit.protocols.PrivacyAccountant"
        )
    run_key, seed = as_key(key)
    keys = RunKeys.of(run_key)
    num_clients = int(task.num_clients)
    controlled = torch.unique(
        torch.as_tensor(adversary.controlled(num_clients, keys.controlled), dtype=torch.int64)
    )
    params0 = task.init(keys.init) if init_params is None else init_params
    task.spec.check(params0, what="initial parameters")
    state0 = strategy.init(params0)
    config = default_config(task, strategy, adversary) if config is None else dict(config)
    current = Run(
        task=task,
        strategy=strategy,
        transport=transport,
        adversary=adversary,
        accountant=accountant,
        rounds=rounds,
        eval_every=eval_every,
        key=run_key,
        seed=seed,
        keys=keys,
        controlled=controlled,
        config=config,
        fingerprint=fingerprint(config),
        state=state0,
        ledger=None if accountant is None else accountant.init(num_clients),
        root=root_dataset(task, strategy.root_examples, run_key),
    )
    hooks: list[Callback] = []
    if checkpoints is not None:
        hooks.append(checkpoints)
        if not resume:
            checkpoints.require_fresh()  # never mix this run's checkpoints with another's
    if accountant is not None and accountant.target_epsilon is not None:
        if not any(isinstance(cb, BudgetStop) for cb in callbacks):
            hooks.append(BudgetStop())
    hooks.extend(callbacks)
    current.callbacks = tuple(hooks)
    try:
        restored = _resume(current, checkpoints, state0) if resume else None
        transport.start(current)
        for cb in hooks:
            cb.on_run_start(current)
        if restored is not None:
            _emit(
                current, hooks, {"event": "resume", "restored_round": restored, "at": time.time()}
            )
        _loop(current, hooks, checkpoints, state0)
        _emit_checkpoints(current, hooks, checkpoints)
        _emit(
            current,
            hooks,
            {"event": "run_end", "round": current.state.round, "stopped": current.stopped},
        )
        history = History(
            metrics=current.metrics,
            final_params=current.state.params,
            spec=task.spec,
            state=current.state,
            record=current.record(),
            events=current.events,
        )
        for cb in hooks:
            cb.on_run_end(current, history)
        return history
    finally:
        try:
            transport.stop()
        finally:
            for cb in hooks:
                cb.close()


def _resume(run: Run, checkpoints: Checkpoints, state0: ServerState) -> int | None:
    """Restore the newest checkpoint into ``run``; the round restored, ``None`` if none."""
    found = checkpoints.restore(run, state0)
    run.state, run.metrics, run.events = found.state, found.history, found.events
    if "ledger" in found.tree:
        run.ledger = found.tree["ledger"]
    run.client_states = ClientStates.from_tree(found.tree.get("clients"))
    if found.state is state0:
        return None
    run.resumed_from = run.rounds_at_start = run.state.round
    if run.state.round > run.rounds:
        warnings.warn(
            f"the newest checkpoint is at round {run.state.round}, past rounds={run.rounds}: "
            "returning it as it is",
            RuntimeWarning,
            stacklevel=4,
        )
    return run.state.round


def _loop(run: Run, hooks, checkpoints: Checkpoints | None, state0: ServerState) -> None:
    crashed: set[int] = set()
    known: tuple[Any, float] | None = None  # (ledger, its ε): spares computing ε twice
    while run.state.round < run.rounds:
        plan = plan_round(run.strategy, run.state, run.num_clients, run.controlled, run.keys)
        after = spent = None
        if run.accountant is not None:
            if known is not None and known[0] is run.ledger:
                before = known[1]
            else:
                before = float(run.accountant.epsilon(run.ledger))
            after = run.accountant.spend(run.ledger, round_spend(run.task, run.strategy, plan))
            run.next_epsilon = float(run.accountant.epsilon(after))
            spent = run.next_epsilon - before
            known = (after, run.next_epsilon)
        stop = next((s for cb in hooks if (s := cb.before_round(run, plan)) is not None), None)
        if stop is not None:
            _stop(run, hooks, stop)
            _emit_checkpoints(run, hooks, checkpoints)
            return
        with run.phase("round", round=plan.round):
            state, metrics, crash = _round(run, hooks, plan)
            run.state = state
            if after is not None:
                run.ledger = after
                metrics["epsilon"] = jsonable(run.next_epsilon)
                _budget_alerts(run, hooks, metrics)
            run.metrics.append(metrics)
            _emit(run, hooks, _round_close(metrics, spent))
            for cb in hooks:
                saving = cb is checkpoints
                with run.phase("checkpoint") if saving else contextlib.nullcontext():
                    cb.on_round_end(run, metrics)
                    if saving:  # announced before a record written per round sees the head
                        _emit_checkpoints(run, hooks, checkpoints)
        if crash and state.round not in crashed:
            crashed.add(state.round)
            _recover(run, hooks, checkpoints, state0)


def alert_fractions(accountant: Any) -> tuple[float, ...]:
    """The budget fractions an accountant alerts at (its ``alerts`` attribute when it has
    one, else :data:`BUDGET_ALERTS`), sorted; each must lie in (0, 1]."""
    fractions = tuple(sorted(float(f) for f in getattr(accountant, "alerts", BUDGET_ALERTS)))
    if any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"budget alert fractions must lie in (0, 1], got {fractions}")
    return fractions


def _alerted(run: Run) -> set[float]:
    return {float(e["fraction"]) for e in run.events if e.get("event") == "budget_alert"}


def _alert(run: Run, hooks, fraction: float, eps: float, target: float, why: str) -> None:
    log.warning(
        "privacy budget %.0f%% %s: epsilon %.4g of %.4g after round %d",
        100 * fraction,
        why,
        eps,
        target,
        run.state.round,
    )
    _emit(
        run,
        hooks,
        {
            "event": "budget_alert",
            "fraction": fraction,
            "round": run.state.round,
            "epsilon": eps,
            "target_epsilon": target,
            "reason": why,
        },
    )


def _budget_alerts(run: Run, hooks, metrics: dict[str, Any]) -> None:
    target = run.accountant.target_epsilon
    if target is None or run.next_epsilon is None:
        return
    eps, target = float(run.next_epsilon), float(target)
    metrics["budget_fraction"] = eps / target
    done = _alerted(run)
    for f in alert_fractions(run.accountant):
        if eps >= f * target and f not in done:
            _alert(run, hooks, f, eps, target, "reached")


def _stop(run: Run, hooks, stop: dict[str, Any]) -> None:
    """End the run before the planned round: the last completed round gets test metrics if
    it has none, the stop is recorded and announced (checkpoints save on it)."""
    if stop.get("reason") == "privacy_budget" and 1.0 in alert_fractions(run.accountant):
        if 1.0 not in _alerted(run):
            eps = run.epsilon or 0.0
            _alert(run, hooks, 1.0, eps, float(run.accountant.target_epsilon), "exhausted")
    if run.metrics and run.metrics[-1].get("test_accuracy") is None:
        run.metrics[-1] = {**run.metrics[-1], **jsonable(run.task.evaluate(run.state.params))}
    run.stopped = jsonable(dict(stop))
    _emit(run, hooks, {"event": "stop", **run.stopped})


def _recover(run: Run, hooks, checkpoints: Checkpoints | None, state0: ServerState) -> None:
    """A simulated server crash after this round: restore the newest checkpoint."""
    t = time.perf_counter()
    crash_round = run.state.round
    if checkpoints is None:
        warnings.warn(
            "the fault model crashed the server but there is no checkpoint_dir: "
            "restarting from the initial parameters",
            RuntimeWarning,
            stacklevel=4,
        )
        run.state, run.metrics = state0, []
        run.client_states = ClientStates()
    else:
        found = checkpoints.restore(run, state0, upto=crash_round)
        run.state, run.metrics = found.state, found.history
        run.client_states = ClientStates.from_tree(found.tree.get("clients"))
    _emit(
        run,
        hooks,
        {
            "event": "server_crash",
            "round": crash_round,
            "restored_round": run.state.round,
            "rounds_lost": crash_round - run.state.round,
            "recovery_s": time.perf_counter() - t,
        },
    )
