"""OpenTelemetry spans of a run, exported as OTLP/JSON lines to a file (an OTLP/HTTP collector
optional), with the trace context carried to the clients in the ``train`` messages.

Server side (service ``fedkit-server``; :class:`Tracing`, a driver callback), one trace per run::

    run                      the whole run (resource: run fingerprint, transport, seed)
    └─ round                 fedkit.round = r; the round's counts when it ends
       ├─ send               the work goes out (in process: the engine trains the clients)
       │  └─ client.train    one per client (in process; the vectorised engine: one for all)
       ├─ collect            replies come back (in process: simulated delivery)
       ├─ aggregate          strategy.round: validate and aggregate
       ├─ evaluate           test metrics on the server (rounds that evaluate)
       └─ checkpoint         a checkpoint saved (file, SHA-256)

The driver names the phases (:meth:`fedkit.run.driver.Run.phase`) and knows nothing of
OpenTelemetry; a transport opens ``send`` and ``collect`` itself. A deployment's ``send``
phase yields its W3C ``traceparent``, which the Flower transport puts into every ``train``
request (:mod:`fedkit.flower.requests`); each node's ClientApp opens its ``client.train``
span (service ``fedkit-client``; :func:`client_span`) as a child of the server's ``send``
span and writes it to the node's own file (node config ``trace-file``), so the node files
and the server file hold one trace.

Every run and every ClientApp message gets a :class:`~opentelemetry.sdk.trace.TracerProvider`
of its own, never the global one, with fixed resource attributes (no environment detection).
A file gets one line per finished span: an OTLP ``ExportTraceServiceRequest`` in the
OTLP/JSON encoding (``{"resourceSpans": [...]}``; ids as hex, enums as integers, 64-bit
integers as strings), the format of the OpenTelemetry Collector's file exporter and
``otlpjsonfile`` receiver, so the files can be replayed into any OTLP backend. Lines are
appended with one ``O_APPEND`` write each, so concurrent ClientApps never interleave.
Nothing is sent anywhere unless an ``otlp_endpoint`` is given (needs the package
``opentelemetry-exporter-otlp-proto-http``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.sdk.version import __version__ as SDK_VERSION
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace import TraceFlags as OtelTraceFlags

from fedkit.run.callbacks import TRAIL_EVENTS, Callback

if TYPE_CHECKING:
    from fedkit.run.driver import Run
    from fedkit.run.history import History

SERVER = "fedkit-server"
CLIENT = "fedkit-client"
SCOPE = "fedkit.run.tracing"
TRACE_FILE = "trace.jsonl"
OTLP_PACKAGE = "opentelemetry-exporter-otlp-proto-http"
TRACEPARENT_RULE = "'00-<32 hex>-<16 hex>-<2 hex>' (lowercase; trace and span ids not all zero)"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_KINDS = {"send": SpanKind.PRODUCER}
_ROUND_NUMBERS = ("expected", "received", "valid", "accepted", "epsilon", "test_accuracy")


class TracingError(ValueError):
    """A tracing setting that cannot be honoured (bad path or URL, missing exporter)."""


# ---- W3C trace context -----------------------------------------------------------------
def parse_traceparent(text: Any) -> SpanContext:
    """The remote span context a W3C ``traceparent`` names; :class:`ValueError` naming the
    value and the rule (:data:`TRACEPARENT_RULE`) for anything else."""
    match = _TRACEPARENT.fullmatch(text) if isinstance(text, str) else None
    if match is None or int(match[1], 16) == 0 or int(match[2], 16) == 0:
        raise ValueError(f"traceparent must be {TRACEPARENT_RULE}, got {text!r}")
    return SpanContext(
        trace_id=int(match[1], 16),
        span_id=int(match[2], 16),
        is_remote=True,
        trace_flags=OtelTraceFlags(int(match[3], 16)),
    )


def traceparent(span: trace.Span) -> str:
    """The W3C ``traceparent`` of ``span`` (what a child in another process joins)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


