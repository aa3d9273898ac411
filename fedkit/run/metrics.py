"""Prometheus metrics of a run: a driver callback (:class:`PrometheusMetrics`) filling its
own ``CollectorRegistry`` (never prometheus_client's global one) and, when given an
:class:`Endpoint`, a small HTTP server on it:

* ``/metrics``: the registry in Prometheus's text format;
* ``/healthz``: 200 while the run loop is alive: its last progress (start, a round begun or
  ended, an event) is younger than ``stall_after`` seconds, or the run has ended; 503
  ``stalled`` otherwise;
* ``/readyz``: 200 once the run has started and, when a node count is known, at least
  ``min_nodes`` nodes are connected; 503 (with the reason) before that and after the run.

Counters count what this process ran (a restarted or resumed server starts them at 0, as
Prometheus expects of counters); rounds replayed after a simulated server crash count again.
With ``linger`` > 0 the endpoint outlives the run until it has been scraped once after the
last round (at most ``linger`` s), so a scraper sees the final values. Metric names and
meanings: ``docs/operations.md``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fedkit.run import checkpoint as ckpt
from fedkit.run.callbacks import Callback

if TYPE_CHECKING:
    from fedkit.run.driver import Run
    from fedkit.run.history import History
    from fedkit.run.plan import RoundPlan

ROUND_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
NODE_REFRESH_S = 1.0  # a node count read at scrape time is reused for this long


def _positive(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0 s, got {value!r}")


def _non_negative(_: Any, attribute: attrs.Attribute, value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _port(_: Any, attribute: attrs.Attribute, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be an int in [0, 65535], got {value!r}")


@attrs.frozen
class Endpoint:
    """Where the metrics HTTP server listens (``port`` 0: a free port the OS picks), how long
    without progress counts as stalled (``stall_after`` s), how long it may wait for a last
    scrape after the run (``linger`` s) and the file it writes its address to
    (``address_file``, JSON: ``url``, ``host``, ``port``, ``pid``)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=0, validator=_port)
    stall_after: float = attrs.field(default=600.0, validator=_positive)
    linger: float = attrs.field(default=0.0, validator=_non_negative)
    address_file: Path | None = attrs.field(default=None, converter=attrs.converters.optional(Path))


class ServerMetrics:
    """The server's metric objects, registered in ``registry`` (a new one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = CollectorRegistry() if registry is None else registry
        self.rounds = Counter("fedkit_rounds_completed", "Rounds completed", registry=r)
        self.round = Gauge("fedkit_round", "Server state's round number", registry=r)
        self.rounds_planned = Gauge("fedkit_rounds_planned", "Rounds the run asks", registry=r)
        self.accepted = Counter("fedkit_replies_accepted", "Replies aggregated", registry=r)
        self.rejected = Counter(
            "fedkit_replies_rejected", "Replies rejected, by reason", ["reason"], registry=r
        )
        self.lost = Counter(
            "fedkit_clients_lost",
            "Asked clients with no usable reply, by reason",
            ["reason"],
            registry=r,
        )
        self.refusals = Counter(
            "fedkit_refusals",
            "Rounds refused by nodes (privacy floor), by reason",
            ["reason"],
            registry=r,
        )
        self.quorum_misses = Counter(
            "fedkit_quorum_misses",
            "Rounds with fewer accepted replies than the quorum",
            registry=r,
        )
        self.duration = Histogram(
            "fedkit_round_duration_seconds",
            "Wall time of a round",
            buckets=ROUND_BUCKETS,
            registry=r,
        )
        self.epsilon = Gauge("fedkit_epsilon", "Privacy budget spent (epsilon)", registry=r)
        self.budget_fraction = Gauge(
            "fedkit_budget_fraction", "Epsilon spent / target epsilon", registry=r
        )
        self.nodes = Gauge("fedkit_nodes_connected", "SuperNodes connected", registry=r)
        self.checkpoint_age = Gauge(
            "fedkit_checkpoint_age_seconds", "Seconds since the newest checkpoint", registry=r
        )
        self.test_accuracy = Gauge("fedkit_test_accuracy", "Latest test accuracy", registry=r)
        self.test_loss = Gauge("fedkit_test_loss", "Latest test loss", registry=r)
        self.train_loss = Gauge("fedkit_train_loss", "Latest mean local loss", registry=r)
        self.events = Counter("fedkit_events", "Run events, by kind", ["event"], registry=r)
        # a labelled gauge, not an Info: it exposes nothing until the run sets its labels (an
        # unset Info is exposed as a series without labels, which a scrape before the run
        # starts would record)
        self.info = Gauge(
            "fedkit_run_info",
            "The run: config fingerprint, seed, task (value 1)",
            ["fingerprint", "seed", "task", "transport"],
            registry=r,
        )


def series_names(registry: CollectorRegistry) -> set[str]:
    """Every series name ``registry`` can expose, labelled children or not: counters as
    ``_total`` and ``_created``, histograms as ``_bucket``, ``_sum``, ``_count`` and
    ``_created``, info as ``_info``, gauges as they are."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    return {fam.name + s for fam in registry.collect() for s in suffixes.get(fam.type, ("",))}


