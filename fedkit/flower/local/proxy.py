"""A rate-limiting reverse proxy in front of the SuperLink's Fleet API: Debian's ``nginx``.

Flower 1.42's Fleet API is protobuf over HTTP/1.1 (``POST /v1/fleet/<call>``, one SuperLink
port that also serves the Control and Runtime APIs). :class:`Proxy` runs nginx on its own
loopback port; SuperNodes dial it instead of the SuperLink.

TLS is **terminated at the proxy and re-encrypted** to the SuperLink (nginx presents the
deployment's server certificate to the nodes and verifies the SuperLink's against the CA).
So the proxy sees each request and can limit requests, not only connections and bytes:

* only ``POST /v1/fleet/*`` is passed on; anything else (the Control API shares the port)
  is answered 404 by the proxy, other methods 403;
* with ``known_keys`` (node authentication on): a request whose ``flwr-public-key`` header
  is not a registered node's key is refused with 401 before it reaches the SuperLink. This
  is a filter, not authentication: the SuperLink still checks the signature (the header is
  public, so a forger passes the filter and is then held to that node's rate and refused
  401 by the SuperLink);
* per source address: requests/s with a burst (``limit_req``), concurrent requests
  (``limit_conn``); per node key: requests/s with a burst; in all: concurrent requests and
  open connections (``worker_connections``); request bodies up to ``max_body`` bytes;
  timeouts on slow headers, bodies and readers.

Flower's node authentication survives the proxy: a node signs a timestamp and sends it with
its public key in headers (``flwr-timestamp``, ``flwr-signature``, ``flwr-public-key``),
which nginx passes unchanged; nothing is bound to the TLS channel.

Every answered request is one JSON line in ``directory/access.log`` (source, status, path,
size, and why nginx refused it); :func:`tally` counts them by source and outcome.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from fedkit.flower.local.processes import DeployError, free_port, spawn_ready, stop_group

CHUNK = 5 * 1024 * 1024  # Flower's largest array chunk (FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE)


def max_body_for(model_bytes: int | None = None, margin: int = 1024 * 1024) -> int:
    """Largest legitimate Fleet request body: Flower pushes a model update as objects of at
    most one array chunk (5 MiB), so the cap is the smaller of the model and a chunk, plus
    ``margin`` for the protobuf envelope and the other objects of a message."""
    chunk = int(os.environ.get("FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", CHUNK))
    largest = chunk if model_bytes is None else min(int(model_bytes), chunk)
    return largest + margin


@attrs.frozen
class ProxyLimits:
    """What the proxy allows. Rates in requests/s; ``*_burst``: requests above the rate
    admitted at once before refusals start (429); ``*_conns``: concurrent requests; times
    in seconds. The defaults leave an honest node (a poll every 0.1-1 s, a few dozen
    requests when a message arrives) far below every limit."""

    source_rate: float = 100.0
    source_burst: int = 200
    node_rate: float = 20.0
    node_burst: int = 60
    source_conns: int = 32
    total_conns: int = 256
    worker_connections: int = 1024
    max_body: int = attrs.field(factory=max_body_for)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    send_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    upstream_timeout: float = 60.0
    workers: int = 1

    def __attrs_post_init__(self) -> None:
        for name in ("source_rate", "node_rate", "max_body", "header_timeout", "workers"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ProxyLimits.{name} must be > 0, got {getattr(self, name)!r}")


@attrs.frozen
class ProxyTLS:
    """The certificate nodes see (``cert``/``key``) and the CA the SuperLink's certificate
    is checked against, for the name ``upstream_name``."""

    cert: Path = attrs.field(converter=Path)
    key: Path = attrs.field(converter=Path)
    ca: Path = attrs.field(converter=Path)
    upstream_name: str = "localhost"


def key_header(public_key: str | Path | bytes) -> str:
    """The ``flwr-public-key`` header a node with this OpenSSH public key (a ``.pub`` file
    or its bytes) sends: base64 of the key's PEM SubjectPublicKeyInfo."""
    from cryptography.hazmat.primitives import serialization

    data = public_key if isinstance(public_key, bytes) else Path(public_key).read_bytes()
    key = serialization.load_ssh_public_key(data.strip())
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(pem).decode("ascii")


