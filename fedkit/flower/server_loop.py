"""The round driver of the Flower ServerApp: the simulation's round, with replies that travel.

Per round ``r`` (keys exactly as in :func:`fedkit.simulate`: ``k_init, _, k_rounds =
split(key(seed), 3)``, then ``split(fold_in(k_rounds, r), 6)``):

1. wait for connected SuperNodes, at most ``sample_timeout`` seconds, until ``min_nodes``
   are there (Flower's own sampling waits forever for its minimum; this never does);
2. ``strategy.sample`` and ``strategy.plan_work`` pick the clients and their work, as in
   simulation. A node whose client (partition) is known gets a ``train`` message asking
   that client; a node not seen before gets the message with every asked client and answers
   with the client it holds (training if that client is asked), so no extra round trip is
   spent on discovery. The message carries the global parameters, their ParamSpec, the
   round, the work and ``k_clients``: a client trains with ``fold_in(k_clients, client)``,
   the simulation's function with the simulation's key;
3. replies are pulled until all are in or ``round_deadline`` seconds have passed; a
   sampled client without a node, an error reply (node unavailable, ClientApp error) and a
   missing reply are counted in ``lost`` by reason; the rest go to ``strategy.round``,
   which validates them (shape, dtype, NaN/Inf, size, stale, duplicate: rejected with a
   reason and counted), checks the quorum and aggregates. No reply can stop the run;
4. test metrics on the server, TensorBoard scalars, the results record and a checkpoint
   (atomic; :mod:`fedkit.simulation.checkpoint`). A new run with the same checkpoint
   directory and seed resumes after the newest checkpoint.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key, fold_in, split
from fedkit.core.keys import key as root_key
from fedkit.flower import transport
from fedkit.replies import Reply
from fedkit.simulation import checkpoint as ckpt
from fedkit.simulation.evaluation import evaluate
from fedkit.simulation.history import History
from fedkit.simulation.records import (
    FORMAT,
    TensorBoardLog,
    describe,
    final_metrics,
    jsonable,
    timings,
    totals,
    versions,
    write_json,
)
from fedkit.strategy import ServerState, Strategy

FEDKIT = "fedkit"  # name of the ConfigRecord with the round's bookkeeping
METRICS = "metrics"
NODE_UNAVAILABLE = 5  # flwr.common.constant.ErrorCode.NODE_UNAVAILABLE


@attrs.frozen
class LoopConfig:
    """How the server waits: seconds for nodes to appear (``sample_timeout``) and for
    replies (``round_deadline``), the nodes it waits for (``min_nodes``), how often it polls
    (``poll_interval``); evaluation every ``eval_every`` rounds; where checkpoints
    (``checkpoint_dir``, newest ``keep_checkpoints`` kept) and logs (``log_dir``: TensorBoard
    scalars and ``record.json``) go."""

    rounds: int
    round_deadline: float = 120.0
    sample_timeout: float = 60.0
    min_nodes: int = 1
    poll_interval: float = 0.2
    eval_every: int = 1
    checkpoint_dir: Path | None = attrs.field(
        default=None, converter=attrs.converters.optional(Path)
    )
    keep_checkpoints: int | None = 3
    log_dir: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))

    def __attrs_post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if self.round_deadline <= 0 or self.sample_timeout < 0 or self.poll_interval <= 0:
            raise ValueError("round_deadline and poll_interval must be > 0, sample_timeout >= 0")
        if self.eval_every < 1:
            raise ValueError(f"eval_every must be >= 1, got {self.eval_every}")


def wait_for_nodes(grid: Any, minimum: int, timeout: float, poll: float) -> list[int]:
    """Connected node ids once at least ``minimum`` are there, or whatever is there after
    ``timeout`` seconds (possibly none)."""
    end = time.monotonic() + timeout
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() >= end:
            return nodes
        time.sleep(poll)


def round_message(
    node: int,
    params: torch.Tensor,
    spec: ParamSpec,
    strategy: Strategy,
    *,
    r: int,
    clients: list[int],
    work: list[int],
    k_clients: Key,
    ttl: float,
) -> Message:
    """The ``train`` message of round ``r`` for ``node``: the global parameters and their
    ParamSpec, the clients asked to train (``clients``, with their ``work``; a node trains
    iff its partition is listed, with key ``fold_in(k_clients, partition)``) and the
    strategy's client config."""
    content = RecordDict()
    transport.write_params(content, params, spec)
    content[FEDKIT] = ConfigRecord(
        {
            "round": r,
            "clients": list(clients),
            "work": list(work),
            "k-clients": k_clients.to_hex(),
            "client-config": transport.client_config_to_json(strategy.client),
        }
    )
    return Message(
        content=content, dst_node_id=node, message_type="train", group_id=str(r), ttl=ttl
    )


