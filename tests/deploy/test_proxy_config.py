"""The rate-limiting proxy without Flower: its generated nginx configuration passes
``nginx -t``, and a real nginx in front of a stub HTTPS upstream refuses what it should
(unknown node keys, a source over its rate, a node over its rate, bodies over the cap,
non-Fleet paths), passes the rest re-encrypted, and its access log counts every request.
Also the pure parts: rate strings, the body cap, the key header, outcomes."""

from __future__ import annotations

import ssl
import threading
from base64 import b64encode
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import attrs
import pytest

from fedkit.flower.local.flood import FloodSpec, flood
from fedkit.flower.local.processes import DeployError
from fedkit.flower.local.proxy import (
    CHUNK,
    Proxy,
    ProxyLimits,
    ProxyTLS,
    _rate,
    key_header,
    known_keys,
    max_body_for,
    nginx_binary,
    outcome,
    refused,
    tally,
)
from fedkit.flower.pki import make_node_key, make_server_pki


def nginx_installed() -> bool:
    try:
        return bool(nginx_binary())
    except DeployError:
        return False


needs_nginx = pytest.mark.skipif(
    not nginx_installed(), reason="Debian's nginx is not installed (scripts/setup installs it)"
)


@pytest.fixture
def pki(tmp_path):
    return make_server_pki(tmp_path / "pki")


@needs_nginx
def test_generated_configs_pass_nginx_syntax_check(tmp_path, pki):
    _, pub = make_node_key(tmp_path / "pki", "node0")
    tls = ProxyTLS(pki.cert, pki.key, pki.ca)
    with_tls = Proxy(tmp_path / "tls", "127.0.0.1:9", tls=tls, known_keys=known_keys([("n", pub)]))
    with_tls.write()
    assert "test is successful" in with_tls.check()
    text = with_tls.config_path.read_text()
    assert "proxy_pass https://superlink;" in text and "proxy_ssl_verify on;" in text
    assert 'if ($fedkit_node = "") { return 401; }' in text
    assert f'"{key_header(pub)}" "n";' in (tmp_path / "tls" / "known-keys.conf").read_text()

    plain = Proxy(tmp_path / "plain", "127.0.0.1:9", limits=ProxyLimits(node_rate=0.5))
    plain.write()
    assert "test is successful" in plain.check()
    text = plain.config_path.read_text()
    assert "ssl" not in text and "return 401" not in text and "rate=30r/m" in text

    # a broken config is caught by the same check, with nginx's own message
    plain.config_path.write_text(text.replace("limit_req_status 429;", "limit_req_status;"))
    with pytest.raises(DeployError, match=r"nginx -t failed.*limit_req_status"):
        plain.check()


def test_limits_are_validated_and_rates_rendered():
    with pytest.raises(ValueError, match="source_rate must be > 0"):
        ProxyLimits(source_rate=0)
    assert [_rate(r) for r in (20, 0.5, 2.5, 1000)] == ["20r/s", "30r/m", "150r/m", "1000r/s"]


def test_body_cap_is_one_chunk_or_the_model_plus_margin(monkeypatch):
    monkeypatch.delenv("FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", raising=False)
    assert max_body_for() == CHUNK + 2**20
    assert max_body_for(4000, margin=100) == 4100
    assert max_body_for(10**9, margin=0) == CHUNK
    monkeypatch.setenv("FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE", "1000")
    assert max_body_for(10**9, margin=0) == 1000


def test_key_header_is_what_a_flower_supernode_sends(tmp_path):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key
    from flwr.supercore.primitives.asymmetric import public_key_to_bytes

    key, pub = make_node_key(tmp_path, "node")
    private = load_ssh_private_key(key.read_bytes(), None)
    sent = b64encode(public_key_to_bytes(private.public_key())).decode()
    assert key_header(pub) == sent