# ---- OTLP/JSON -------------------------------------------------------------------------
def _value(v: Any) -> dict[str, Any]:
    """An attribute value as an OTLP ``AnyValue``."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v if math.isfinite(v) else str(v).replace("inf", "Infinity")}
    if isinstance(v, Sequence) and not isinstance(v, str | bytes):
        return {"arrayValue": {"values": [_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attributes(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in (attributes or {}).items()]


def _span(span: ReadableSpan) -> dict[str, Any]:
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "flags": int(ctx.trace_flags) | (0x300 if span.parent and span.parent.is_remote else 0x100),
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP counts SPAN_KIND_UNSPECIFIED as 0
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [
            {
                "timeUnixNano": str(e.timestamp),
                "name": e.name,
                "attributes": _attributes(e.attributes),
            }
            for e in span.events
        ]
    return out


def _resource(resource: Resource, cache: dict[int, tuple[Resource, Any]]) -> Any:
    found = cache.get(id(resource))
    if found is None or found[0] is not resource:  # the cache holds the resource: ids stay
        found = cache[id(resource)] = (resource, _attributes(resource.attributes))
    return found[1]


def otlp_json(
    spans: Sequence[ReadableSpan], resources: dict[int, tuple[Resource, Any]] | None = None
) -> dict[str, Any]:
    """``spans`` as one OTLP/JSON ``ExportTraceServiceRequest`` (module doc); ``resources``
    caches the encoded resource attributes (a provider's resource never changes)."""
    resources = {} if resources is None else resources
    groups: dict[tuple[int, int], tuple[ReadableSpan, list[dict[str, Any]]]] = {}
    for span in spans:
        key = (id(span.resource), id(span.instrumentation_scope))
        groups.setdefault(key, (span, []))[1].append(_span(span))
    resource_spans = []
    for first, encoded in groups.values():
        scope = first.instrumentation_scope
        resource_spans.append(
            {
                "resource": {"attributes": _resource(first.resource, resources)},
                "scopeSpans": [
                    {
                        "scope": {"name": scope.name, "version": scope.version or ""},
                        "spans": encoded,
                    }
                ],
            }
        )
    return {"resourceSpans": resource_spans}


class OtlpJsonFile(SpanExporter):
    """Appends each batch of finished spans to ``path`` as one OTLP/JSON line (module doc)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.resources: dict[int, tuple[Resource, Any]] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TracingError(
                f"trace file {str(self.path)!r}: cannot create its folder: {exc}"
            ) from None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = json.dumps(otlp_json(spans, self.resources), separators=(",", ":")) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            return SpanExportResult.FAILURE  # a trace never stops a run; the SDK logs it
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is written when it returns


def load(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The spans of an OTLP/JSON lines file, flattened: ``trace_id``, ``span_id``,
    ``parent_id`` (``None`` for a root), ``name``, ``kind``, ``start`` / ``end`` (ns),
    ``attributes`` and ``resource`` (plain dicts), ``status`` (code)."""

    def plain(items: list[dict[str, Any]]) -> dict[str, Any]:
        def one(v: dict[str, Any]) -> Any:
            ((kind, x),) = v.items()
            if kind == "intValue":
                return int(x)
            if kind == "arrayValue":
                return [one(e) for e in x.get("values", [])]
            return x

        return {a["key"]: one(a["value"]) for a in items}

    out = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        for rs in json.loads(line)["resourceSpans"]:
            resource = plain(rs["resource"]["attributes"])
            for ss in rs["scopeSpans"]:
                for s in ss["spans"]:
                    out.append(
                        {
                            "trace_id": s["traceId"],
                            "span_id": s["spanId"],
                            "parent_id": s.get("parentSpanId"),
                            "name": s["name"],
                            "kind": s["kind"],
                            "start": int(s["startTimeUnixNano"]),
                            "end": int(s["endTimeUnixNano"]),
                            "attributes": plain(s["attributes"]),
                            "resource": resource,
                            "status": s["status"]["code"],
                        }
                    )
    return out


# ---- configuration and providers -------------------------------------------------------
def _check_endpoint(value: str | None) -> str | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise TracingError(
            f"otlp_endpoint must be an http(s) URL such as http://127.0.0.1:4318/v1/traces, "
            f"got {value!r}"
        )
    return value


def _otlp_exporter(endpoint: str) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise TracingError(
            f"otlp_endpoint={endpoint!r} needs the package {OTLP_PACKAGE!r}, which is not "
            f"installed (pip install {OTLP_PACKAGE})"
        ) from None
    return OTLPSpanExporter(endpoint=endpoint)


@attrs.frozen
class TraceConfig:
    """Where spans go: ``file`` (OTLP/JSON lines; ``None``: none) and ``otlp_endpoint`` (an
    OTLP/HTTP traces URL; ``None``: none, the default: nothing leaves the machine)."""

    file: Path | None = attrs.field(
        default=None, converter=lambda v: None if v in (None, "") else Path(v)
    )
    otlp_endpoint: str | None = attrs.field(default=None, converter=_check_endpoint)

    @property
    def enabled(self) -> bool:
        return self.file is not None or self.otlp_endpoint is not None

    def provider(self, service: str, attributes: Mapping[str, Any]) -> TracerProvider:
        """A new provider exporting to this config's file and endpoint, with the resource
        ``service.name = service`` plus ``attributes`` (nothing read from the environment)."""
        resource = Resource(
            {
                "service.name": service,
                "telemetry.sdk.language": "python",
                "telemetry.sdk.name": "opentelemetry",
                "telemetry.sdk.version": SDK_VERSION,
                **{k: v for k, v in attributes.items() if v is not None},
            }
        )
        exporters: list[Any] = []
        if self.otlp_endpoint is not None:
            exporters.append(BatchSpanProcessor(_otlp_exporter(self.otlp_endpoint)))
        if self.file is not None:
            exporters.append(SimpleSpanProcessor(OtlpJsonFile(self.file)))
        provider = TracerProvider(resource=resource, sampler=ALWAYS_ON, shutdown_on_exit=False)
        for processor in exporters:
            provider.add_span_processor(processor)
        return provider


def _scalars(fields: Mapping[str, Any], prefix: str = "fedkit.") -> dict[str, Any]:
    """Attribute-safe values of ``fields`` (numbers, strings, bools and lists of one of
    them), keys prefixed; anything else is left out."""
    out: dict[str, Any] = {}
    for k, v in fields.items():
        if isinstance(v, bool | int | float | str):
            out[prefix + k] = v
        elif isinstance(v, list | tuple) and len({type(x) for x in v}) == 1:
            if isinstance(v[0], bool | int | float | str):
                out[prefix + k] = list(v)
    return out


@contextlib.contextmanager
def ending(span: trace.Span) -> Iterator[None]:
    """End ``span`` when the block ends; an exception out of it is recorded on the span
    (status ERROR) and goes on."""
    try:
        yield
    except BaseException as exc:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        span.end()


# ---- the server side -------------------------------------------------------------------
class Tracing(Callback):
    """Spans of the run (module doc) into ``file`` and/or ``otlp_endpoint``; ``service``
    and ``attributes`` go into the resource next to the run's fingerprint, transport and
    seed."""

    def __init__(
        self,
        file: str | os.PathLike[str] | None = None,
        otlp_endpoint: str | None = None,
        *,
        service: str = SERVER,
        attributes: Mapping[str, Any] | None = None,
    ):
        self.config = TraceConfig(file, otlp_endpoint)
        if not self.config.enabled:
            raise TracingError("Tracing needs a file or an otlp_endpoint, got neither")
        if self.config.otlp_endpoint is not None:
            _otlp_exporter(self.config.otlp_endpoint)  # fail now, not at the first span
        self.service, self.attributes = service, dict(attributes or {})
        self.provider: TracerProvider | None = None
        self.tracer: trace.Tracer | None = None
        self.stack: list[trace.Span] = []  # the run span, then the open phases
        self.checkpoint_start: int | None = None
        self.trace_id: str | None = None

    def on_run_start(self, run: Run) -> None:
        resource = {
            "fedkit.run.fingerprint": run.fingerprint,
            "fedkit.transport": run.transport.name,
            "fedkit.seed": run.seed,
            "fedkit.task": run.task.name,
            **self.attributes,
        }
        self.provider = self.config.provider(self.service, resource)
        self.tracer = self.provider.get_tracer(SCOPE)
        span = self.tracer.start_span(
            "run",
            context=Context(),  # a root, whatever the caller's context holds
            attributes={
                "fedkit.rounds": run.rounds,
                "fedkit.start_round": run.state.round,
                "fedkit.num_clients": run.num_clients,
            },
        )
        self.stack = [span]
        self.trace_id = f"{span.get_span_context().trace_id:032x}"

    def phase(
        self, run: Run, name: str, attributes: Mapping[str, Any]
    ) -> contextlib.AbstractContextManager[str | None] | None:
        if not self.stack:
            return None
        if name == "checkpoint":
            return self._checkpoint_phase()
        return self._span(name, attributes)

    @contextlib.contextmanager
    def _span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[str]:
        span = self.tracer.start_span(
            name,
            context=trace.set_span_in_context(self.stack[-1]),
            kind=_KINDS.get(name, SpanKind.INTERNAL),
            attributes=_scalars(attributes),
        )
        self.stack.append(span)
        try:
            with ending(span):
                yield traceparent(span)
        finally:
            if self.stack and self.stack[-1] is span:
                self.stack.pop()

    @contextlib.contextmanager
    def _checkpoint_phase(self) -> Iterator[None]:
        """A checkpoint span exists only when a checkpoint is written inside the phase (its
        ``checkpoint`` event): it then spans from the phase's start to the event."""
        self.checkpoint_start = time.time_ns()
        try:
            yield None
        finally:
            self.checkpoint_start = None

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        if not self.stack:
            return
        name = event.get("event")
        top = self.stack[-1]
        if name == "checkpoint":
            start = self.checkpoint_start or time.time_ns()
            span = self.tracer.start_span(
                "checkpoint",
                context=trace.set_span_in_context(top),
                start_time=start,
                attributes=_scalars({k: v for k, v in event.items() if k != "event"}),
            )
            span.end()
        elif name == "round_open":
            top.set_attribute("fedkit.sampled", len(event.get("clients", [])))
        elif name not in TRAIL_EVENTS:  # resume, server_crash, budget_alert, stop
            top.add_event(str(name), _scalars({k: v for k, v in event.items() if k != "event"}))

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        top = self.stack[-1] if self.stack else None
        if top is None or len(self.stack) < 2:
            return
        fields = {k: metrics[k] for k in _ROUND_NUMBERS if metrics.get(k) is not None}
        fields["lost"] = sum(int(v) for v in (metrics.get("lost") or {}).values())
        fields["rejected"] = sum(int(v) for v in (metrics.get("rejected") or {}).values())
        top.set_attributes(_scalars(fields))

    def record_extras(self, run: Run) -> dict[str, Any]:
        if self.trace_id is None:
            return {}
        file = None if self.config.file is None else str(self.config.file)
        return {"trace": {"trace_id": self.trace_id, "service": self.service, "file": file}}

    def on_run_end(self, run: Run, history: History) -> None:
        if self.stack:
            span = self.stack[0]
            span.set_attribute("fedkit.rounds_completed", run.state.round)
            if run.stopped:
                span.set_attribute("fedkit.stopped", str(run.stopped.get("reason")))
            self._end_all(None)

    def _end_all(self, error: str | None) -> None:
        while self.stack:
            span = self.stack.pop()
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, error))
            span.end()

    def close(self) -> None:
        self._end_all("the run ended with an error")
        if self.provider is not None:
            self.provider.shutdown()
            self.provider = None


