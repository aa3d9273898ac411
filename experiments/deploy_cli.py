"""``fedkit deploy``: an experiment config on a real Flower deployment on this machine
(``local``: a SuperLink and SuperNodes, :class:`fedkit.flower.local.LocalDeployment`) or on
Flower's simulation engine (``sim``).

Both take the config groups and overrides of ``fedkit run``::

    fedkit deploy local --nodes 5 task=digits defense=krum attack=sign_flip rounds=3 out_dir=D

The config is composed and resolved here (``num_clients`` defaults to the number of nodes),
checked by building it, and sent to the ServerApp as data (run config ``experiment``). The
node of client ``i`` holds partition ``i``; the nodes of the clients the config's adversary
controls get the adversary's copy of the config (``D/deployment/adversary.json``) and run
its attack (:mod:`experiments.adversary_node`). Everything the run writes lands in ``D``
(``record.json``, ``record.safetensors``, ``checkpoints/``, TensorBoard, ``events.jsonl``);
the deployment's own files (PKI, logs, SuperLink database) in ``D/deployment``.

``--metrics`` gives the ServerApp a Prometheus endpoint with ``/healthz`` and ``/readyz``
(address in ``D/metrics.json``) and every node one; ``--prometheus`` also runs Debian's
Prometheus server scraping them every second (``D/deployment/prometheus``: config, TSDB, log),
waits for a last scrape after the run and prints what it holds (``docs/operations.md``).
``--trace`` writes OpenTelemetry spans: the ServerApp's to ``D/trace.jsonl``, node ``i``'s
ClientApp spans (children of the server's ``send`` spans) to ``D/trace-node<i>.jsonl``.

A supervisor (:mod:`fedkit.flower.local.supervisor`) restarts a crashed SuperLink, ServerApp
or SuperNode with backoff, the run resuming from its checkpoint (``--no-supervise``: off);
status polls that fail are retried before the CLI gives up, naming the cause.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from experiments.flower_app import APP, check_deployable, compose, simulation_apps
from fedkit.core.keys import key as root_key
from fedkit.flower.local.deployment import LocalDeployment, follow
from fedkit.flower.local.processes import DeployError
from fedkit.flower.local.proxy import ProxyLimits
from fedkit.flower.local.supervisor import RestartPolicy
from fedkit.run.plan import RunKeys


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fedkit deploy",
        description="Run an experiment config (fedkit run's overrides) on a Flower deployment.",
    )
    sub = parser.add_subparsers(dest="where", required=True)
    local = sub.add_parser("local", help="a SuperLink and N SuperNodes on this machine")
    local.add_argument("--nodes", type=int, default=3, help="number of SuperNodes")
    local.add_argument("--insecure", action="store_true", help="no TLS (and no node auth)")
    local.add_argument("--no-auth", action="store_true", help="TLS without node authentication")
    local.add_argument("--resume", action="store_true", help="continue from out_dir's checkpoints")
    local.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    local.add_argument("--round-deadline", type=float, default=300.0, help="seconds per round")
    local.add_argument(
        "--metrics",
        action="store_true",
        help="Prometheus endpoints on the ServerApp (with /healthz, /readyz) and every node",
    )
    local.add_argument(
        "--prometheus",
        action="store_true",
        help="also run a Prometheus server scraping them (Debian's prometheus; implies --metrics)",
    )
    local.add_argument(
        "--proxy",
        action="store_true",
        help="nodes dial an nginx in front of the Fleet API: rate limits per source and node, "
        "connection and size caps, TLS terminated there (Debian's nginx; docs/operations.md)",
    )
    local.add_argument(
        "--no-supervise",
        action="store_true",
        help="do not restart a crashed SuperLink, ServerApp or SuperNode (D/deployment/restarts.jsonl)",
    )
    local.add_argument(
        "--privacy-floor",
        default="",
        help="JSON privacy floor every node enforces (fedkit.flower.PrivacyFloor)",
    )
    local.add_argument(
        "--trace",
        action="store_true",
        help="OpenTelemetry spans: the server's in D/trace.jsonl, node i's in D/trace-node<i>.jsonl",
    )
    sim = sub.add_parser("sim", help="the same apps on Flower's simulation engine (Ray)")
    sim.add_argument("--nodes", type=int, default=3, help="number of simulated SuperNodes")
    sim.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    sim.add_argument("--cpus-per-client", type=float, default=1.0)
    sim.add_argument(
        "--ray-address",
        default=None,
        help="attach to this running Ray cluster (HOST:PORT of `ray start --head`, or auto) "
        "instead of starting Ray; --cpus is then the cluster's (docs/sweeps.md)",
    )
    for p in (local, sim):
        p.add_argument("overrides", nargs="*", help="config overrides, as for fedkit run")
    return parser.parse_args(argv)


def resolve(overrides: Sequence[str], nodes: int) -> dict[str, Any]:
    """The resolved experiment config (``num_clients`` = ``nodes`` unless overridden)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o}
    extra = [] if "num_clients" in given else [f"num_clients={nodes}"]
    cfg = compose([*extra, *overrides])
    check_deployable(cfg)
    return cfg


