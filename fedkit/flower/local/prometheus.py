"""A Prometheus server for a deployment on this machine: Debian's ``prometheus`` binary on
loopback, scraping the ServerApp and every node.

:class:`Prometheus` writes a scrape config (``directory/prometheus.yml``: one job per kind of
target, each target with its labels, a short scrape interval), keeps its TSDB in
``directory/data`` and listens on ``--web.listen-address=HOST:PORT`` (a free loopback port by
default); nothing else is enabled (no remote write, no admin API). :meth:`query` asks the
HTTP API (``/api/v1/query``). Started again on the same directory with no targets, it
answers queries about a finished run from the saved TSDB.

A target that is gone (a ServerApp that exited) gets staleness markers, so ask for the
values of a finished run with ``max_over_time(m[1h])`` or ``last_over_time``, not ``m``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from fedkit.flower.local.processes import DeployError, free_port, spawn_ready, stop_group


@attrs.frozen
class Target:
    """One scrape target: ``host:port`` in job ``job`` with extra ``labels``."""

    job: str
    address: str
    labels: Mapping[str, str] = attrs.field(factory=dict)


def scrape_config(targets: Sequence[Target], interval: float) -> dict[str, Any]:
    """Prometheus's configuration scraping ``targets`` every ``interval`` seconds (a job per
    distinct ``job``; JSON is YAML, so this is what ``prometheus.yml`` holds)."""
    if not interval > 0:
        raise ValueError(f"scrape interval must be > 0 s, got {interval!r}")
    every = f"{round(interval * 1000)}ms"
    jobs: dict[str, list[dict[str, Any]]] = {}
    for t in targets:
        jobs.setdefault(t.job, []).append({"targets": [t.address], "labels": dict(t.labels)})
    return {
        "global": {"scrape_interval": every, "scrape_timeout": every, "evaluation_interval": every},
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": configs}
            for job, configs in jobs.items()
        ],
    }


def prometheus_binary() -> str:
    """Path of Debian's ``prometheus`` (``apt-get install prometheus``; ``scripts/setup``)."""
    found = shutil.which("prometheus")
    if found is None:
        raise DeployError(
            "prometheus is not installed: `apt-get install -y prometheus` (scripts/setup does "
            "it when run as root)"
        )
    return found


@attrs.define(eq=False)
class Prometheus:
    """A Prometheus server under ``directory`` scraping ``targets`` (module doc)."""

    directory: Path = attrs.field(converter=Path)
    targets: Sequence[Target] = ()
    interval: float = 1.0
    host: str = "127.0.0.1"
    port: int = 0
    env: Mapping[str, str] | None = None  # its environment (default: this process's)
    proc: subprocess.Popen | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            prometheus_binary(),
            f"--config.file={self.directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address={self.host}:{self.port}",
            "--log.level=warn",
        ]

    def start(self, timeout: float = 60.0) -> Prometheus:
        """Write the config, start the server and wait until ``/-/ready`` answers 200."""
        self.directory.mkdir(parents=True, exist_ok=True)
        config = scrape_config(self.targets, self.interval)
        (self.directory / "prometheus.yml").write_text(json.dumps(config, indent=1))
        if self.port == 0:
            self.port = free_port(self.host)
        self.proc, self.log = spawn_ready(
            "prometheus",
            self.command(),
            cwd=self.directory,
            log=self.directory / "prometheus.log",
            ready=self._ready,
            timeout=timeout,
            env=self.env,
            poll=0.2,
        )
        return self

    def _ready(self) -> bool:
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                return r.status == 200
        return False

    def api(self, path: str, **params: Any) -> Any:
        """``data`` of a Prometheus HTTP API answer (``/api/v1/<path>``)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                answer = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
        if answer.get("status") != "success":
            raise DeployError(f"prometheus {path} {params}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector as ``(labels, value)`` pairs."""
        data = self.api("query", query=expr)
        if data["resultType"] != "vector":
            raise DeployError(f"{expr!r} gives a {data['resultType']}, not a vector")
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def wait_scraped(self, since: float, job: str, timeout: float = 30.0) -> dict[str, float]:
        """Wait until every target of ``job`` has been scraped after ``since`` (Unix time);
        ``{instance: time of its last scrape}``. Raises after ``timeout`` s."""
        end = time.monotonic() + timeout
        wanted = {t.address for t in self.targets if t.job == job}
        while True:
            seen = {m["instance"]: v for m, v in self.query(f'timestamp(up{{job="{job}"}})')}
            if wanted and all(seen.get(a, 0.0) >= since for a in wanted):
                return seen
            if time.monotonic() > end:
                raise DeployError(f"{job} targets not scraped since {since}: {seen}")
            time.sleep(self.interval / 2)

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> Prometheus:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
