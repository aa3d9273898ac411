"""A bounded flood of Fleet API requests on loopback, for rate-limit tests and benchmarks.

    python -P fedkit/flower/local/flood.py --port P --source 127.0.0.2 --rate 1000 \\
        --duration 60 --count 70000 [--ca ca.pem] [--node-key KEY --node-id ID] [--json OUT]

:func:`flood` opens ``connections`` keep-alive HTTP/1.1 connections (TLS when ``ca`` is
given) from the loopback address ``source`` (any 127.x.y.z is on ``lo``, so per-source
limits tell the flood from honest nodes on 127.0.0.1) and sends ``POST path`` at ``rate``
requests/s until ``count`` requests or ``duration`` seconds, whichever comes first. A slow
server makes it fall behind, never send more. Every answer's status is counted; a
connection the server closes is reopened (counted under ``errors``).

Two kinds of source: without credentials (an unauthenticated client: an empty body and no
node headers), or :func:`node_request`, a registered node that signs its requests with its
real key (Flower's ``flwr-timestamp``/``flwr-signature``/``flwr-public-key`` headers; the
SuperLink accepts a signature for 300 s, so one signature serves a whole flood) and hammers
``pull-messages`` or ``send-node-heartbeat``. Only the standard library and ``attrs`` are
imported at the top, so the file runs by path without the ``fedkit`` package (and torch).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

CALLS = {
    "pull-messages": "/v1/fleet/pull-messages",
    "heartbeat": "/v1/fleet/send-node-heartbeat",
}


@attrs.frozen
class FloodSpec:
    """One flood: where, from where, how fast, how long, what (module doc)."""

    port: int
    host: str = "127.0.0.1"
    source: str = "127.0.0.2"
    rate: float = 1000.0
    duration: float = 3.0
    count: int = 3000
    connections: int = 16
    path: str = CALLS["pull-messages"]
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    ca: str | None = None  # TLS verified with this CA; None: plain HTTP
    server_name: str = "localhost"
    timeout: float = 10.0  # seconds for one answer

    def __attrs_post_init__(self) -> None:
        if not (self.rate > 0 and self.duration > 0 and self.count > 0 and self.connections > 0):
            raise ValueError(f"a flood needs rate, duration, count, connections > 0: {self}")


@attrs.frozen
class FloodResult:
    """What a flood sent and got back: ``statuses`` by HTTP status, ``errors`` by kind
    (connection failures, timeouts, closed connections)."""

    source: str
    offered: float  # requests/s asked for
    sent: int
    answered: int
    seconds: float
    statuses: dict[int, int]
    errors: dict[str, int]
    started: float = 0.0  # Unix time of the first request

    @property
    def achieved(self) -> float:
        """Answered requests per second."""
        return self.answered / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "achieved": self.achieved}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FloodResult:
        fields = {f.name for f in attrs.fields(cls)}
        data = {k: v for k, v in data.items() if k in fields}
        data["statuses"] = {int(k): v for k, v in data["statuses"].items()}
        return cls(**data)


def node_request(key: str | Path, node_id: int, call: str = "pull-messages") -> dict[str, Any]:
    """``path``, ``body`` and ``headers`` of a Fleet call signed as Flower's SuperNode signs
    it, for the node with OpenSSH private key ``key`` and id ``node_id``."""
    from base64 import b64encode

    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.proto.fleet_pb2 import PullMessagesRequest
    from flwr.proto.heartbeat_pb2 import SendNodeHeartbeatRequest
    from flwr.proto.node_pb2 import Node
    from flwr.supercore.date import now
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes, sign_message

    private = load_ssh_private_key(Path(key).read_bytes(), None)
    if call == "pull-messages":
        body = PullMessagesRequest(node=Node(node_id=node_id)).SerializeToString()
    elif call == "heartbeat":
        msg = SendNodeHeartbeatRequest(node=Node(node_id=node_id), heartbeat_interval=30.0)
        body = msg.SerializeToString()
    else:
        raise ValueError(f"call must be one of {sorted(CALLS)}, got {call!r}")
    stamp = now().isoformat()
    headers = (
        ("flwr-public-key", b64encode(public_key_to_bytes(private.public_key())).decode()),
        ("flwr-timestamp", stamp),
        ("flwr-signature", b64encode(sign_message(private, stamp.encode("ascii"))).decode()),
    )
    return {"path": CALLS[call], "body": body, "headers": headers}


def _request(spec: FloodSpec) -> bytes:
    head = [
        f"POST {spec.path} HTTP/1.1",
        f"Host: {spec.server_name}",
        "content-type: application/protobuf",
        "accept: application/protobuf",
        f"content-length: {len(spec.body)}",
        *(f"{k}: {v}" for k, v in spec.headers),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + spec.body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; its status and whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            fields[k.strip().lower()] = v.strip().lower()
    if fields.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(fields.get("content-length", "0")))
    return status, fields.get("connection") != "close"


async def _flood(spec: FloodSpec) -> FloodResult:
    request = _request(spec)
    context = None
    if spec.ca is not None:
        context = ssl.create_default_context(cafile=spec.ca)
    statuses: Counter = Counter()
    errors: Counter = Counter()
    slots = iter(range(spec.count))
    sent = 0
    t0, started = time.monotonic(), time.time()
    stop = t0 + spec.duration

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.wait_for(
            asyncio.open_connection(
                spec.host,
                spec.port,
                ssl=context,
                server_hostname=spec.server_name if context else None,
                local_addr=(spec.source, 0),
            ),
            spec.timeout,
        )

    async def worker() -> None:
        nonlocal sent
        conn = None
        while True:
            k = next(slots, None)
            due = t0 + (k or 0) / spec.rate
            if k is None or due >= stop or time.monotonic() >= stop:
                break
            if (delay := due - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            try:
                if conn is None:
                    conn = await connect()
                reader, writer = conn
                writer.write(request)
                sent += 1
                status, keep = await asyncio.wait_for(_answer(reader), spec.timeout)
                statuses[status] += 1
                if not keep:
                    writer.close()
                    conn = None
            except TimeoutError:
                errors["timeout"] += 1
                conn = _drop(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as exc:
                errors[type(exc).__name__] += 1
                conn = _drop(conn)
                await asyncio.sleep(0.01)
        _drop(conn)

    await asyncio.gather(*(worker() for _ in range(spec.connections)))
    return FloodResult(
        source=spec.source,
        offered=spec.rate,
        sent=sent,
        answered=sum(statuses.values()),
        seconds=time.monotonic() - t0,
        statuses=dict(statuses),
        errors=dict(errors),
        started=started,
    )


def _drop(conn: Any) -> None:
    if conn is not None:
        conn[1].close()
    return None


def flood(spec: FloodSpec) -> FloodResult:
    """Run one flood to its end (:class:`FloodSpec`)."""
    return asyncio.run(_flood(spec))


def command(spec: FloodSpec, out: Path, node: tuple[Path, int, str] | None = None) -> list[str]:
    """The command running :func:`main` for ``spec`` (by file path, stdlib and attrs only),
    writing its :class:`FloodResult` to ``out``; ``node``: ``(key, node id, call)`` signs
    the requests as that node (:func:`node_request`), else ``spec``'s path and no body."""
    cmd = [sys.executable, "-P", str(Path(__file__).resolve()), "--port", str(spec.port)]
    cmd += ["--host", spec.host, "--source", spec.source, "--rate", str(spec.rate)]
    cmd += ["--duration", str(spec.duration), "--count", str(spec.count)]
    cmd += ["--connections", str(spec.connections), "--json", str(out), "--path", spec.path]
    if spec.ca:
        cmd += ["--ca", spec.ca]
    if node is not None:
        cmd += ["--node-key", str(node[0]), "--node-id", str(node[1]), "--call", node[2]]
    return cmd


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--source", default="127.0.0.2", help="loopback address to send from")
    p.add_argument("--rate", type=float, default=1000.0, help="requests/s offered")
    p.add_argument("--duration", type=float, default=3.0, help="seconds at most")
    p.add_argument("--count", type=int, default=3000, help="requests at most")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--path", default=CALLS["pull-messages"])
    p.add_argument("--ca", default=None, help="CA file: TLS (else plain HTTP)")
    p.add_argument("--node-key", default=None, help="sign as this node (OpenSSH key)")
    p.add_argument("--node-id", type=int, default=0)
    p.add_argument("--call", default="pull-messages", choices=sorted(CALLS))
    p.add_argument("--json", default=None, help="write the result here")
    a = p.parse_args(argv)
    extra: dict[str, Any] = {"path": a.path}
    if a.node_key:
        extra = node_request(a.node_key, a.node_id, a.call)
    spec = FloodSpec(
        port=a.port,
        host=a.host,
        source=a.source,
        rate=a.rate,
        duration=a.duration,
        count=a.count,
        connections=a.connections,
        ca=a.ca,
        **extra,
    )
    result = flood(spec)
    text = json.dumps(result.to_json())
    if a.json:
        Path(a.json).write_text(text)
    print(text, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
