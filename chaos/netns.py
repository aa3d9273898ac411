"""Network faults between SuperNodes and the SuperLink, in network namespaces (needs root).

:func:`topology` makes two namespaces joined by a veth pair: the server side holds
198.18.0.1, the nodes' side 198.18.0.2 (RFC 2544 benchmarking range; nothing else is
touched), and removes both namespaces on exit, whatever happens. Faults act in the nodes'
namespace on traffic to and from the SuperLink:

* :func:`random_loss` ``iptables -m statistic --mode random`` DROP of incoming TCP;
* :func:`partition` DROP of everything to the SuperLink; :func:`heal` flushes the rules;
* :func:`resets` REJECT ``--reject-with tcp-reset`` of TCP to the SuperLink;
* :func:`bandwidth_cap` a ``tbf`` qdisc on the nodes' veth end.

Delay is not here: the kernel has no netem, and an NFQUEUE delayer needs the
``NetfilterQueue`` package (libnetfilter-queue-dev), which is not a dependency yet.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator

import attrs

SERVER_IP = "198.18.0.1"
NODES_IP = "198.18.0.2"


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
    topo.nodes_iptables("-F")


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
