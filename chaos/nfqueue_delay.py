"""Added network delay without netem: packets sent to an iptables ``NFQUEUE`` are held here
for ``delay`` seconds, then accepted.

The kernel of these machines has no ``sch_netem`` but has ``nfnetlink_queue``, so a rule
``iptables -A OUTPUT ... -j NFQUEUE --queue-num N --queue-bypass`` hands each matching
packet to the userspace listener of queue ``N``; it stays in the kernel until the listener
gives a verdict. This module is that listener, speaking the nfnetlink queue protocol over a
plain ``AF_NETLINK`` socket (no libnetfilter_queue, no compiled package): bind to the queue,
ask for packet metadata only (``NFQNL_COPY_META``), and answer ``NF_ACCEPT`` for packet
``id`` once its delay has passed (verdicts may come in any order). ``--queue-bypass`` lets
packets through while no listener is bound, so a dead delayer never partitions the network.

Run it inside the namespace that owns the rule: ``ip netns exec NS python -m
chaos.nfqueue_delay --queue 7 --delay-ms 100``; it prints ``bound`` once listening and
accepts every held packet on SIGTERM / SIGINT before exiting.
"""

from __future__ import annotations

import argparse
import heapq
import select
import signal
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET, NFQNL_MSG_VERDICT, NFQNL_MSG_CONFIG = 0, 1, 2
NFQA_CFG_CMD, NFQA_CFG_PARAMS = 1, 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_PACKET_HDR, NFQA_VERDICT_HDR = 1, 2
NF_ACCEPT = 1
NLM_F_REQUEST, NLM_F_ACK = 1, 4
NLMSG_ERROR = 2
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id


def attribute(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (length, type, payload), padded to 4 bytes."""
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def queue_message(kind: int, queue: int, attributes: list[bytes], flags: int, seq: int) -> bytes:
    """An nfnetlink queue message: nlmsghdr, nfgenmsg (AF_UNSPEC, v0, queue) and attributes."""
    body = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack("!H", queue) + b"".join(attributes)
    kind = (NFNL_SUBSYS_QUEUE << 8) | kind
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, seq, 0) + body


def bind_messages(queue: int) -> list[bytes]:
    """Bind to ``queue`` and copy packet metadata only (both acknowledged)."""
    flags = NLM_F_REQUEST | NLM_F_ACK
    bind = attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))
    params = attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    return [
        queue_message(NFQNL_MSG_CONFIG, queue, [bind], flags, 1),
        queue_message(NFQNL_MSG_CONFIG, queue, [params], flags, 2),
    ]


def verdict_message(queue: int, packet_id: int) -> bytes:
    """Accept packet ``packet_id`` of ``queue``."""
    hdr = attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    return queue_message(NFQNL_MSG_VERDICT, queue, [hdr], NLM_F_REQUEST, 0)


def parse(data: bytes) -> tuple[list[int], list[int]]:
    """``(packet ids, error codes)`` in a buffer of netlink messages (acks have code 0)."""
    ids, errors, at = [], [], 0
    while at + _HEADER.size <= len(data):
        size, kind, _, _, _ = _HEADER.unpack_from(data, at)
        if size < _HEADER.size:
            break
        if kind == NLMSG_ERROR:
            errors.append(-struct.unpack_from("=i", data, at + _HEADER.size)[0])
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos, end = at + _HEADER.size + 4, at + size  # skip nfgenmsg
            while pos + 4 <= end:
                length, attr_kind = struct.unpack_from("=HH", data, pos)
                if length < 4:
                    break
                if attr_kind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", data, pos + 4)[0])
                pos += (length + 3) & ~3
        at += (size + 3) & ~3
    return ids, errors


def open_queue(queue: int) -> socket.socket:
    """A netlink socket bound to NFQUEUE ``queue`` (raises ``OSError`` if the kernel says no)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, 0))
    for message in bind_messages(queue):
        sock.send(message)
        _, errors = parse(sock.recv(65536))
        if any(errors):
            sock.close()
            raise OSError(max(errors), f"binding NFQUEUE {queue} failed (errno {max(errors)})")
    return sock


def run(queue: int, delay: float) -> None:
    """Hold every packet of ``queue`` for ``delay`` s, then accept it; until SIGTERM/SIGINT."""
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(True))
    sock = open_queue(queue)
    print("bound", flush=True)
    held: list[tuple[float, int]] = []
    try:
        while not stop:
            wait = max(0.0, held[0][0] - time.monotonic()) if held else 0.5
            try:
                ready, _, _ = select.select([sock], [], [], wait)
            except InterruptedError:
                continue
            if ready:
                try:
                    ids, _ = parse(sock.recv(1 << 16))
                except OSError:  # ENOBUFS: the kernel dropped some; they time out
                    ids = []
                due = time.monotonic() + delay
                for packet_id in ids:
                    heapq.heappush(held, (due, packet_id))
            now = time.monotonic()
            while held and held[0][0] <= now:
                sock.send(verdict_message(queue, heapq.heappop(held)[1]))
    finally:
        for _, packet_id in held:
            sock.send(verdict_message(queue, packet_id))
        sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queue", type=int, required=True, help="NFQUEUE number")
    parser.add_argument("--delay-ms", type=float, required=True, help="added delay")
    args = parser.parse_args(argv)
    if args.delay_ms < 0 or not 0 <= args.queue < 65536:
        parser.error("--delay-ms must be >= 0 and --queue in [0, 65535]")
    run(args.queue, args.delay_ms / 1000.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
