"""Write the TLS material, node keys and SuperExec secrets a container deployment needs,
made by fedkit's own PKI (:mod:`fedkit.flower.pki`).

    python deploy/pki.py OUT --nodes 3 --target compose            # deploy/compose.yaml
    python deploy/pki.py OUT --nodes 3 --target k8s [--namespace fedkit] [--host NAME ...]

Layout of ``OUT``::

    superlink/ca.pem server.pem server.key   SuperLink TLS (Fleet, Control, Runtime APIs)
    node-runtime/ca.pem server.pem server.key TLS of the SuperNodes' Runtime API (dialled
                                               over the network by the launchers / SuperExecs
                                               and ClientApps)
    nodes/nodeI nodeI.pub                     SuperNode auth keys (OpenSSH EC P-384)
    superexec/superlink.secret nodeI.secret   SuperExec shared secrets (32 random bytes)

The SuperLink certificate covers the service names the target uses (plus ``--host``) and
127.0.0.1 (the SuperLink's own processes dial it there). Private files are 0600; with
``--readable`` they are 0644 inside a 0700 directory (compose bind-mounts secrets with the
host file's mode, and the image runs as uid 10001).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fedkit.flower.pki import make_node_key, make_server_pki

LOCAL = ("localhost", "127.0.0.1", "::1")


def k8s_names(service: str, namespace: str) -> list[str]:
    """The DNS names a Service ``service`` in ``namespace`` answers to inside a cluster."""
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def superlink_hosts(target: str, namespace: str, extra: list[str]) -> list[str]:
    """Names the SuperLink's certificate must cover (``deploy/compose.yaml``'s service name,
    or the Services of ``deploy/k8s/superlink.yaml``)."""
    if target == "compose":
        names = ["superlink"]
    else:
        names = [
            n
            for svc in ("fedkit-superlink", "fedkit-fleet", "fedkit-control", "fedkit-runtime")
            for n in k8s_names(svc, namespace)
        ]
        names += k8s_names("fedkit-superlink-0.fedkit-superlink-headless", namespace)
    return list(dict.fromkeys([*names, *extra, *LOCAL]))


def node_runtime_hosts(target: str, nodes: int, namespace: str) -> list[str]:
    """Names of the SuperNodes' Runtime API: compose services ``supernode-I``, or the
    Services of ``deploy/k8s/supernodes.yaml``."""
    if target == "compose":
        names = [f"supernode-{i}" for i in range(nodes)]
    else:
        names = [n for i in range(nodes) for n in k8s_names(f"fedkit-supernode-{i}", namespace)]
    return [*names, *LOCAL]


def write_secret(path: Path) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    return path


def make(
    out: Path,
    nodes: int,
    target: str,
    namespace: str = "fedkit",
    hosts: list[str] | None = None,
    readable: bool = False,
    days: int = 365,
) -> None:
    """Write everything under ``out`` (see the module doc)."""
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    make_server_pki(out / "superlink", superlink_hosts(target, namespace, hosts or []), days=days)
    make_server_pki(out / "node-runtime", node_runtime_hosts(target, nodes, namespace), days=days)
    write_secret(out / "superexec" / "superlink.secret")
    for i in range(nodes):
        make_node_key(out / "nodes", f"node{i}")
        write_secret(out / "superexec" / f"node{i}.secret")
    if readable:
        for path in out.rglob("*"):
            os.chmod(path, 0o755 if path.is_dir() else 0o644)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="directory to write into")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--target", choices=("compose", "k8s"), default="compose")
    parser.add_argument("--namespace", default="fedkit", help="Kubernetes namespace (k8s)")
    parser.add_argument(
        "--host", action="append", default=[], help="another name the SuperLink is dialled by"
    )
    parser.add_argument("--days", type=int, default=365, help="certificate lifetime")
    parser.add_argument(
        "--readable", action="store_true", help="files 0644 (compose bind mounts; see doc)"
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    make(args.out, args.nodes, args.target, args.namespace, args.host, args.readable, args.days)
    print(f"wrote {args.target} PKI for {args.nodes} nodes into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
