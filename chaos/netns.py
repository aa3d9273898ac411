"""Network faults between SuperNodes and the SuperLink, in network namespaces (needs root).

:func:`topology` makes two namespaces joined by a veth pair: the server side holds
198.18.0.1, the nodes' side 198.18.0.2 (RFC 2544 benchmarking range; nothing else is
touched), and removes both namespaces on exit, whatever happens. Faults act in the nodes'
namespace on traffic to and from the SuperLink:

* :func:`random_loss` ``iptables -m statistic --mode random`` DROP of incoming TCP;
* :func:`partition` DROP of everything to the SuperLink; :func:`heal` flushes the rules;
* :func:`resets` REJECT ``--reject-with tcp-reset`` of TCP to the SuperLink;
* :func:`bandwidth_cap` a ``tbf`` qdisc on the nodes' veth end;
* :func:`delay` added latency: the kernel has no netem, so packets to and from the
  SuperLink go to an iptables ``NFQUEUE`` whose listener (:mod:`chaos.nfqueue_delay`, run
  inside the nodes' namespace) holds each one for the delay before accepting it.
  :func:`heal` also stops the delayer.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import attrs

SERVER_IP = "198.18.0.1"
NODES_IP = "198.18.0.2"
DELAYER = Path(__file__).with_name("nfqueue_delay.py")
_delayers: dict[str, subprocess.Popen] = {}  # nodes namespace -> its running delayer


def missing_tools(*tools: str) -> list[str]:
    """Why namespace faults needing ``tools`` (default ip, iptables, tc) cannot run here
    (empty when they can)."""
    why = [] if os.geteuid() == 0 else ["not root"]
    tools = tools or ("ip", "iptables", "tc")
    return why + [f"{t} not installed" for t in tools if not shutil.which(t)]


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


@attrs.frozen
class Topology:
    server_ns: str
    nodes_ns: str
    server_dev: str
    nodes_dev: str

    def in_server(self) -> list[str]:
        return ["ip", "netns", "exec", self.server_ns]

    def in_nodes(self) -> list[str]:
        return ["ip", "netns", "exec", self.nodes_ns]

    def nodes_iptables(self, *rule: str) -> None:
        sh(*self.in_nodes(), "iptables", *rule)


@contextlib.contextmanager
def topology() -> Iterator[Topology]:
    """Two namespaces joined by a veth pair; both are deleted on exit."""
    tag = uuid.uuid4().hex[:6]
    topo = Topology(f"fk-srv-{tag}", f"fk-nodes-{tag}", f"fk{tag}s", f"fk{tag}n")
    try:
        sh("ip", "netns", "add", topo.server_ns)
        sh("ip", "netns", "add", topo.nodes_ns)
        sh("ip", "link", "add", topo.server_dev, "type", "veth", "peer", "name", topo.nodes_dev)
        sh("ip", "link", "set", topo.server_dev, "netns", topo.server_ns)
        sh("ip", "link", "set", topo.nodes_dev, "netns", topo.nodes_ns)
        for ns, dev, ip in (
            (topo.server_ns, topo.server_dev, SERVER_IP),
            (topo.nodes_ns, topo.nodes_dev, NODES_IP),
        ):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        yield topo
    finally:
        stop_delay(topo)
        for ns in (topo.nodes_ns, topo.server_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def random_loss(topo: Topology, probability: float = 0.1) -> None:
    topo.nodes_iptables(
        "-A",
        "INPUT",
        "-p",
        "tcp",
        "-s",
        SERVER_IP,
        "-m",
        "statistic",
        "--mode",
        "random",
        "--probability",
        str(probability),
        "-j",
        "DROP",
    )


def partition(topo: Topology) -> None:
    topo.nodes_iptables("-A", "OUTPUT", "-d", SERVER_IP, "-j", "DROP")


def resets(topo: Topology) -> None:
    topo.nodes_iptables(
        "-A", "OUTPUT", "-p", "tcp", "-d", SERVER_IP, "-j", "REJECT", "--reject-with", "tcp-reset"
    )


def heal(topo: Topology) -> None:
    """Undo every fault: flush the nodes' iptables rules, stop a delayer, remove a
    bandwidth cap."""
    topo.nodes_iptables("-F")
    stop_delay(topo)
    subprocess.run(
        [*topo.in_nodes(), "tc", "qdisc", "del", "dev", topo.nodes_dev, "root"],
        capture_output=True,
        timeout=30,
    )


def delay(topo: Topology, ms: float = 100.0, queue: int = 7, timeout: float = 60.0) -> None:
    """Add ``ms`` milliseconds to every packet between the nodes and the SuperLink, each
    way: start the NFQUEUE delayer in the nodes' namespace, wait (at most ``timeout`` s)
    until it is bound, then queue the traffic to it (``--queue-bypass``: packets pass
    untouched whenever no delayer listens)."""
    stop_delay(topo)
    args = ["--queue", str(queue), "--delay-ms", str(ms)]
    proc = subprocess.Popen(
        [*topo.in_nodes(), sys.executable, str(DELAYER), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _delayers[topo.nodes_ns] = proc
    end = time.monotonic() + timeout
    line = ""
    while line.strip() != "bound" and proc.poll() is None:
        left = end - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            break
        line = proc.stdout.readline()  # "bound" as soon as it listens
    if line.strip() != "bound":
        stop_delay(topo)
        raise RuntimeError(f"the NFQUEUE delayer did not start: {line.strip()!r}")
    target = ["-j", "NFQUEUE", "--queue-num", str(queue), "--queue-bypass"]
    topo.nodes_iptables("-A", "OUTPUT", "-d", SERVER_IP, *target)
    topo.nodes_iptables("-A", "INPUT", "-s", SERVER_IP, *target)


def stop_delay(topo: Topology) -> None:
    """Stop the delayer of ``topo`` (it accepts every packet it still holds first)."""
    proc = _delayers.pop(topo.nodes_ns, None)
    if proc is None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def bandwidth_cap(topo: Topology, rate: str = "2mbit") -> None:
    sh(
        *topo.in_nodes(),
        "tc",
        "qdisc",
        "add",
        "dev",
        topo.nodes_dev,
        "root",
        "tbf",
        "rate",
        rate,
        "burst",
        "32kbit",
        "latency",
        "400ms",
    )
