"""``fedkit deploy``: fedkit's Flower App on a real deployment on this machine
(``local``: a SuperLink and SuperNodes, :class:`fedkit.flower.local.LocalDeployment`) or on
Flower's simulation engine (``sim``: :func:`fedkit.flower.sim.run_flower_simulation`)."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedkit.flower.local.deployment import LocalDeployment, follow


def _run_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """The options ``local`` and ``sim`` share: rounds, seed, run directory, overrides."""
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--run-dir", type=Path, default=None, help=f"default: runs/{prefix}-<time>")
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run config override (TOML value), repeatable",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fedkit deploy", description="Run fedkit's Flower App on a real deployment."
    )
    sub = parser.add_subparsers(dest="where", required=True)
    local = sub.add_parser("local", help="a SuperLink and N SuperNodes on this machine")
    local.add_argument("--nodes", type=int, default=3, help="number of SuperNodes")
    local.add_argument("--insecure", action="store_true", help="no TLS (and no node auth)")
    local.add_argument("--no-auth", action="store_true", help="TLS without node authentication")
    _run_options(local, "deploy")
    local.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    sim = sub.add_parser(
        "sim", help="the same apps on Flower's simulation engine (Ray, loopback only)"
    )
    sim.add_argument("--clients", type=int, default=3, help="number of simulated SuperNodes")
    sim.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    sim.add_argument("--cpus-per-client", type=float, default=1.0)
    _run_options(sim, "sim")
    return parser.parse_args(argv)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--config expects KEY=VALUE, got {item!r}")
        try:
            out[k.strip()] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k.strip()] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``fedkit deploy local ...`` (exit code 0 iff the run finished ``completed``) or
    ``fedkit deploy sim ...`` (0 iff every round ran)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear down on SIGTERM too
    prefix = "sim" if args.where == "sim" else "deploy"
    run_dir = args.run_dir or Path("runs") / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    config = parse_overrides(args.config)
    if args.rounds is not None:
        config["rounds"] = args.rounds
    if args.seed is not None:
        config["seed"] = args.seed
    if config.get("task-dir"):  # the apps do not run in this directory
        config["task-dir"] = str(Path(config["task-dir"]).resolve())
    if args.where == "sim":
        return _simulate(args, run_dir, config)
    config.setdefault("task-clients", args.nodes)
    config.setdefault("min-nodes", args.nodes)
    config.setdefault("checkpoint-dir", str(run_dir / "checkpoints"))
    config.setdefault("log-dir", str(run_dir / "logs"))
    deployment = LocalDeployment(
        run_dir, nodes=args.nodes, insecure=args.insecure, auth=not args.no_auth
    )
    with deployment:
        mode = "insecure" if deployment.insecure else "TLS" + (" + node auth" * deployment.auth)
        print(f"starting SuperLink ({mode}) and {args.nodes} SuperNodes in {run_dir}", flush=True)
        deployment.start()
        run_id = deployment.submit(config)
        print(f"run {run_id} submitted", flush=True)
        status: list[str] = []

        def done() -> bool:
            status[:] = [deployment.status(run_id)]
            return status[0].startswith("finished")

        end = time.monotonic() + args.timeout
        # every status poll is a `flwr` CLI process (about 1 s of CPU): poll every 5 s
        follow(Path(config["checkpoint-dir"]), lambda: done() or time.monotonic() > end, every=5.0)
        final = status[0] if status else "unknown"
        print(f"run {run_id}: {final}; record in {config['log-dir']}/record.json", flush=True)
    return 0 if final == "finished:completed" else 1


def _simulate(args: argparse.Namespace, run_dir: Path, config: dict[str, Any]) -> int:
    """``fedkit deploy sim``: :func:`fedkit.flower.sim.run_flower_simulation`."""
    from fedkit.flower.sim import run_flower_simulation

    config.setdefault("task-clients", args.clients)
    print(f"Flower simulation (Ray) of {config['task-clients']} clients in {run_dir}", flush=True)
    record = run_flower_simulation(
        run_dir, config, num_cpus=args.cpus, cpus_per_client=args.cpus_per_client
    )
    ran = len(record.get("metrics", []))
    wanted = int(config.get("rounds", ran))
    print(f"{ran} of {wanted} rounds; record in {run_dir / 'logs' / 'record.json'}", flush=True)
    return 0 if ran >= wanted else 1


if __name__ == "__main__":
    raise SystemExit(main())
