"""ServerApp and ClientApp factories (Flower 1.42 Message API) around the run driver.

The ServerApp runs :func:`serve`: the run driver (:func:`fedkit.run.driver.run`) with the
Flower transport (:class:`~fedkit.flower.transport.FlowerTransport`) — the same sampling,
aggregation, privacy accounting, checkpoints and records as :func:`fedkit.simulate` — on
what a :class:`ServerSetup` holds. Everything a deployed run writes goes to its
``out_dir``: ``record.json`` (after every round) and ``record.safetensors``, TensorBoard
scalars, ``events.jsonl``, the hash-chained audit log ``audit.jsonl``
(:mod:`fedkit.run.audit_log`), ``checkpoints/`` and the node registry ``registry.json``; with
a metrics endpoint (``ServerSetup.metrics``) Prometheus metrics, ``/healthz`` and ``/readyz``
(:mod:`fedkit.run.metrics`) whose address is written to ``metrics.json``; with a trace
config (``ServerSetup.trace``) OpenTelemetry spans of the run (:mod:`fedkit.run.tracing`).

The ClientApp decodes each ``train`` message strictly (:mod:`fedkit.flower.requests`,
:mod:`fedkit.flower.wire`: a malformed request raises, and Flower reports the error to the
server, which counts it), hands it to a :class:`~fedkit.flower.client.ClientRuntime`,
encodes what it answers and signs the reply with the node's key (node config
``signing-key``; :mod:`fedkit.flower.signing`); a node with ``trace-file`` (or
``otlp-endpoint``) in its node config records each message as a ``client.train`` span in the
server's trace. Which task, strategy and runtime a run uses is decided by the app
that calls these factories (``experiments.flower_app``: the experiment config).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedkit.flower import signing, wire
from fedkit.flower.client import ClientRuntime, Refused
from fedkit.flower.local import node_metrics
from fedkit.flower.registry import NodeRegistry
from fedkit.flower.requests import RequestError, TrainRequest, parse_request
from fedkit.flower.transport import FEDKIT, METRICS, FlowerTransport, LoopConfig
from fedkit.protocols import Task
from fedkit.run import driver, tracing
from fedkit.run.audit_log import AUDIT_FILE, AuditLog
from fedkit.run.callbacks import (
    Callback,
    Checkpoints,
    EventLog,
    PrintRounds,
    RecordFiles,
    TensorBoard,
)
from fedkit.run.history import History
from fedkit.run.metrics import Endpoint, PrometheusMetrics
from fedkit.strategy import Strategy


@attrs.frozen(eq=False)
class ServerSetup:
    """What a ServerApp runs: the task, strategy and adversary (its controlled clients are
    recorded; its nodes attack on their own), rounds and seed, the configuration the run is
    fingerprinted by, where it writes (``out_dir``), how it waits (``loop``), the node
    registry file (default ``out_dir/registry.json``), ``resume``, ``record_extras``
    (sections added to the final record), the Prometheus endpoint (``metrics``; ``None``:
    none) and where the run's spans go (``trace``: :mod:`fedkit.run.tracing`; ``None``:
    no tracing)."""

    task: Task
    strategy: Strategy
    rounds: int
    seed: int
    out_dir: Path = attrs.field(converter=Path)
    loop: LoopConfig = attrs.field(factory=LoopConfig)
    adversary: Any = None
    eval_every: int = 1
    config: Mapping[str, Any] | None = None
    registry: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))
    resume: bool = False
    keep_checkpoints: int | None = 3
    record_extras: Callable[[dict[str, Any], History], Mapping[str, Any]] | None = None
    transport_name: str = "flower-deployment"
    metrics: Endpoint | None = None
    trace: tracing.TraceConfig | None = None


def serve(grid: Any, setup: ServerSetup) -> History:
    """Run ``setup`` over ``grid`` (module doc); the run's :class:`History`."""
    out = setup.out_dir
    registry = NodeRegistry.load(setup.registry or out / "registry.json")
    transport = FlowerTransport(grid, setup.loop, registry, name=setup.transport_name)
    hooks: list[Callback] = [
        PrintRounds(),
        TensorBoard(out),
        RecordFiles(out, every_round=True, extras=setup.record_extras),
        EventLog(out / "events.jsonl"),
        AuditLog(out / AUDIT_FILE),
    ]
    if setup.metrics is not None:
        hooks.append(server_metrics(grid, setup))
    if setup.trace is not None and setup.trace.enabled:
        hooks.append(tracing.Tracing(setup.trace.file, setup.trace.otlp_endpoint))
    return driver.run(
        setup.task,
        setup.strategy,
        transport,
        rounds=setup.rounds,
        key=setup.seed,
        adversary=setup.adversary,
        eval_every=setup.eval_every,
        checkpoints=Checkpoints(out / "checkpoints", keep=setup.keep_checkpoints),
        resume=setup.resume,
        callbacks=hooks,
        config=setup.config,
    )


