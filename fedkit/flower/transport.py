"""The Flower transport: one round's work goes out as Flower messages through the ServerApp's
``Grid``, replies come back; the run driver (:func:`fedkit.run.driver.run`) decides the rest.

Per round:

1. wait for connected SuperNodes, at most ``sample_timeout`` seconds, until ``min_nodes``
   are there (Flower's own sampling waits forever for its minimum; this never does), and
   give new nodes a client id (:class:`~fedkit.flower.registry.NodeRegistry`);
2. each client the plan asks to train gets one ``train`` message, sent to the node the
   registry maps to it: the global parameters and their ParamSpec, the round, the client
   id, its work, the key it trains with (``fold_in(k_clients, client)``, the simulation's)
   and the strategy's client config as plain data (:mod:`fedkit.flower.requests`); under
   tracing also the W3C ``traceparent`` of the round's ``send`` span (:mod:`fedkit.run.tracing`,
   the ``send`` and ``collect`` phases are the run's :meth:`~fedkit.run.driver.Run.phase`). A client
   without a live node is lost as ``unavailable``;
3. replies are pulled until all are in or ``round_deadline`` seconds have passed. A reply
   belongs to the node the message was sent to, which must have signed it with its
   registered key (:mod:`fedkit.flower.signing`; Flower itself does not check who wrote a
   reply): an unsigned or forged reply is rejected as ``bad_signature``, one whose payload
   claims another client as ``impersonation``; a second reply to one message is ignored. Error replies (node unavailable, ClientApp error) and missing ones
   are lost by reason. Every ``node_check`` s the transport asks the grid which nodes are
   connected: a message whose node is no longer listed, or was re-activated since the
   message went out (a restarted node never answers what its old process took), is no
   longer waited for and is lost as ``node_gone``, so the round ends once every remaining
   node has answered; a node refusing a round (its privacy floor) is lost as ``refused``
   and counted by reason in the round's ``refusals``. No reply can stop the run.

The exchange names, client by client, what the transport decided (a :class:`Verdict` with the
node: lost, or rejected before validation) and which node each reply came from, and reports
each node once as ``node_registered`` (it has a client id: provisioned, kept from before, or
assigned now) or ``node_refused`` (no client id left for it) when it first shows up; the
driver passes these on to the callbacks (the audit log).
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from pathlib import Path
from typing import Any

import attrs
import torch
from flwr.app import ConfigRecord, Message, RecordDict

from fedkit.core.flat import ParamSpec
from fedkit.core.keys import Key
from fedkit.flower import signing, wire
from fedkit.flower.registry import NodeRegistry
from fedkit.flower.requests import request_fields
from fedkit.replies import Reply, Verdict
from fedkit.run.plan import RoundPlan
from fedkit.run.records import describe
from fedkit.run.transport import Exchange
from fedkit.strategy import ServerState, Strategy

FEDKIT = "fedkit"  # name of the ConfigRecord with the round's bookkeeping
METRICS = "metrics"
NODE_UNAVAILABLE = 5  # flwr.common.constant.ErrorCode.NODE_UNAVAILABLE
# flwr.common.constant.ErrorCode: MESSAGE_UNAVAILABLE (the request, or a reply's objects, not
# found in time) and REPLY_MESSAGE_UNAVAILABLE (the reply expired)
UNDELIVERED = frozenset({3, 4})


def error_reason(code: int, node_left: bool) -> str:
    """Why an error reply's client is lost: ``node_unavailable`` (the SuperLink stopped
    hearing the node), ``node_gone`` (the request or reply was lost and the node has left or
    restarted since the round began), ``reply_unavailable`` (lost, the node still there),
    else ``client_error`` (the ClientApp raised, crashed or was refused by a mod)."""
    if code == NODE_UNAVAILABLE:
        return "node_unavailable"
    if code in UNDELIVERED:
        return "node_gone" if node_left else "reply_unavailable"
    return "client_error"


@attrs.frozen
class LoopConfig:
    """How the server waits: seconds for nodes to appear (``sample_timeout``) and for
    replies (``round_deadline``), the nodes it waits for (``min_nodes``) and how often it
    polls (``poll_interval``); whether replies must carry their node's signature
    (``signed_replies``: needs SuperNode authentication, :mod:`fedkit.flower.signing`); how
    long it waits for the objects of a reply whose message has arrived (``object_timeout``,
    never past the round deadline: a node that dies mid-upload costs at most this; raise it
    for large models on slow links)."""

    round_deadline: float = 120.0
    sample_timeout: float = 60.0
    min_nodes: int = 1
    poll_interval: float = 0.2
    signed_replies: bool = True
    node_check: float = 1.0  # s between checks that the nodes waited for are still there
    object_timeout: float = 60.0

    def __attrs_post_init__(self) -> None:
        if self.round_deadline <= 0 or self.sample_timeout < 0 or self.poll_interval <= 0:
            raise ValueError("round_deadline and poll_interval must be > 0, sample_timeout >= 0")
        if not self.object_timeout > 0:
            raise ValueError(f"object_timeout must be > 0 seconds, got {self.object_timeout!r}")


def bound_object_pulls(max_time: float) -> None:
    """Bound how long Flower's HTTP grid (this ServerApp process) waits for a reply's
    objects to ``max_time`` s. A node killed after pushing a reply but before its objects
    would otherwise hold the ServerApp in ``pull_messages`` for up to 2 h (``flwr/supercore/
    constant.py`` ``PULL_MAX_TIME``); past the bound Flower returns an error reply instead
    (``MESSAGE_UNAVAILABLE``: lost as ``node_gone`` when the node left, else
    ``reply_unavailable``; :func:`error_reason`)."""
    try:
        from flwr.supercore.inflatable import inflatable_utils
        from flwr.superlink.grid import http_grid
    except ImportError:  # another Flower: nothing bound
        return
    http_grid.pull_objects = functools.partial(inflatable_utils.pull_objects, max_time=max_time)


def wait_for_nodes(grid: Any, minimum: int, timeout: float, poll: float) -> list[int]:
    """Connected node ids once at least ``minimum`` are there, or whatever is there after
    ``timeout`` seconds (possibly none)."""
    end = time.monotonic() + timeout
    while True:
        nodes = sorted(int(n) for n in grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() >= end:
            return nodes
        time.sleep(poll)


def train_message(
    node: int,
    params: torch.Tensor,
    spec: ParamSpec,
    strategy: Strategy,
    *,
    r: int,
    client: int,
    work: int,
    key: Key,
    ttl: float,
) -> Message:
    """The ``train`` message of round ``r`` asking ``node`` to train as ``client``."""
    content = RecordDict()
    wire.write_params(content, params, spec)
    content[FEDKIT] = ConfigRecord(request_fields(r, client, work, key, strategy.client))
    return Message(
        content=content, dst_node_id=node, message_type="train", group_id=str(r), ttl=ttl
    )


def with_parent(messages: list[Message], traceparent: str | None) -> list[Message]:
    """``messages`` with the W3C ``traceparent`` of the server's ``send`` span in each
    request (:mod:`fedkit.run.tracing`: the ClientApp's span joins the server's trace);
    unchanged when ``None`` (no tracing)."""
    if traceparent is not None:
        for message in messages:
            message.content[FEDKIT]["traceparent"] = traceparent
    return messages


def to_reply(message: Message, client: int, spec: ParamSpec, max_bytes: int) -> Reply:
    """A successful reply message as a :class:`~fedkit.replies.Reply` from ``client`` (the
    client of the node the server sent to); never raises."""
    content = message.content
    book = content.config_records.get(FEDKIT, ConfigRecord())
    stats = content.metric_records.get(METRICS, {})
    tag = book.get("round")
    n = stats.get("num-examples")
    return Reply(
        client=client,
        round=tag if isinstance(tag, int) else -1,
        update=wire.read_update(content, spec, max_bytes),
        num_examples=n if isinstance(n, int) else -1,
        metrics={k: float(v) for k, v in stats.items() if isinstance(v, int | float)},
    )


@attrs.define(eq=False)
class FlowerTransport:
    """Moves rounds over a Flower ``grid`` (module doc); ``registry`` maps nodes to
    clients (kept in ``registry_path``)."""

    grid: Any
    config: LoopConfig = attrs.field(factory=LoopConfig)
    registry: NodeRegistry = attrs.field(factory=NodeRegistry)
    name: str = "flower-deployment"
    run: Any = None
    max_bytes: int = 0
    reported: set[int] = attrs.field(factory=set)
    refused: set[int] = attrs.field(factory=set)

    @classmethod
    def with_registry(
        cls, grid: Any, config: LoopConfig, registry_path: str | Path | None
    ) -> FlowerTransport:
        return cls(grid, config, NodeRegistry.load(registry_path))

    def start(self, run: Any) -> None:
        self.run = run
        bound_object_pulls(min(self.config.object_timeout, self.config.round_deadline))
        spec: ParamSpec = run.spec
        limit = run.strategy.max_reply_bytes
        self.max_bytes = limit if limit is not None else 2 * spec.size * spec.torch_dtype.itemsize

    def stop(self) -> None:
        self.run = None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "requested": "flower",
            "loop": describe(self.config),
            "registry": self.registry.describe(),
            "faults": None,
            "checkpoint_every": None,
        }

    def exchange(self, state: ServerState, plan: RoundPlan) -> Exchange:
        cfg, run = self.config, self.run
        t0 = time.perf_counter()
        live = wait_for_nodes(
            self.grid, max(cfg.min_nodes, 1), cfg.sample_timeout, cfg.poll_interval
        )
        added = self.registry.assign(live, run.num_clients)
        events = self.node_events(live, added, run.num_clients)
        sample_time = time.perf_counter() - t0
        asked = plan.asked
        lost: Counter[str] = Counter({"straggler": int((plan.work <= 0).sum())})
        live_set = set(live)
        messages, client_of_message = [], []
        verdicts: list[Verdict] = []
        for c, w in asked.items():
            node = self.registry.node_of(c)
            if node is None or node not in live_set:
                lost["unavailable"] += 1
                verdicts.append(Verdict(c, "lost", "unavailable", node))
                continue
            messages.append(
                train_message(
                    node,
                    state.params,
                    run.spec,
                    run.strategy,
                    r=plan.round,
                    client=c,
                    work=w,
                    key=plan.keys.client(c),
                    ttl=cfg.round_deadline + 30.0,
                )
            )
            client_of_message.append(c)
        active = self.activations()  # a node re-activated after this lost what it was sent
        with run.phase("send", messages=len(messages)) as parent:  # tracing: its traceparent
            ids = list(self.grid.push_messages(with_parent(messages, parent))) if messages else []
        sent = {
            mid: (int(m.metadata.dst_node_id), c)
            for mid, m, c in zip(ids, messages, client_of_message, strict=True)
        }
        gone: set[str] = set()
        with run.phase("collect"):
            arrived = self.collect(
                sent, time.monotonic() + cfg.round_deadline, gone=gone, active=active
            )
        undelivered = {
            sent[m.metadata.reply_to_message_id][0]
            for m in arrived
            if m.has_error() and m.error.code in UNDELIVERED
        }
        left = self.departed(active, undelivered) if undelivered else set()
        keys = self.public_keys() if cfg.signed_replies else {}
        replies: list[Reply] = []
        rejected: Counter[str] = Counter()
        refusals: Counter[str] = Counter()
        stats: dict[int, tuple[float, int]] = {}
        nodes: dict[int, int] = {}
        answered: set[str] = set()
        for message in arrived:
            mid = message.metadata.reply_to_message_id
            node, client = sent[mid]
            answered.add(mid)
            if message.has_error():
                reason = error_reason(int(message.error.code), node in left)
                lost[reason] += 1
                verdicts.append(Verdict(client, "lost", reason, node))
                continue
            book = message.content.config_records.get(FEDKIT, ConfigRecord())
            if cfg.signed_replies:
                digest = signing.reply_digest(mid, message.content)
                if not signing.verify(keys.get(node), digest, book.get(signing.SIGNATURE)):
                    rejected["bad_signature"] += 1
                    verdicts.append(Verdict(client, "rejected", "bad_signature", node))
                    continue
            claimed = book.get("client")
            if int(message.metadata.src_node_id) != node or claimed != client:
                rejected["impersonation"] += 1
                verdicts.append(Verdict(client, "rejected", "impersonation", node))
                continue
            if book.get("refused"):
                lost["refused"] += 1
                refusals[str(book.get("refused"))] += 1
                verdicts.append(Verdict(client, "lost", "refused", node))
                continue
            reply = to_reply(message, client, run.spec, self.max_bytes)
            replies.append(reply)
            nodes[client] = node
            loss = reply.metrics.get("loss", float("nan"))
            stats[client] = (float(loss), int(reply.num_examples))
        for mid in sorted(sent.keys() - answered, key=lambda m: sent[m][1]):
            node, client = sent[mid]
            reason = "node_gone" if mid in gone else "late"
            lost[reason] += 1
            verdicts.append(Verdict(client, "lost", reason, node))
        metrics: dict[str, Any] = {"nodes": len(live), "sample_time": sample_time}
        if refusals:
            metrics["refusals"] = dict(refusals)
        return Exchange(
            replies=replies,
            lost={k: v for k, v in lost.items() if v},
            rejected=dict(rejected),
            client_stats=stats,
            metrics=metrics,
            verdicts=tuple(verdicts),
            nodes=nodes,
            events=events,
        )

    def node_events(
        self, live: list[int], added: list[int], num_clients: int
    ) -> tuple[dict[str, Any], ...]:
        """``node_registered`` / ``node_refused`` for each live node not reported before
        (module doc); a refused node is reported again once it gets a client id."""
        out: list[dict[str, Any]] = []
        for node in live:
            if node in self.reported:
                continue
            client = self.registry.client_of(node)
            if client is None:
                if node not in self.refused:
                    self.refused.add(node)
                    out.append(
                        {
                            "event": "node_refused",
                            "node": node,
                            "reason": "no_free_client_id",
                            "num_clients": num_clients,
                        }
                    )
                continue
            self.reported.add(node)
            out.append(
                {"event": "node_registered", "node": node, "client": client, "new": node in added}
            )
        return tuple(out)

    def public_keys(self) -> dict[int, Any]:
        """``{node id: public key}`` as the SuperLink registered them (``None`` for a node
        without an EC key)."""
        return {
            int(info.node_id): signing.public_key(info.public_key) for info in self.grid.get_nodes()
        }

    def collect(
        self,
        sent: dict[str, tuple[int, int]],
        deadline: float,
        gone: set[str] | None = None,
        active: dict[int, str] | None = None,
    ) -> list[Message]:
        """Pull replies until every message has one, its node is gone or ``deadline``; at
        most one reply per message (the first) is kept. With ``gone``, the messages given up
        because their node left since ``active`` (:meth:`activations`; default: now) was taken
        (:meth:`departed`, every ``node_check`` s) are added to it."""
        waiting, out = set(sent), []
        check = gone is not None
        if check and active is None:
            active = self.activations()
        next_check = time.monotonic() + self.config.node_check
        while waiting:
            for reply in self.grid.pull_messages(list(waiting)):
                mid = reply.metadata.reply_to_message_id
                if mid in waiting:
                    waiting.discard(mid)
                    out.append(reply)
            if not waiting or time.monotonic() >= deadline:
                break
            if check and time.monotonic() >= next_check:
                left = self.departed(active or {}, {sent[m][0] for m in waiting})
                given_up = {m for m in waiting if sent[m][0] in left}
                if given_up:  # a reply may have landed just before its node left
                    for reply in self.grid.pull_messages(list(given_up)):
                        mid = reply.metadata.reply_to_message_id
                        if mid in given_up:
                            given_up.discard(mid)
                            waiting.discard(mid)
                            out.append(reply)
                    waiting -= given_up
                    gone |= given_up
                next_check = time.monotonic() + self.config.node_check
            time.sleep(self.config.poll_interval)
        return out

    def activations(self) -> dict[int, str]:
        """``{node id: when it was last activated}`` of the nodes the grid lists now."""
        return {int(n.node_id): str(n.last_activated_at) for n in self.grid.get_nodes()}

    def departed(self, active: dict[int, str], nodes: set[int]) -> set[int]:
        """Those of ``nodes`` no longer listed, or activated again since ``active`` was
        taken (restarted: what the old process held is lost)."""
        now = self.activations()
        return {n for n in nodes if n not in now or now[n] != active.get(n, now[n])}
