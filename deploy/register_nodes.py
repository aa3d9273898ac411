"""Register SuperNode keys with a SuperLink and provision fedkit's node registry.

    python deploy/register_nodes.py --superlink superlink:8000 --ca ca.pem \\
        --keys DIR --nodes 3 --registry /var/lib/fedkit/registry.json

What ``flwr supernode register nodeI.pub`` does for each ``DIR/nodeI.pub`` (through Flower's
Control API, :class:`fedkit.flower.local.control.ControlClient`), then maps the node id each
key got to client ``I`` in the registry file the ServerApp reads (run config ``registry``;
:mod:`fedkit.flower.registry`). Waits up to ``--timeout`` s for the SuperLink. A key the
SuperLink already holds (a restart with its database) is skipped: its registry entry from
the first registration stays. Exit status 0 when every key is registered or known.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fedkit.flower.local.control import FEDERATION, ControlClient
from fedkit.flower.registry import NodeRegistry

ALREADY = "already in use"  # Flower's answer to a key registered before (HTTP 412)


def already_registered(exc: Exception) -> bool:
    """Whether ``exc`` is the SuperLink saying the key is registered already."""
    response = getattr(exc, "response", None)
    text = f"{exc} {getattr(response, 'text', '')}".lower()
    return ALREADY in text


def write_cli_config(home: Path, superlink: str, ca: Path | None) -> None:
    """The ``flwr`` CLI's federation config (``$FLWR_HOME/config.toml``)."""
    home.mkdir(parents=True, exist_ok=True)
    tls = "insecure = true" if ca is None else f'root-certificates = "{ca}"'
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{FEDERATION}"\n\n'
        f'[superlink.{FEDERATION}]\naddress = "{superlink}"\n{tls}\n'
    )


def connect(home: Path, timeout: float) -> ControlClient:
    """A Control API client once the SuperLink answers ``ListRuns``."""
    end = time.monotonic() + timeout
    while True:
        client = None
        try:
            client = ControlClient(home)
            client.runs()
            return client
        except Exception as exc:
            if client is not None:
                client.close()
            if time.monotonic() > end:
                raise SystemExit(f"SuperLink not answering after {timeout} s: {exc}") from None
            time.sleep(2.0)


def register_all(client: ControlClient, keys: Path, nodes: int, registry: Path | None) -> int:
    """Register ``keys/node{i}.pub`` for every node; provision the new ids; exit status."""
    assigned: dict[int, int] = {}
    status = 0
    for i in range(nodes):
        pub = keys / f"node{i}.pub"
        try:
            node_id = client.register_node(pub)
        except Exception as exc:
            if already_registered(exc):
                print(f"node{i}: key already registered; keeping its registry entry")
                continue
            print(f"node{i}: registering {pub} failed: {exc}")
            status = 1
            continue
        print(f"node{i}: node id {node_id} -> client {i}")
        assigned[node_id] = i
    if assigned and registry is not None:
        NodeRegistry.load(registry).provision(assigned)
        print(f"registry {registry}: {len(assigned)} nodes provisioned")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--superlink", default="superlink:8000", help="host:port of the SuperLink")
    parser.add_argument("--ca", type=Path, help="the SuperLink's CA (omit: no TLS)")
    parser.add_argument("--keys", type=Path, required=True, help="directory of nodeI.pub")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--registry", type=Path, help="fedkit node registry file to provision")
    parser.add_argument("--home", type=Path, default=Path("/tmp/fedkit-register"))
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    write_cli_config(args.home, args.superlink, args.ca)
    client = connect(args.home, args.timeout)
    try:
        return register_all(client, args.keys, args.nodes, args.registry)
    finally:
        client.close()


if __name__ == "__main__":
    raise SystemExit(main())