def claimed_client(message: Message) -> tuple[int | None, bool]:
    """``(client, trained)`` a successful reply claims (``None`` if it does not say)."""
    book = message.content.config_records.get(FEDKIT, {})
    client = book.get("client")
    return (client if isinstance(client, int) else None), bool(book.get("trained", False))


def to_reply(message: Message, client: int, spec: ParamSpec, max_bytes: int) -> Reply:
    """A successful reply message as a :class:`~fedkit.replies.Reply` from ``client`` (the
    client the server sent to, whatever the payload claims); never raises."""
    content = message.content
    book = content.config_records.get(FEDKIT, ConfigRecord())
    stats = content.metric_records.get(METRICS, {})
    tag = book.get("round")
    n = stats.get("num-examples")
    return Reply(
        client=client,
        round=tag if isinstance(tag, int) else -1,
        update=transport.read_update(content, spec, max_bytes),
        num_examples=n if isinstance(n, int) else -1,
        metrics={k: float(v) for k, v in stats.items() if isinstance(v, int | float)},
    )


def _weighted_loss(replies: list[Reply], accepted: tuple[int, ...]) -> float | None:
    keep = [r for r in replies if r.client in set(accepted) and "loss" in r.metrics]
    total = sum(r.num_examples for r in keep)
    if not keep or total <= 0:
        return None
    return sum(r.metrics["loss"] * r.num_examples for r in keep) / total