# ---- the client side -------------------------------------------------------------------
def node_trace_config(node_config: Mapping[str, Any]) -> TraceConfig | None:
    """What a node's config asks for: ``trace-file`` and/or ``otlp-endpoint`` (``None``:
    the node does not trace). :class:`TracingError` for a bad value."""
    config = TraceConfig(node_config.get("trace-file"), node_config.get("otlp-endpoint"))
    return config if config.enabled else None


@contextlib.contextmanager
def client_span(
    config: TraceConfig | None,
    parent: str | None,
    *,
    resource: Mapping[str, Any],
    attributes: Mapping[str, Any],
    name: str = "client.train",
) -> Iterator[trace.Span | None]:
    """A span of one ClientApp message (service ``fedkit-client``), a child of the
    server's span ``parent`` (a ``traceparent``; ``None``: a root), exported by a provider
    of its own that is shut down (flushed) when the message is done; yields ``None`` and
    does nothing when ``config`` is ``None``."""
    if config is None:
        yield None
        return
    provider = config.provider(CLIENT, resource)
    try:
        context = Context()
        if parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(parse_traceparent(parent)))
        span = provider.get_tracer(SCOPE).start_span(
            name, context=context, kind=SpanKind.CONSUMER, attributes=_scalars(attributes)
        )
        with ending(span):
            yield span
    finally:
        provider.shutdown()
