"""Serve a SuperNode's Prometheus metrics from its ClientApps' report file, on a cluster.

    python /app/deploy/node_metrics_server.py --file /var/lib/fedkit/node/metrics/report.jsonl \\
        [--host 0.0.0.0] [--port 9101]

Locally the node's warm launcher serves them (``fedkit.flower.local.launcher
--metrics-port``). Under Flower's Kubernetes executor there is no launcher: each ClientApp
is a pod that appends its line to the report file named by ``FEDKIT_NODE_METRICS_FILE``
(on the node's volume, ``deploy/k8s/executor/node-*.yaml``), and this process, a sidecar of
the SuperNode, serves the totals (:mod:`fedkit.flower.local.node_metrics`, loaded by file so
torch is not imported). It empties the file at start: counters begin at 0, as Prometheus
expects after a restart.
"""

from __future__ import annotations

import argparse
import importlib.util
import signal
import threading
from pathlib import Path
from typing import Any


def node_metrics() -> Any:
    """fedkit's ``node_metrics`` module, found without importing the ``fedkit`` package."""
    spec = importlib.util.find_spec("fedkit")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("fedkit is not installed in this Python")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "flower" / "local" / "node_metrics.py"
    )
    module_spec = importlib.util.spec_from_file_location("fedkit_node_metrics", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, required=True, help="the ClientApps' report file")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9101)
    args = parser.parse_args(argv)
    nm = node_metrics()
    server = nm.serve(nm.NodeMetrics(args.file), args.host, args.port)
    print(f"node metrics of {args.file} on http://{args.host}:{args.port}/metrics", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