class ServerLoop:
    """One run of ``strategy`` on ``task`` over a Flower ``grid`` (see the module doc)."""

    def __init__(self, grid: Any, task: Any, strategy: Strategy, seed: int, config: LoopConfig):
        self.grid, self.task, self.strategy, self.config = grid, task, strategy, config
        self.seed = seed
        self.run_key = root_key(seed)
        self.k_init, _, self.k_rounds = split(self.run_key, 3)
        self.spec: ParamSpec = task.spec
        self.num_clients = int(task.num_clients)
        self.nodes: dict[int, int] = {}  # node id -> client id
        d = self.spec.size
        limit = strategy.max_reply_bytes
        self.max_bytes = limit if limit is not None else 2 * d * self.spec.torch_dtype.itemsize

    def round(self, state: ServerState) -> tuple[ServerState, dict[str, Any]]:
        """Run round ``state.round + 1`` (see the module doc); the new state and metrics."""
        cfg, strategy = self.config, self.strategy
        r = state.round + 1
        k_sample, k_work, k_clients, _, _, k_server = split(fold_in(self.k_rounds, r), 6)
        t0 = time.perf_counter()
        minimum = max(cfg.min_nodes, 1)
        live = wait_for_nodes(self.grid, minimum, cfg.sample_timeout, cfg.poll_interval)
        clients = strategy.sample(state, self.num_clients, k_sample)
        work, straggler = strategy.plan_work(clients, k_work)
        t1 = time.perf_counter()
        asked = {c: w for c, w in zip(clients.tolist(), work.tolist(), strict=True) if w > 0}
        lost: Counter[str] = Counter({"straggler": int((work <= 0).sum())})
        node_of = {c: n for n, c in self.nodes.items() if n in set(live)}
        unknown = [n for n in live if n not in self.nodes]
        plan: dict[int, list[int]] = {n: list(asked) for n in unknown}
        for c in asked:
            if c in node_of:
                plan[node_of[c]] = [c]
        messages = [
            round_message(
                n,
                state.params,
                self.spec,
                strategy,
                r=r,
                clients=cs,
                work=[asked[c] for c in cs],
                k_clients=k_clients,
                ttl=cfg.round_deadline + 30.0,
            )
            for n, cs in plan.items()
        ]
        ids = list(self.grid.push_messages(messages)) if messages else []
        node_by_id = {mid: m.metadata.dst_node_id for mid, m in zip(ids, messages)}
        arrived, answered = self.collect(ids, set(asked), time.monotonic() + cfg.round_deadline)
        replies: list[Reply] = []
        failed: dict[int, str] = {}  # node -> reason of its error reply
        for message in arrived:
            node = int(node_by_id[message.metadata.reply_to_message_id])
            if message.has_error():
                unavailable = message.error.code == NODE_UNAVAILABLE
                failed[node] = "node_unavailable" if unavailable else "client_error"
                continue
            client, trained = claimed_client(message)
            if client is not None:
                self.nodes[node] = client
            if trained and client is not None:
                replies.append(to_reply(message, client, self.spec, self.max_bytes))
        # unknown nodes' failures explain (at most) as many of the clients nobody answered for
        unexplained = [failed[n] for n in unknown if n in failed]
        for c in sorted(set(asked) - answered):
            node = node_of.get(c)
            if node is not None:
                lost[failed.get(node, "late")] += 1
            else:
                lost[unexplained.pop() if unexplained else "unavailable"] += 1
        t2 = time.perf_counter()
        state, info = strategy.round(state, replies, k_server, clients=clients)
        t3 = time.perf_counter()
        metrics: dict[str, Any] = {
            "round": r,
            **info.metrics(),
            "lost": {k: v for k, v in lost.items() if v},
            "faults": {},
            "stragglers": int(straggler.sum()),
            "byzantine": 0,
            "nodes": len(live),
            "train_loss": _weighted_loss(replies, info.accepted_clients),
        }
        if r % cfg.eval_every == 0 or r == cfg.rounds:
            metrics.update(evaluate(self.task, state.params))
        t4 = time.perf_counter()
        metrics.update(
            sample_time=t1 - t0,
            train_time=t2 - t1,
            aggregate_time=t3 - t2,
            eval_time=t4 - t3,
            wall_time=t4 - t0,
        )
        return state, jsonable(metrics)

    def collect(
        self, ids: list[str], asked: set[int], deadline: float
    ) -> tuple[list[Message], set[int]]:
        """Pull replies until every message is answered, every asked client has answered
        (nodes not yet known may be dead: they are not waited for) or ``deadline``."""
        waiting, out, answered = set(ids), [], set()
        while waiting:
            for reply in self.grid.pull_messages(list(waiting)):
                waiting.discard(reply.metadata.reply_to_message_id)
                out.append(reply)
                if not reply.has_error():
                    client, trained = claimed_client(reply)
                    if trained and client is not None:
                        answered.add(client)
            if not waiting or asked <= answered or time.monotonic() >= deadline:
                break
            time.sleep(self.config.poll_interval)
        return out, answered

    def run(self, on_round: Callable[[dict[str, Any]], None] | None = None) -> History:
        """All remaining rounds; returns the :class:`History` (as :func:`fedkit.simulate`)."""
        cfg = self.config
        state0 = self.strategy.init(self.task.init(self.k_init))
        found = ckpt.restore(state0, cfg.checkpoint_dir, self.run_key, self.spec)
        state, metrics, events = found.state, found.history, found.events
        resumed_from = state.round if state is not state0 else None
        if resumed_from is not None:
            events.append({"event": "resume", "restored_round": resumed_from, "at": time.time()})
        board = None
        if cfg.log_dir is not None:
            board = TensorBoardLog(cfg.log_dir, purge_step=state.round + 1)
        start = time.perf_counter()
        try:
            while state.round < cfg.rounds:
                state, m = self.round(state)
                metrics.append(m)
                if board is not None:
                    board.log(m)
                if cfg.checkpoint_dir is not None:
                    meta = {
                        "history": metrics,
                        "events": events,
                        "spec": self.spec.to_dict(),
                        "strategy": describe(self.strategy),
                        "task": getattr(self.task, "name", None),
                    }
                    tree = {"state": state, "key": self.run_key}
                    ckpt.save(
                        cfg.checkpoint_dir, state.round, tree, meta, keep=cfg.keep_checkpoints
                    )
                history = self.history(state, metrics, events, resumed_from, start)
                if cfg.log_dir is not None:
                    write_json(cfg.log_dir / "record.json", history.record)
                if on_round is not None:
                    on_round(m)
        finally:
            if board is not None:
                board.close()
        history = self.history(state, metrics, events, resumed_from, start)
        if cfg.log_dir is not None:
            write_json(cfg.log_dir / "record.json", history.record)
        return history

    def history(self, state, metrics, events, resumed_from, start) -> History:
        """The results record (format ``fedkit.run/1``, as the simulation writes it)."""
        total = time.perf_counter() - start
        cfg = self.config
        done = state.round - (resumed_from or 0)
        record = {
            "format": FORMAT,
            "task": {
                "name": getattr(self.task, "name", type(self.task).__name__),
                "num_clients": self.num_clients,
                "num_params": self.spec.size,
                "meta": describe(dict(getattr(self.task, "meta", {}) or {})),
            },
            "strategy": describe(self.strategy),
            "run": {
                "rounds": cfg.rounds,
                "engine": "flower",
                "engine_used": "flower-deployment",
                "eval_every": cfg.eval_every,
                "seed": self.seed,
                "key": self.run_key.to_hex(),
                "adversary": None,
                "faults": None,
                "checkpoint_every": 1 if cfg.checkpoint_dir is not None else None,
                "resumed_from": resumed_from,
                "loop": describe(cfg),
            },
            "versions": versions(),
            "metrics": metrics,
            "final": final_metrics(metrics),
            "timings": timings(metrics, total, done),
            "counters": totals(metrics, events),
            "attack": {"controlled": []},
            "events": events,
        }
        return History(
            metrics=metrics,
            final_params=state.params,
            spec=self.spec,
            state=state,
            record=jsonable(record),
            events=events,
        )