def _add(counter: Counter, counts: Any) -> None:
    for reason, n in (counts or {}).items():
        if n:
            counter.labels(reason=str(reason)).inc(int(n))


def _set(gauge: Gauge, value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        gauge.set(float(value))


def checkpoint_age(directory: Path, now: float) -> float:
    """Seconds since the newest checkpoint in ``directory`` was written (NaN: none)."""
    for r in ckpt.rounds_on_disk(directory):
        times = []
        for p in ckpt.paths(directory, r):
            try:
                times.append(p.stat().st_mtime)
            except OSError:  # pruned meanwhile
                continue
        if times:
            return max(0.0, now - max(times))
    return math.nan


class PrometheusMetrics(Callback):
    """Fills :class:`ServerMetrics` from the run and serves them on ``endpoint`` (module
    doc; ``None``: no HTTP, read ``self.metrics.registry``). ``nodes()`` gives the number of
    connected nodes (read at scrape time, at most every :data:`NODE_REFRESH_S`; without it
    the gauge follows the rounds' ``nodes`` metric); ``min_nodes`` is what ``/readyz``
    wants; ``checkpoint_dir`` is where checkpoints land (for their age)."""

    def __init__(
        self,
        endpoint: Endpoint | None = None,
        *,
        registry: CollectorRegistry | None = None,
        nodes: Callable[[], int] | None = None,
        min_nodes: int = 0,
        checkpoint_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(min_nodes, int) or min_nodes < 0:
            raise ValueError(f"min_nodes must be an int >= 0, got {min_nodes!r}")
        self.endpoint, self.nodes_fn, self.min_nodes = endpoint, nodes, min_nodes
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.metrics = ServerMetrics(registry)
        self.metrics.nodes.set_function(self._node_count)
        self.metrics.checkpoint_age.set_function(self._checkpoint_age)
        self._lock = threading.Lock()
        self._scraped = threading.Condition()
        self._nodes, self._nodes_at = math.nan, -math.inf
        self.progress = time.monotonic()
        self.started = self.ended = False
        self.round = 0
        self.scrapes = 0  # scrapes begun
        self._scrapes_at_end: int | None = None  # scrapes begun when the run ended
        self._final_scrape = False  # a scrape begun after the run ended has been answered
        self.server: ThreadingHTTPServer | None = None

    # ---- values read at scrape time ---------------------------------------------------
    def _node_count(self) -> float:
        if self.nodes_fn is None:
            return self._nodes
        with self._lock:
            if time.monotonic() - self._nodes_at >= NODE_REFRESH_S:
                try:
                    self._nodes = float(self.nodes_fn())
                except Exception:  # the grid is busy or gone: keep the last count
                    pass
                self._nodes_at = time.monotonic()
            return self._nodes

    def _checkpoint_age(self) -> float:
        if self.checkpoint_dir is None:
            return math.nan
        return checkpoint_age(self.checkpoint_dir, time.time())

    def health(self) -> tuple[int, str]:
        """``/healthz``: (status, text)."""
        if self.ended:
            return 200, "ok: run finished"
        idle = time.monotonic() - self.progress
        limit = self.endpoint.stall_after if self.endpoint is not None else math.inf
        if idle > limit:
            return 503, f"stalled: no progress for {idle:.0f} s (limit {limit:.0f} s)"
        return 200, f"ok: round {self.round}, last progress {idle:.1f} s ago"

    def readiness(self) -> tuple[int, str]:
        """``/readyz``: (status, text)."""
        if self.ended:
            return 503, "not ready: run finished"
        if not self.started:
            return 503, "not ready: run not started"
        nodes = self._node_count()
        if self.min_nodes and not nodes >= self.min_nodes:
            shown = "unknown" if math.isnan(nodes) else f"{nodes:.0f}"
            return 503, f"not ready: {shown} of {self.min_nodes} nodes connected"
        return 200, f"ready: round {self.round}"

    # ---- HTTP ---------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the endpoint and serve it from a daemon thread (once; no-op without one)."""
        if self.endpoint is None or self.server is not None:
            return
        where = (self.endpoint.host, self.endpoint.port)
        try:
            server = ThreadingHTTPServer(where, _Handler)
        except OSError as exc:
            raise RuntimeError(
                f"metrics endpoint: cannot listen on {where[0]}:{where[1]} ({exc}); pick "
                "another port (0: a free one)"
            ) from exc
        server.daemon_threads = True
        server.owner = self  # type: ignore[attr-defined]
        self.server = server
        threading.Thread(target=server.serve_forever, name="fedkit-metrics", daemon=True).start()
        if self.endpoint.address_file is not None:
            _write_address(self.endpoint.address_file, self.address)

    @property
    def address(self) -> dict[str, Any]:
        """Where the endpoint listens: ``url``, ``host``, ``port``, ``pid``."""
        if self.server is None:
            raise RuntimeError("the metrics endpoint is not started")
        host, port = self.server.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return {"url": f"http://{shown}:{port}", "host": host, "port": port, "pid": os.getpid()}

    def scrape_begins(self) -> int:
        """Number this scrape (:meth:`scrape_done` says when it was answered)."""
        with self._scraped:
            self.scrapes += 1
            return self.scrapes

    def scrape_done(self, ticket: int) -> None:
        with self._scraped:
            if self._scrapes_at_end is not None and ticket > self._scrapes_at_end:
                self._final_scrape = True
                self._scraped.notify_all()

    # ---- driver hooks -------------------------------------------------------------------
    def on_run_start(self, run: Run) -> None:
        self.start()
        m = self.metrics
        m.info.labels(
            fingerprint=str(run.fingerprint),
            seed="" if run.seed is None else str(run.seed),
            task=str(run.task.name),
            transport=str(run.transport.name),
        ).set(1)
        m.rounds_planned.set(run.rounds)
        m.round.set(run.state.round)
        self.round = run.state.round
        self.started, self.progress = True, time.monotonic()
        if self.nodes_fn is not None:
            self._node_count()  # first call from the driver's thread

    def before_round(self, run: Run, plan: RoundPlan) -> dict[str, Any] | None:
        self.progress = time.monotonic()
        return None

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        m = self.metrics
        m.rounds.inc()
        m.round.set(run.state.round)
        self.round = run.state.round
        m.accepted.inc(int(metrics.get("accepted") or 0))
        _add(m.rejected, metrics.get("rejected"))
        _add(m.lost, metrics.get("lost"))
        _add(m.refusals, metrics.get("refusals"))
        if metrics.get("quorum_missed"):
            m.quorum_misses.inc()
        if isinstance(metrics.get("wall_time"), int | float):
            m.duration.observe(float(metrics["wall_time"]))
        for gauge, name in (
            (m.epsilon, "epsilon"),
            (m.budget_fraction, "budget_fraction"),
            (m.test_accuracy, "test_accuracy"),
            (m.test_loss, "test_loss"),
            (m.train_loss, "train_loss"),
        ):
            _set(gauge, metrics.get(name))
        if self.nodes_fn is None and isinstance(metrics.get("nodes"), int):
            self._nodes = float(metrics["nodes"])
        self.progress = time.monotonic()

    def on_event(self, run: Run, event: Mapping[str, Any]) -> None:
        self.metrics.events.labels(event=str(event.get("event", "unknown"))).inc()
        self.progress = time.monotonic()

    def on_run_end(self, run: Run, history: History) -> None:
        self.ended, self.progress = True, time.monotonic()
        with self._scraped:
            self._scrapes_at_end = self.scrapes

    def close(self) -> None:
        """Wait (at most ``linger`` s) for a scrape after the run ended, then stop serving."""
        if self.server is None:
            return
        if self._scrapes_at_end is not None and self.endpoint.linger > 0:
            end = time.monotonic() + self.endpoint.linger
            with self._scraped:
                while not self._final_scrape and time.monotonic() < end:
                    self._scraped.wait(max(end - time.monotonic(), 0.0))
        server, self.server = self.server, None
        server.shutdown()
        server.server_close()


class _Handler(BaseHTTPRequestHandler):
    """``/metrics``, ``/healthz``, ``/readyz`` of the server's :class:`PrometheusMetrics`."""

    def do_GET(self) -> None:
        owner: PrometheusMetrics = self.server.owner  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        ticket = None
        if path == "/metrics":
            ticket = owner.scrape_begins()
            body = generate_latest(owner.metrics.registry)
            code, kind = 200, CONTENT_TYPE_PLAIN_0_0_4
        elif path in ("/healthz", "/readyz"):
            code, text = owner.health() if path == "/healthz" else owner.readiness()
            body, kind = (text + "\n").encode(), "text/plain; charset=utf-8"
        else:
            code, body, kind = 404, b"not found: /metrics, /healthz, /readyz\n", "text/plain"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if ticket is not None:
            owner.scrape_done(ticket)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a scrape every second would flood the ServerApp's log."""


def _write_address(path: Path, address: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dict(address), indent=1))
    os.replace(tmp, path)
