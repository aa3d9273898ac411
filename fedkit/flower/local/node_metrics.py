"""A SuperNode's own Prometheus metrics, kept by its long-lived launcher.

Each ClientApp task runs in a short-lived child of the node's launcher
(:mod:`fedkit.flower.local.launcher`), so no task can hold a counter. Instead a task appends
one JSON line per message to the node's report file (:func:`report`; the file named by
``FEDKIT_NODE_METRICS_FILE``, which the launcher sets for its children; without it nothing is
written). The launcher reads the lines that arrived since the last scrape when it is scraped
(:class:`NodeMetrics`) and serves the totals on ``--metrics-port``:

* ``fedkit_node_messages_total{outcome}``: messages answered (``trained``, ``refused``,
  ``error``: the request was malformed or training raised);
* ``fedkit_node_train_seconds``: local training time per trained message (histogram);
* ``fedkit_node_bytes_sent_total``: bytes of the updates sent;
* ``fedkit_node_refusals_total{reason}``: requests refused (the node's privacy floor);
* ``fedkit_node_tasks_started_total`` / ``fedkit_node_tasks_failed_total``: ClientApp
  children the launcher forked / that exited non-zero;
* ``fedkit_node_bad_reports_total``: report lines that did not parse.

Only the standard library at import: the launcher loads this file without the ``fedkit``
package (and torch); ``prometheus_client`` is imported by :class:`NodeMetrics`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV = "FEDKIT_NODE_METRICS_FILE"
OUTCOMES = ("trained", "refused", "error")
TRAIN_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)


def report(
    outcome: str,
    *,
    seconds: float | None = None,
    bytes_sent: int = 0,
    reason: str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> bool:
    """Append one message's line to the report file (``path``, default
    ``$FEDKIT_NODE_METRICS_FILE``); ``False`` when there is none. One ``O_APPEND`` write of a
    short line, so concurrent tasks never interleave."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    target = path if path is not None else os.environ.get(ENV)
    if not target:
        return False
    line = {"outcome": outcome, "seconds": seconds, "bytes": int(bytes_sent), "reason": reason}
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)
    return True


class NodeMetrics:
    """The node's metrics (module doc), read from the report file ``path`` at each scrape.
    ``registry`` (a new ``CollectorRegistry``) is what to serve; the file is emptied at
    start: counters begin at 0 with the launcher."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.offset, self.tail = 0, b""
        self._lock = threading.Lock()
        r = self.inner = CollectorRegistry()
        self.messages = Counter(
            "fedkit_node_messages", "Messages answered, by outcome", ["outcome"], registry=r
        )
        self.train_seconds = Histogram(
            "fedkit_node_train_seconds", "Local training time", buckets=TRAIN_BUCKETS, registry=r
        )
        self.bytes_sent = Counter("fedkit_node_bytes_sent", "Update bytes sent", registry=r)
        self.refusals = Counter(
            "fedkit_node_refusals", "Requests refused, by reason", ["reason"], registry=r
        )
        self.started = Counter("fedkit_node_tasks_started", "ClientApp tasks forked", registry=r)
        self.failed = Counter(
            "fedkit_node_tasks_failed", "ClientApp tasks exited non-zero", registry=r
        )
        self.bad = Counter("fedkit_node_bad_reports", "Report lines not parsed", registry=r)
        for outcome in OUTCOMES:  # every outcome exposed, at 0 until seen
            self.messages.labels(outcome=outcome)
        self.registry = CollectorRegistry()
        self.registry.register(self)

    def ingest(self) -> int:
        """Fold the whole lines appended since the last call into the metrics; how many."""
        with self._lock:
            try:
                with open(self.path, "rb") as f:
                    f.seek(self.offset)
                    data = f.read()
            except FileNotFoundError:
                data = b""
            self.offset += len(data)
            *lines, self.tail = (self.tail + data).split(b"\n")
            for line in lines:
                if line.strip():
                    self._add(line)
            return len(lines)

    def _add(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
            outcome = entry["outcome"]
            if outcome not in OUTCOMES:
                raise ValueError(outcome)
        except (ValueError, KeyError, TypeError):
            self.bad.inc()
            return
        self.messages.labels(outcome=outcome).inc()
        seconds, sent = entry.get("seconds"), entry.get("bytes")
        if isinstance(seconds, int | float) and seconds >= 0:
            self.train_seconds.observe(float(seconds))
        if isinstance(sent, int) and sent > 0:
            self.bytes_sent.inc(sent)
        if outcome == "refused":
            self.refusals.labels(reason=str(entry.get("reason") or "unknown")).inc()

    def task_started(self) -> None:
        self.started.inc()

    def task_exited(self, code: int | None) -> None:
        if code not in (0, None):
            self.failed.inc()

    def collect(self) -> Iterator[Any]:
        """What a scrape of :attr:`registry` sees: the new reports folded in first."""
        self.ingest()
        yield from self.inner.collect()


def serve(metrics: NodeMetrics, host: str, port: int) -> Any:
    """Serve ``metrics.registry`` on ``host:port`` from a daemon thread; the server (its
    ``shutdown()`` stops it)."""
    from prometheus_client import start_http_server

    server, _ = start_http_server(port, addr=host, registry=metrics.registry)
    return server
