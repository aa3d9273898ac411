"""The NFQUEUE delayer: its netlink messages (pure), and, as root in two namespaces joined
by a veth pair, TCP round trips between them taking at least the added delay each way with
every byte delivered, and traffic flowing again once healed."""

import struct
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaos import netns
from chaos import nfqueue_delay as nfq


def packet_message(packet_id: int) -> bytes:
    """A kernel NFQNL_MSG_PACKET carrying ``packet_id`` (plus an unrelated attribute)."""
    hdr = nfq.attribute(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 3))
    other = nfq.attribute(10, b"\x01\x02\x03")
    return nfq.queue_message(nfq.NFQNL_MSG_PACKET, 7, [other, hdr], 0, 0)


def error_message(errno: int) -> bytes:
    body = struct.pack("=i", -errno) + bytes(16)
    return nfq._HEADER.pack(16 + len(body), nfq.NLMSG_ERROR, 0, 1, 0) + body


@given(st.lists(st.integers(0, 2**32 - 1), max_size=8))
def test_packet_ids_parse_back(ids):
    assert nfq.parse(b"".join(packet_message(i) for i in ids)) == (ids, [])


@given(st.binary(max_size=9))
def test_attributes_are_padded_to_four_bytes(payload):
    out = nfq.attribute(3, payload)
    assert len(out) % 4 == 0
    assert struct.unpack_from("=HH", out) == (4 + len(payload), 3)
    assert out[4 : 4 + len(payload)] == payload


def test_acks_and_errors_are_reported():
    assert nfq.parse(error_message(0) + error_message(1)) == ([], [0, 1])


def test_verdict_accepts_the_packet_of_its_queue():
    msg = nfq.verdict_message(7, 0xABCDEF01)
    size, kind, flags, _, _ = nfq._HEADER.unpack_from(msg)
    assert size == len(msg) == 16 + 4 + 12
    assert kind == (nfq.NFNL_SUBSYS_QUEUE << 8) | nfq.NFQNL_MSG_VERDICT
    assert flags == nfq.NLM_F_REQUEST
    assert struct.unpack_from("!H", msg, 18)[0] == 7  # nfgenmsg res_id: the queue
    assert struct.unpack_from("!II", msg, 24) == (nfq.NF_ACCEPT, 0xABCDEF01)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        nfq.main(["--queue", "7", "--delay-ms", "-1"])


ECHO_SERVER = textwrap.dedent(
    """
    import socket
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("{ip}", 7777)); s.listen(); print("listening", flush=True)
    c, _ = s.accept()
    while data := c.recv(4096):
        c.sendall(data)
    """
)
ECHO_CLIENT = textwrap.dedent(
    """
    import socket, time
    c = socket.create_connection(("{ip}", 7777), timeout=60)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    times = []
    for i in range({n}):
        msg = f"message {{i}}".encode()
        t = time.monotonic(); c.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += c.recv(4096)
        times.append(time.monotonic() - t)
        assert got == msg, got
    print(min(times))
    """
)


def round_trips(topo, n: int) -> float:
    """The fastest of ``n`` echo round trips from the nodes' namespace to the server's."""
    out = subprocess.run(
        [*topo.in_nodes(), sys.executable, "-c", ECHO_CLIENT.format(ip=netns.SERVER_IP, n=n)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return float(out.stdout.strip())


@pytest.mark.root
@pytest.mark.skipif(bool(netns.missing_tools("ip", "iptables")), reason="needs root, ip, iptables")
def test_every_packet_is_delayed_and_delivered():
    with netns.topology() as topo:
        for phase in ("delayed", "healed"):
            echo = ECHO_SERVER.format(ip=netns.SERVER_IP)
            server = subprocess.Popen(
                [*topo.in_server(), sys.executable, "-c", echo],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout.readline().strip() == "listening"
                if phase == "delayed":
                    netns.delay(topo, ms=150)
                    assert round_trips(topo, 5) >= 0.3  # 150 ms out, 150 ms back
                    netns.heal(topo)
                else:  # healed: no NFQUEUE rule left, and every byte still comes back
                    rules = subprocess.run(
                        [*topo.in_nodes(), "iptables", "-S"], capture_output=True, text=True
                    )
                    assert "NFQUEUE" not in rules.stdout
                    round_trips(topo, 3)
            finally:
                server.kill()
                server.wait()
                server.stdout.close()