LOG_FORMAT = (
    '{"t":$msec,"src":"$remote_addr","method":"$request_method","path":"$uri",'
    '"status":$status,"upstream":"$upstream_status","bytes":$request_length,'
    '"rt":"$request_time","req":"$limit_req_status","conn":"$limit_conn_status",'
    '"node":"$fedkit_node"}'
)


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def render(
    directory: Path,
    *,
    listen: str,
    upstream: str,
    limits: ProxyLimits,
    tls: ProxyTLS | None,
    filter_keys: bool,
    user: str | None = None,
) -> str:
    """nginx's configuration (the module doc). ``filter_keys``: refuse requests whose key
    is not in ``directory/known-keys.conf`` (a ``map`` body :meth:`Proxy.write_keys`
    writes); ``user``: the workers' user when the master runs as root."""
    d = directory
    lim = limits
    scheme = "https" if tls else "http"
    lines = [
        "# generated by fedkit.flower.local.proxy",
        *([f"user {user};"] if user else []),
        f"worker_processes {lim.workers};",
        "daemon off;",
        f"pid {d / 'nginx.pid'};",
        f"error_log {d / 'error.log'} warn;",
        f"worker_rlimit_nofile {2 * lim.worker_connections + 64};",
        f"events {{ worker_connections {lim.worker_connections}; }}",
        "http {",
        *(f"  {kind}_temp_path {d / 'tmp' / kind};" for kind in TEMP_KINDS),
        "  server_tokens off;",
        f"  log_format fedkit escape=json '{LOG_FORMAT}';",
        "  map_hash_bucket_size 1024;",
        "  map $http_flwr_public_key $fedkit_node {",
        '    default "";',
        f"    include {d / 'known-keys.conf'};",
        "  }",
        f"  limit_req_zone $binary_remote_addr zone=per_source:4m rate={_rate(lim.source_rate)};",
        f"  limit_req_zone $fedkit_node_key zone=per_node:4m rate={_rate(lim.node_rate)};",
        "  map $fedkit_node $fedkit_node_key {",
        "    default $fedkit_node;",
        '    "" $http_flwr_public_key;',
        "  }",
        "  limit_conn_zone $binary_remote_addr zone=conn_source:4m;",
        "  limit_conn_zone $server_port zone=conn_total:1m;",
        "  limit_req_status 429;",
        "  limit_conn_status 429;",
        "  limit_req_log_level info;",
        "  limit_conn_log_level info;",
        f"  client_max_body_size {lim.max_body};",
        f"  client_body_buffer_size {lim.max_body};",  # bodies stay in memory
        f"  client_header_timeout {_seconds(lim.header_timeout)};",
        f"  client_body_timeout {_seconds(lim.body_timeout)};",
        f"  send_timeout {_seconds(lim.send_timeout)};",
        f"  keepalive_timeout {_seconds(lim.keepalive_timeout)};",
        "  keepalive_requests 100000;",
        "  upstream superlink {",
        f"    server {upstream};",
        "    keepalive 16;",
        "    keepalive_timeout 3s;",  # below uvicorn's 5 s: never reuse what it closes
        "  }",
        "  server {",
        f"    listen {listen}{' ssl' if tls else ''};",
    ]
    if tls:
        lines += [
            f"    ssl_certificate {tls.cert};",
            f"    ssl_certificate_key {tls.key};",
            "    ssl_protocols TLSv1.2 TLSv1.3;",
            "    ssl_session_cache shared:fedkit_tls:4m;",
        ]
    lines += [
        f"    access_log {d / 'access.log'} fedkit;",
        "    location /v1/fleet/ {",
        "      limit_except POST { deny all; }",
        *(['      if ($fedkit_node = "") { return 401; }'] if filter_keys else []),
        f"      limit_req zone=per_source burst={lim.source_burst} nodelay;",
        f"      limit_req zone=per_node burst={lim.node_burst} nodelay;",
        f"      limit_conn conn_source {lim.source_conns};",
        f"      limit_conn conn_total {lim.total_conns};",
        f"      proxy_pass {scheme}://superlink;",
        "      proxy_http_version 1.1;",
        '      proxy_set_header Connection "";',
        "      proxy_set_header X-Forwarded-For $remote_addr;",
        "      proxy_next_upstream off;",
        "      proxy_max_temp_file_size 0;",
        f"      proxy_connect_timeout {_seconds(min(lim.upstream_timeout, 10.0))};",
        f"      proxy_read_timeout {_seconds(lim.upstream_timeout)};",
        f"      proxy_send_timeout {_seconds(lim.upstream_timeout)};",
    ]
    if tls:
        lines += [
            "      proxy_ssl_verify on;",
            f"      proxy_ssl_trusted_certificate {tls.ca};",
            f"      proxy_ssl_name {tls.upstream_name};",
            "      proxy_ssl_server_name on;",
            "      proxy_ssl_session_reuse on;",
        ]
    lines += ["    }", "    location / { return 404; }", "  }", "}", ""]
    return "\n".join(lines)


TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _rate(per_second: float) -> str:
    """nginx takes whole requests per second or per minute."""
    if per_second >= 1 and float(per_second).is_integer():
        return f"{int(per_second)}r/s"
    return f"{max(1, round(per_second * 60))}r/m"


def nginx_binary() -> str:
    """Path of Debian's ``nginx`` (``apt-get install nginx``; ``scripts/setup``)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if Path(p).exists()), None
    )
    if found is None:
        raise DeployError(
            "nginx is not installed: `apt-get install -y nginx` (scripts/setup does it when "
            "run as root)"
        )
    return found


REFUSED = ("unknown_node", "rate", "connections", "too_large", "method", "not_fleet")


def outcome(entry: Mapping[str, Any]) -> str:
    """What became of one logged request: ``passed`` (the SuperLink answered it below 400),
    ``superlink_<status>`` (the SuperLink refused it, e.g. 401 for a bad signature), a
    refusal by the proxy (:data:`REFUSED`) or ``error_<status>`` (the proxy failed it: a
    slow client, an unreachable SuperLink: 502, 504)."""
    status = int(entry.get("status", 0))
    upstream = str(entry.get("upstream", "")).split(",")[-1].strip()
    if upstream.isdigit() and int(upstream) not in (502, 504):  # the SuperLink answered
        code = int(upstream)
        return "passed" if code < 400 else f"superlink_{code}"
    if entry.get("req") == "REJECTED":
        return "rate"
    if entry.get("conn") == "REJECTED":
        return "connections"
    if status == 413:
        return "too_large"
    if status == 404 and not str(entry.get("path", "")).startswith("/v1/fleet/"):
        return "not_fleet"
    if status == 401:
        return "unknown_node"
    if status == 403:
        return "method"
    return f"error_{status}"


def tally(log: Path, since: float = 0.0) -> dict[str, Counter]:
    """Requests in the access log (at or after Unix time ``since``) by source address,
    then by :func:`outcome`; lines that do not parse are counted under source ``?``, a
    last line without its newline is left for the next call."""
    counts: dict[str, Counter] = {}
    if not log.exists():
        return counts
    with open(log, errors="replace") as f:
        for line in f:
            if not line.endswith("\n"):
                break  # nginx is writing this line
            try:
                entry = json.loads(line)
                if float(entry["t"]) < since:
                    continue
                counts.setdefault(entry["src"], Counter())[outcome(entry)] += 1
            except (ValueError, KeyError, TypeError):
                counts.setdefault("?", Counter())["unparsed"] += 1
    return counts


def refused(counts: Mapping[str, Counter], source: str | None = None) -> int:
    """Requests the proxy refused (of ``source``, else all)."""
    sources = [source] if source is not None else list(counts)
    return sum(counts.get(s, Counter())[r] for s in sources for r in REFUSED)


@attrs.define(eq=False)
class Proxy:
    """nginx under ``directory`` on ``host:port`` (a free loopback port by default) in front
    of the SuperLink at ``upstream`` (``host:port``); see the module doc."""

    directory: Path = attrs.field(converter=Path)
    upstream: str
    limits: ProxyLimits = attrs.field(factory=ProxyLimits)
    tls: ProxyTLS | None = None
    known_keys: Mapping[str, str] | None = None  # header value -> node name; None: no filter
    host: str = "127.0.0.1"
    port: int = 0
    env: Mapping[str, str] | None = None
    proc: subprocess.Popen | None = None
    log: Any = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def access_log(self) -> Path:
        return self.directory / "access.log"

    @property
    def config_path(self) -> Path:
        return self.directory / "nginx.conf"

    def write_keys(self) -> None:
        lines = [f'"{k}" "{name}";' for k, name in (self.known_keys or {}).items()]
        (self.directory / "known-keys.conf").write_text("\n".join(lines) + "\n")

    def write(self) -> Path:
        """Write the configuration, the key map and the temp directories; the config's path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.port == 0:
            self.port = free_port(self.host)
        root = os.geteuid() == 0
        for kind in TEMP_KINDS:
            path = self.directory / "tmp" / kind
            path.mkdir(parents=True, exist_ok=True)
            if root:  # the workers run as nobody
                os.chown(path, 65534, 65534)
        self.write_keys()
        self.config_path.write_text(
            render(
                self.directory,
                listen=self.address,
                upstream=self.upstream,
                limits=self.limits,
                tls=self.tls,
                filter_keys=self.known_keys is not None,
                user="nobody nogroup" if root else None,
            )
        )
        return self.config_path

    def command(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            "-p",
            str(self.directory),
            "-c",
            str(self.config_path),
            "-e",
            str(self.directory / "error.log"),
            *extra,
        ]

    def check(self) -> str:
        """``nginx -t`` on the written configuration; its output. Raises if it fails."""
        done = subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise DeployError(f"nginx -t failed: {done.stderr.strip()}")
        return done.stderr

    def start(self, timeout: float = 30.0) -> Proxy:
        """Write and check the config, start nginx and wait until its port accepts."""
        self.write()
        self.check()
        self.proc, self.log = spawn_ready(
            "nginx",
            self.command(),
            cwd=self.directory,
            log=self.directory / "nginx.out",
            ready=self._listening,
            timeout=timeout,
            env=self.env,
            poll=0.05,
            log_hint=self.directory / "error.log",
        )
        return self

    def _listening(self) -> bool:
        with contextlib.suppress(OSError):
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        return False

    def allow(self, keys: Mapping[str, str]) -> None:
        """Add node keys (header value -> name) to the filter and reload nginx (SIGHUP: new
        workers take the new map; the rate-limit state is kept)."""
        if self.known_keys is None:
            raise DeployError("this proxy does not filter node keys")
        self.known_keys = {**self.known_keys, **keys}
        self.write_keys()
        if self.proc is not None:
            self.check()
            before = self._workers()
            os.kill(self.proc.pid, signal.SIGHUP)
            end = time.monotonic() + 10
            while (now := self._workers()) and now & before and time.monotonic() < end:
                time.sleep(0.05)  # until the old workers are gone

    def _workers(self) -> set[int]:
        if self.proc is None:
            return set()
        found = set()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                        found.add(int(entry.name))
        return found

    def tally(self, since: float = 0.0) -> dict[str, Counter]:
        """:func:`tally` of this proxy's access log."""
        return tally(self.access_log, since)

    def summary(self, since: float = 0.0) -> str:
        """One line: requests per source and what became of them."""
        counts = self.tally(since)
        parts = [
            f"{src}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
            for src, c in sorted(counts.items())
        ]
        return (
            f"{refused(counts)} refused; "
            + ("; ".join(parts) or "no requests")
            + (f" (log {self.access_log})")
        )

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def __enter__(self) -> Proxy:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def known_keys(public_keys: Iterable[tuple[str, Path]]) -> dict[str, str]:
    """``{header value: name}`` for ``(name, .pub path)`` pairs."""
    return {key_header(path): name for name, path in public_keys}