def controlled_clients(cfg: dict[str, Any]) -> list[int]:
    """The clients the config's adversary controls (as the run driver draws them)."""
    from experiments.build import build

    exp = build(cfg)
    keys = RunKeys.of(root_key(exp.seed))
    chosen = exp.adversary.controlled(int(exp.task.num_clients), keys.controlled)
    return sorted(set(torch.as_tensor(chosen, dtype=torch.int64).tolist()))


def out_dir(cfg: dict[str, Any], prefix: str) -> Path:
    return Path(cfg.get("out_dir") or time.strftime(f"runs/{prefix}-%Y%m%d-%H%M%S")).resolve()


def deploy_local(args: argparse.Namespace) -> int:
    cfg = resolve(args.overrides, args.nodes)
    out = out_dir(cfg, "deploy")
    cfg["out_dir"] = str(out)
    work = out / "deployment"
    work.mkdir(parents=True, exist_ok=True)
    bad = controlled_clients(cfg)
    node_configs: list[dict[str, Any]] = [{} for _ in range(args.nodes)]
    if bad:
        (work / "adversary.json").write_text(json.dumps(cfg))
        for i in bad:
            if i < args.nodes:
                node_configs[i]["adversary"] = str(work / "adversary.json")
    if args.privacy_floor:
        for nc in node_configs:
            nc["privacy-floor"] = args.privacy_floor
    if args.trace:  # each node writes its own spans; the server's go to out/trace.jsonl
        for i, nc in enumerate(node_configs):
            nc["trace-file"] = str(out / f"trace-node{i}.jsonl")
    run_config = {
        "experiment": json.dumps(cfg),
        "out-dir": str(out),
        "resume": bool(args.resume),
        "round-deadline": args.round_deadline,
        "sample-timeout": 300.0,
        "min-nodes": args.nodes,
        "signed-replies": not (args.insecure or args.no_auth),
    }
    if args.trace:
        run_config["trace-file"] = str(out / "trace.jsonl")
    deployment = LocalDeployment(
        work,
        nodes=args.nodes,
        insecure=args.insecure,
        auth=not args.no_auth,
        app=APP,
        node_configs=node_configs,
        metrics=args.metrics or args.prometheus,
        prometheus=args.prometheus,
        proxy=ProxyLimits() if args.proxy else None,
        restart=None if args.no_supervise else RestartPolicy(),
    )
    with deployment:
        mode = "insecure" if deployment.insecure else "TLS" + (" + node auth" * deployment.auth)
        print(f"starting SuperLink ({mode}) and {args.nodes} SuperNodes in {work}", flush=True)
        if bad:
            print(f"adversary nodes (clients): {bad}", flush=True)
        deployment.start()
        run_id = deployment.submit(run_config)
        print(f"run {run_id} submitted", flush=True)
        status: list[str] = []

        def done() -> bool:
            sup = deployment.supervisor
            status[:] = [sup.status(run_id) if sup else deployment.status(run_id)]
            return status[0].startswith("finished")

        end = time.monotonic() + args.timeout
        try:
            follow(out / "checkpoints", lambda: done() or time.monotonic() > end, every=1.0)
        except DeployError as exc:
            print(f"fedkit deploy local: {exc}; tearing the deployment down", flush=True)
            return 1
        final = status[0] if status else "unknown"
        if deployment.supervisor is not None and deployment.supervisor.counts:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(deployment.supervisor.counts.items()))
            print(f"restarts: {counts} (see {work / 'restarts.jsonl'})", flush=True)
        print(f"run {run_id}: {final}; record in {out / 'record.json'}", flush=True)
        print_privacy(out / "record.json")
        if deployment.proxy_server is not None:
            print(f"proxy: {deployment.proxy_server.summary()}", flush=True)
        if deployment.prom is not None:
            print_prometheus(deployment.prom, since=time.time())
    return 0 if final == "finished:completed" else 1