def server_metrics(grid: Any, setup: ServerSetup) -> PrometheusMetrics:
    """The started Prometheus endpoint of a served run (:mod:`fedkit.run.metrics`): nodes
    connected as the grid reports them, ready at the loop's ``min_nodes``, the age of
    ``out_dir/checkpoints``, its address in ``out_dir/metrics.json`` unless set."""
    endpoint = setup.metrics
    if endpoint.address_file is None:
        endpoint = attrs.evolve(endpoint, address_file=setup.out_dir / "metrics.json")
    metrics = PrometheusMetrics(
        endpoint,
        nodes=lambda: len(list(grid.get_node_ids())),
        min_nodes=setup.loop.min_nodes,
        checkpoint_dir=setup.out_dir / "checkpoints",
    )
    metrics.start()
    return metrics


def make_server_app(setup: Callable[[Context], ServerSetup]) -> ServerApp:
    """A ServerApp that builds its :class:`ServerSetup` from the run's context and serves
    it."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, setup(context))

    return app


RuntimeFactory = Callable[[Context, TrainRequest], ClientRuntime]


def answer(message: Message, context: Context, runtime: RuntimeFactory) -> Message:
    """The reply to one ``train`` message (module doc); raises on a malformed request. The
    outcome is reported to the node's metrics (:mod:`fedkit.flower.local.node_metrics`)
    and, when the node traces (node config ``trace-file`` / ``otlp-endpoint``), as a
    ``client.train`` span joining the server's trace (:func:`client_span`)."""
    with contextlib.ExitStack() as traced:
        try:
            book = message.content.config_records.get(FEDKIT)
            if book is None:
                raise RequestError(
                    "the message carries no 'fedkit' record: not a fedkit train request"
                )
            request = parse_request(book)
            span = traced.enter_context(client_span(context, request))
            node = runtime(context, request)
            if hasattr(node, "node_state"):  # state the node keeps between rounds
                node.node_state = context.state
            params = wire.read_params(message.content, node.spec)
            t0 = time.perf_counter()
            out = node.train(request, params)
            seconds = time.perf_counter() - t0
        except Exception as exc:
            _report("error", reason=type(exc).__name__)
            raise
        reply = _reply(message, context, request, out, node.spec)
        if isinstance(out, Refused):
            _report("refused", reason=out.code)
            outcome = {"outcome": "refused", "refused": out.code}
        else:
            sent = wire.payload_size(reply.content)
            _report("trained", seconds=seconds, bytes_sent=sent)
            outcome = {"outcome": "trained", "examples": out.num_examples, "bytes_sent": sent}
        if span is not None:
            span.set_attributes({f"fedkit.{k}": v for k, v in outcome.items()})
        return reply


def client_span(context: Context, request: TrainRequest) -> Any:
    """The ``client.train`` span of one request on this node (:func:`fedkit.run.tracing.
    client_span`: service ``fedkit-client``, a child of the server's ``send`` span that the
    request's ``traceparent`` names); a no-op unless the node config has ``trace-file`` or
    ``otlp-endpoint``."""
    config = tracing.node_trace_config(context.node_config)
    resource = {
        "fedkit.node.id": int(context.node_id),
        "fedkit.flower.run_id": int(context.run_id),
        "fedkit.partition": context.node_config.get("partition-id"),
    }
    fields = {"round": request.round, "client": request.client, "work": request.work}
    return tracing.client_span(config, request.traceparent, resource=resource, attributes=fields)


def _report(outcome: str, **fields: Any) -> None:
    """Report to the node's metrics file, if it has one; never fails the reply."""
    with contextlib.suppress(OSError):
        node_metrics.report(outcome, **fields)


def _reply(
    message: Message, context: Context, request: TrainRequest, out: Any, spec: Any
) -> Message:
    """The signed reply message carrying ``out`` (a :class:`Refused` or a trained update)."""
    content = RecordDict()
    if isinstance(out, Refused):
        book = {
            "round": request.round,
            "client": out.client,
            "refused": out.code,
            "refused-detail": out.reason,
        }
    else:
        wire.write_update(content, out.update, spec)
        book = {"round": request.round, "client": out.client, "trained": True}
        content[METRICS] = MetricRecord({"num-examples": out.num_examples, **out.metrics})
    content[FEDKIT] = ConfigRecord(book)
    key_path = str(context.node_config.get("signing-key", ""))
    if key_path:
        digest = signing.reply_digest(message.metadata.message_id, content)
        book[signing.SIGNATURE] = signing.sign(_signing_key(key_path), digest)
        content[FEDKIT] = ConfigRecord(book)
    return Message(content=content, reply_to=message)


@functools.lru_cache(maxsize=4)
def _signing_key(path: str) -> Any:
    return signing.load_signing_key(path)


def make_client_app(runtime: RuntimeFactory) -> ClientApp:
    """A ClientApp answering ``train`` messages with the runtime ``runtime(context,
    request)`` returns (module doc)."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        return answer(message, context, runtime)

    return app