def test_outcomes_of_logged_requests(tmp_path):
    fleet = "/v1/fleet/pull-messages"
    cases = [
        ({"status": 200, "upstream": "200", "path": fleet}, "passed"),
        ({"status": 401, "upstream": "401", "path": fleet}, "superlink_401"),
        ({"status": 401, "upstream": "", "path": fleet}, "unknown_node"),
        ({"status": 429, "upstream": "", "req": "REJECTED", "path": fleet}, "rate"),
        ({"status": 429, "upstream": "", "conn": "REJECTED", "path": fleet}, "connections"),
        ({"status": 413, "upstream": "", "path": fleet}, "too_large"),
        ({"status": 404, "upstream": "", "path": "/v1/control/list-runs"}, "not_fleet"),
        ({"status": 403, "upstream": "", "method": "GET", "path": fleet}, "method"),
        ({"status": 502, "upstream": "502", "path": fleet}, "error_502"),
        ({"status": 504, "upstream": "", "path": fleet}, "error_504"),
    ]
    assert [outcome(e) for e, _ in cases] == [o for _, o in cases]
    log = tmp_path / "access.log"
    log.write_text(
        '{"t":1.0,"src":"127.0.0.2","status":401,"upstream":"","path":"/v1/fleet/x"}\n'
        '{"t":2.0,"src":"127.0.0.2","status":401,"upstream":"","path":"/v1/fleet/x"}\n'
        '{"t":2.5,"src":"127.0.0.1","status":200,"upstream":"200","path":"/v1/fleet/x"}\n'
        "not json\n"
    )
    counts = tally(log)
    assert counts["127.0.0.2"] == {"unknown_node": 2} and counts["?"] == {"unparsed": 1}
    assert refused(counts) == 2 and refused(counts, "127.0.0.1") == 0
    assert tally(log, since=1.5)["127.0.0.2"] == {"unknown_node": 1}


class Stub(BaseHTTPRequestHandler):
    """An HTTPS upstream that answers every POST 200 and counts what reached it."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str]] = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        Stub.seen.append(self.headers.get("flwr-public-key", ""))
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


@needs_nginx
@pytest.mark.timeout(120)
def test_nginx_refuses_unknown_keys_excess_rate_large_bodies_and_counts_everything(tmp_path, pki):
    _, pub = make_node_key(tmp_path / "pki", "node0")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(pki.cert, pki.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    Stub.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    limits = ProxyLimits(
        source_rate=1000, source_burst=1000, node_rate=5, node_burst=10, max_body=1000
    )
    proxy = Proxy(
        tmp_path / "proxy",
        f"127.0.0.1:{server.server_address[1]}",
        limits,
        ProxyTLS(pki.cert, pki.key, pki.ca),
        known_keys([("node0", pub)]),
    )
    node = (("flwr-public-key", key_header(pub)),)
    common = {"ca": str(pki.ca), "rate": 500.0, "duration": 5.0, "connections": 4}
    try:
        with proxy:
            port = proxy.port
            anon = flood(FloodSpec(port=port, source="127.0.0.2", count=300, **common))
            spec = FloodSpec(port=port, source="127.0.0.3", count=300, headers=node, **common)
            busy = flood(spec)
            big = flood(attrs.evolve(spec, source="127.0.0.4", count=3, body=b"x" * 2000))
            other = flood(attrs.evolve(spec, source="127.0.0.5", count=3, path="/v1/control/x"))
    finally:
        server.shutdown()
        server.server_close()
    counts = tally(proxy.access_log)

    # no credentials: every request refused by the proxy (401), none reached the upstream
    assert anon.answered == 300 and anon.statuses == {401: 300}
    assert counts["127.0.0.2"] == {"unknown_node": 300}
    # a known node over its rate: the burst and the rate pass, the rest is refused (429)
    passed = counts["127.0.0.3"]["passed"]
    assert busy.answered == 300 and busy.statuses == {200: passed, 429: 300 - passed}
    assert 10 <= passed <= 10 + 5 * busy.seconds + 2
    assert counts["127.0.0.3"] == {"passed": passed, "rate": 300 - passed}
    # a body over the cap (413) and a path that is not the Fleet API (404)
    assert big.statuses == {413: 3} and counts["127.0.0.4"] == {"too_large": 3}
    assert other.statuses == {404: 3} and counts["127.0.0.5"] == {"not_fleet": 3}
    # the upstream saw exactly the requests the proxy passed, all with the node's key
    assert Stub.seen == [key_header(pub)] * passed
    assert refused(counts) == 300 + (300 - passed) + 3 + 3