def print_privacy(path: Path) -> None:
    """One line on the run's ε and budget (alerts, stop) from its record, if it has DP."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    budget, privacy = record.get("privacy_budget"), record.get("privacy") or {}
    if not budget:
        return
    eps = budget.get("epsilon")
    shown = "inf" if eps is None else f"{eps:.4g}"
    line = f"privacy: ε {shown} at δ {budget.get('delta')} ({privacy.get('status')})"
    alerts = [e for e in record.get("events", []) if e.get("event") == "budget_alert"]
    if alerts:
        line += "; budget alerts " + ", ".join(
            f"{100 * a['fraction']:.0f}% (round {a['round']})" for a in alerts
        )
    stopped = (record.get("run") or {}).get("stopped") or {}
    if stopped.get("reason") == "privacy_budget":
        line += (
            f"; stopped after round {stopped['after_round']}: the next round would spend "
            f"ε {stopped['next_round_epsilon']:.4g} > target {stopped['target_epsilon']:.4g}"
        )
    print(line, flush=True)


SUMMARY = {
    "rounds completed": "max_over_time(fedkit_rounds_completed_total[1h])",
    "replies accepted": "max_over_time(fedkit_replies_accepted_total[1h])",
    "messages trained per node": (
        'max by (node) (max_over_time(fedkit_node_messages_total{outcome="trained"}[1h]))'
    ),
}


def print_prometheus(prom: Any, since: float) -> None:
    """Wait for a scrape of every node after the run, then print what Prometheus holds
    (the ServerApp waited for its own last scrape before it exited: run config
    ``metrics-linger``)."""
    from fedkit.flower.local.processes import DeployError

    print(f"prometheus at {prom.url} (data in {prom.directory / 'data'})", flush=True)
    try:
        prom.wait_scraped(since, "fedkit-node", timeout=10 * prom.interval + 5)
        for name, expr in SUMMARY.items():
            found = sorted((m.get("node", ""), v) for m, v in prom.query(expr))
            shown = ", ".join(f"node {n}: {v:g}" if n else f"{v:g}" for n, v in found)
            print(f"prometheus: {name}: {shown or 'none'}   [{expr}]", flush=True)
    except DeployError as exc:
        print(f"prometheus: {exc}", flush=True)


def deploy_sim(args: argparse.Namespace) -> int:
    from fedkit.flower.sim import run_flower_simulation

    cfg = resolve(args.overrides, args.nodes)
    out = out_dir(cfg, "sim")
    cfg["out_dir"] = str(out)
    if controlled_clients(cfg):
        raise SystemExit(
            "fedkit deploy sim: the simulation engine's nodes are interchangeable workers and "
            "cannot host the adversary's nodes; use fedkit run or fedkit deploy local"
        )
    rc = {"experiment": json.dumps(cfg), "out-dir": str(out), "min-nodes": args.nodes}
    rc["round-deadline"] = 600.0
    print(f"Flower simulation (Ray) of {args.nodes} nodes in {out}", flush=True)
    server, client = simulation_apps(rc)
    run_flower_simulation(
        server,
        client,
        out / "simulation",
        num_supernodes=args.nodes,
        num_cpus=args.cpus,
        cpus_per_client=args.cpus_per_client,
        ray_address=args.ray_address,
    )
    record = json.loads((out / "record.json").read_text())
    ran, wanted = len(record.get("metrics", [])), int(cfg["rounds"])
    print(f"{ran} of {wanted} rounds; record in {out / 'record.json'}", flush=True)
    return 0 if ran >= wanted else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``fedkit deploy local ...`` (exit code 0 iff the run finished ``completed``) or
    ``fedkit deploy sim ...`` (0 iff every round ran)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear down on SIGTERM too
    return deploy_sim(args) if args.where == "sim" else deploy_local(args)


if __name__ == "__main__":
    raise SystemExit(main())
