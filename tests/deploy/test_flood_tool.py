"""The flood tool (:mod:`fedkit.flower.local.flood`) against a small HTTP server of the test's
own on loopback: every request it sends is counted once, answered or as an error, at no
more than the offered rate, and its command line writes the same result as JSON. Bounded:
a few dozen requests to 127.0.0.1."""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from fedkit.flower.local.flood import FloodResult, FloodSpec, command, flood, main, node_request


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SuperLink's Fleet API
    seen: ClassVar[list[str]] = []
    lock = threading.Lock()
    chunked = False

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        self.rfile.read(length)
        with Handler.lock:  # handler threads run concurrently
            Handler.seen.append(self.path)
            status = 429 if len(Handler.seen) % 5 == 0 else 200  # a rate limiter's refusals
        body = b"ok" if status == 200 else b"slow down"
        self.send_response(status)
        if Handler.chunked:  # as a proxy streaming its answer
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
            return
        self.send_header("content-length", str(len(body)))
        if status == 429:
            self.send_header("connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def server():
    Handler.seen = []
    Handler.chunked = False
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_every_request_is_counted_once_by_status(server):
    spec = FloodSpec(
        port=server, source="127.0.0.1", rate=200, count=40, duration=10.0, connections=3
    )
    result = flood(spec)
    assert result.sent == 40 == len(Handler.seen)
    assert result.answered == 40 and not result.errors, result
    assert result.statuses == {200: 32, 429: 8}
    assert result.seconds >= 39 / 200  # paced: request k is not sent before k / rate s
    assert set(Handler.seen) == {spec.path}


def test_a_closed_port_is_counted_as_errors_not_raised():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = flood(
        FloodSpec(port=port, source="127.0.0.1", rate=50, count=5, duration=2.0, connections=1)
    )
    assert result.answered == 0 and sum(result.errors.values()) >= 1, result


def test_the_command_line_writes_the_result_as_json(server, tmp_path, capsys):
    out = tmp_path / "flood.json"
    argv = ["--port", str(server), "--source", "127.0.0.1", "--rate", "100", "--count", "10"]
    assert main([*argv, "--connections", "2", "--duration", "5", "--json", str(out)]) == 0
    written = json.loads(out.read_text())
    assert written == json.loads(capsys.readouterr().out)
    assert written["sent"] == 10 and written["answered"] == 10


def test_a_flood_without_rate_or_count_is_refused():
    with pytest.raises(ValueError, match="rate, duration, count, connections > 0"):
        FloodSpec(port=1, rate=0)


def test_chunked_answers_are_read_whole_and_the_result_survives_json(server):
    Handler.chunked = True
    spec = FloodSpec(
        port=server, source="127.0.0.1", rate=200, count=12, duration=5.0, connections=2
    )
    result = flood(spec)
    assert result.answered == 12 and not result.errors, result
    assert FloodResult.from_json(json.loads(json.dumps(result.to_json()))) == result


def test_the_command_a_deployment_spawns_is_the_flood_it_was_given(server, tmp_path, capsys):
    spec = FloodSpec(
        port=server, source="127.0.0.1", rate=100, count=8, duration=5.0, connections=2
    )
    out = tmp_path / "flood.json"
    argv = command(spec, out)
    assert argv[:2] == [sys.executable, "-P"] and argv[2].endswith("flood.py")
    assert main(argv[3:]) == 0  # what the spawned interpreter runs
    result = FloodResult.from_json(json.loads(out.read_text()))
    assert (result.sent, result.answered, result.offered) == (8, 8, 100.0)
    signed = command(spec, out, node=(tmp_path / "key", 42, "heartbeat"))
    assert signed[-6:] == [
        "--node-key",
        str(tmp_path / "key"),
        "--node-id",
        "42",
        "--call",
        "heartbeat",
    ]


@pytest.mark.parametrize("call", ["pull-messages", "heartbeat"])
def test_a_node_request_is_signed_as_a_supernode_signs_it(tmp_path, call):
    from base64 import b64decode

    from cryptography.hazmat.primitives.serialization import load_ssh_public_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes, verify_signature

    from fedkit.flower.pki import make_node_key

    key, pub = make_node_key(tmp_path, "flooder")
    request = node_request(key, 7, call)
    headers = dict(request["headers"])
    public = load_ssh_public_key(pub.read_bytes())
    assert b64decode(headers["flwr-public-key"]) == public_key_to_bytes(public)
    stamp = headers["flwr-timestamp"].encode("ascii")
    assert verify_signature(public, stamp, b64decode(headers["flwr-signature"]))
    assert not verify_signature(public, stamp + b"x", b64decode(headers["flwr-signature"]))
    assert request["body"] and request["path"].startswith("/")
    with pytest.raises(ValueError, match="call must be one of"):
        node_request(key, 7, "delete-everything")
