"""A deployed round vs an in-process round of the same experiment config, in one run.

Config: ``fedkit run task=digits num_clients=N rounds=R`` (every other setting fedkit's
default: MLP, IID, FedAvg, all clients every round, seed 0), run

* in process (:func:`experiments.run.run_experiment`): engine ``auto`` (vectorised here)
  and ``sequential``;
* on a local deployment (:class:`fedkit.flower.local.LocalDeployment`: SuperLink with TLS and
  SuperNode authentication, N SuperNodes, the experiment app ``experiments.flower_app.APP``,
  signed replies), in three modes:

  - ``stock``: Flower as shipped: ``flower-supernode`` (3 s idle sleep) and its
    ``flower-superexec``, which starts a ``flwr-clientapp`` interpreter per message;
  - ``cold``: the same SuperExec, SuperNodes with short idle sleeps
    (:mod:`fedkit.flower.local.supernode`);
  - ``warm``: short sleeps and one warm launcher per node (:mod:`fedkit.flower.local.launcher`).

A round's time is the record's ``wall_time`` (the driver's round: sampling, messages out,
every client's training, replies in, aggregation, server-side test); the tables give the
mean and median over rounds and the ratio of deployed to in-process means. End to end:
in-process ``run_experiment`` (imports done) vs deployment start (PKI, SuperLink, nodes) and
submit -> run finished. While a deployment runs, a sampler reads ``/proc`` every second:
RSS and PSS summed over the deployment's processes (PSS shares the pages of torch and
Flower's libraries between the processes mapping them; RSS counts them in every process),
the largest RSS of each kind of process, their CPU time, and the machine's busy cores (so a
table says how loaded the machine was, and how much of it was this run).

Writes ``OUT/bench.json`` and prints markdown tables::

    python benchmarks/bench_deployment.py                        # 5 nodes: in-process + 3 modes
    python benchmarks/bench_deployment.py --nodes 12 --modes warm --out runs/deployment-12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from fedkit.flower.env import apply

apply()

import attrs  # noqa: E402

from experiments.flower_app import APP, PACKAGES, compose  # noqa: E402
from experiments.run import run_experiment  # noqa: E402
from fedkit.flower.local import LocalDeployment  # noqa: E402
from fedkit.flower.local.deployment import idle_poll  # noqa: E402
from fedkit.flower.local.processes import tagged_pids  # noqa: E402

MODES: dict[str, dict[str, Any]] = {
    "stock": {"warm": False, "node_poll": None},
    "cold": {"warm": False},
    "warm": {"warm": True},
}
TICK = os.sysconf("SC_CLK_TCK")


# ---- /proc sampling ------------------------------------------------------------------------
def kind(text: str, parent: str = "") -> str:
    """What a deployment process is, from its command line (and its parent's)."""
    for name in ("flwr-serverapp", "flwr-clientapp", "flower-superlink"):
        if name in text:
            return name.replace("flower-", "")
    if "flower-superexec" in text:
        return "superexec (server)" if "flower-superlink" in parent else "superexec (node)"
    if "local/supernode.py" in text or "local.supernode" in text or "flower-supernode" in text:
        return "supernode"
    if "local/launcher.py" in text or "local.launcher" in text:
        return "launcher"
    if "multiprocessing.resource_tracker" in text:
        return "resource tracker"
    if "multiprocessing.forkserver" in text:
        return "clientapp (warm)" if "multiprocessing.forkserver" in parent else "forkserver"
    return "other"


def read_proc(pid: int) -> tuple[list[str], int, float, int, int] | None:
    """(command line, parent pid, CPU seconds, RSS kB, PSS kB) of a live process."""
    try:
        base = Path(f"/proc/{pid}")
        cmd = (base / "cmdline").read_bytes().decode(errors="replace").split("\0")
        stat = (base / "stat").read_text().rsplit(")", 1)[1].split()
        rss = pss = 0
        for line in (base / "smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss = int(line.split()[1])
            elif line.startswith("Pss:"):
                pss = int(line.split()[1])
        return cmd, int(stat[1]), (int(stat[11]) + int(stat[12])) / TICK, rss, pss
    except (OSError, ValueError, IndexError):
        return None


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Sampler(threading.Thread):
    """Samples one deployment's processes (by its environment tag) every ``every`` s."""

    def __init__(self, token: str, every: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.token, self.every = token, every
        self.halt = threading.Event()
        self.peak_rss = self.peak_pss = 0
        self.peak_processes = 0
        self.max_rss: dict[str, int] = defaultdict(int)
        self.peak_pss_by_kind: dict[str, int] = defaultdict(int)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.samples = 0

    def run(self) -> None:
        self.t0, self.machine0 = time.monotonic(), busy_jiffies()
        while not self.halt.wait(self.every):
            self.sample()
        self.t1, self.machine1 = time.monotonic(), busy_jiffies()

    def sample(self) -> None:
        rows = {pid: r for pid in tagged_pids(self.token) if (r := read_proc(pid)) is not None}
        text = {pid: " ".join(r[0]) for pid, r in rows.items()}
        kinds = {pid: kind(text[pid], text.get(r[1], "")) for pid, r in rows.items()}
        pss_by_kind: dict[str, int] = defaultdict(int)
        for pid, (_, _, cpu, rss, pss) in rows.items():
            self.max_rss[kinds[pid]] = max(self.max_rss[kinds[pid]], rss)
            pss_by_kind[kinds[pid]] += pss
            self.cpu[pid] = (kinds[pid], cpu)
        for k, v in pss_by_kind.items():
            self.peak_pss_by_kind[k] = max(self.peak_pss_by_kind[k], v)
        self.peak_rss = max(self.peak_rss, sum(r[3] for r in rows.values()))
        self.peak_pss = max(self.peak_pss, sum(r[4] for r in rows.values()))
        self.peak_processes = max(self.peak_processes, len(rows))
        self.samples += 1

    def stop(self) -> dict[str, Any]:
        self.halt.set()
        self.join()
        wall = self.t1 - self.t0
        busy = (self.machine1[0] - self.machine0[0]) / max(self.machine1[1] - self.machine0[1], 1)
        cpu_by_kind: dict[str, float] = defaultdict(float)
        for k, cpu in self.cpu.values():
            cpu_by_kind[k] += cpu
        ours = sum(cpu_by_kind.values()) / wall
        return {
            "samples": self.samples,
            "peak_rss_sum_mb": self.peak_rss / 1024,
            "peak_pss_sum_mb": self.peak_pss / 1024,
            "peak_processes": self.peak_processes,
            "max_rss_mb": {k: v / 1024 for k, v in sorted(self.max_rss.items())},
            "peak_pss_sum_mb_by_kind": {
                k: v / 1024 for k, v in sorted(self.peak_pss_by_kind.items())
            },
            "cpu_s_by_kind": dict(sorted(cpu_by_kind.items())),
            "machine_busy_cores": busy * (os.cpu_count() or 1),
            "deployment_cores": ours,
        }


# ---- the runs ------------------------------------------------------------------------------
def in_process(cfg: dict[str, Any], engine: str, out: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    record = run_experiment({**cfg, "engine": {"name": engine}}, out / engine, progress=False)
    return {
        "round_s": [float(m["wall_time"]) for m in record["metrics"]],
        "total_s": time.monotonic() - t0,
        "engine_used": record["run"].get("engine_used"),
        "loadavg": os.getloadavg(),
    }


def deployed(
    cfg: dict[str, Any],
    nodes: int,
    mode: str,
    out: Path,
    poll: float,
    fab_code: bool = False,
    **tuning: Any,
) -> dict[str, Any]:
    run_dir = out / (f"deploy-{mode}" + ("-fabcode" if fab_code else ""))
    options = {**tuning, **MODES[mode]}
    app = attrs.evolve(APP, packages=PACKAGES) if fab_code else APP
    deployment = LocalDeployment(run_dir / "deployment", nodes=nodes, app=app, **options)
    task_poll = deployment.launcher_poll or (deployment.node_poll or idle_poll(nodes)) / 2
    options.update(
        node_poll=deployment.node_poll,
        launcher_poll=task_poll if options.get("warm", True) else None,
    )
    label = f"{mode}, FAB with code" if fab_code else mode
    result: dict[str, Any] = {"mode": label, "options": options, "fab_code": fab_code}
    sampler = Sampler(deployment.token)
    with deployment:
        sampler.start()
        t0 = time.monotonic()
        deployment.start()
        result["start_s"] = time.monotonic() - t0
        t1, submitted = time.monotonic(), time.time()
        run_id = deployment.submit(
            {
                "experiment": json.dumps(cfg),
                "out-dir": str(run_dir / "out"),
                "min-nodes": nodes,
                "round-deadline": 300.0,
                "sample-timeout": 300.0,
                "poll-interval": poll,
            }
        )
        result["status"] = deployment.wait(run_id, timeout=3600, poll=0.2)
        result["submit_to_finished_s"] = time.monotonic() - t1
        result["end_to_end_s"] = time.monotonic() - t0
        result["resources"] = sampler.stop()
    result["loadavg"] = os.getloadavg()
    record = json.loads((run_dir / "out" / "record.json").read_text())
    result["round_s"] = [float(m["wall_time"]) for m in record["metrics"]]
    result["accepted"] = [m.get("accepted") for m in record["metrics"]]
    events = [json.loads(x) for x in (run_dir / "out" / "events.jsonl").read_text().splitlines()]
    start = next(e["at"] for e in events if e["event"] == "run_start")
    first = next(e["at"] for e in events if e["event"] == "round")
    result["serverapp_start_to_round1_s"] = first - start
    result["submit_to_round1_s"] = first - submitted
    return result


# ---- report --------------------------------------------------------------------------------
def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def report(res: dict[str, Any]) -> str:
    base = {k: mean(v["round_s"]) for k, v in res["in_process"].items()}
    lines = [
        f"digits, {res['nodes']} clients/nodes, {res['rounds']} rounds, "
        f"{res['cpus']} CPUs, load average before {res['loadavg_before'][0]:.1f}",
        "",
        "| run | rounds (s) | mean | median | / in-process auto | / sequential |",
        "|---|---|---|---|---|---|",
    ]
    rows = [(f"in-process {k}", v) for k, v in res["in_process"].items()]
    rows += [(f"deployed {v['mode']}", v) for v in res["deployed"]]
    for name, v in rows:
        r = v["round_s"]
        lines.append(
            f"| {name} | {', '.join(f'{x:.2f}' for x in r)} | {mean(r):.3f} | "
            f"{statistics.median(r):.3f} | {mean(r) / base['auto']:.1f}x | "
            f"{mean(r) / base['sequential']:.1f}x |"
        )
    lines += [
        "",
        "| deployed | start | submit -> round 1 done | submit -> finished | peak RSS sum "
        "| peak PSS sum | processes | machine busy / this run (cores) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in res["deployed"]:
        r = v["resources"]
        lines.append(
            f"| {v['mode']} | {v['start_s']:.1f} s | {v['submit_to_round1_s']:.1f} s | "
            f"{v['submit_to_finished_s']:.1f} s | "
            f"{r['peak_rss_sum_mb']:.0f} MB | "
            f"{r['peak_pss_sum_mb']:.0f} MB | {r['peak_processes']} | "
            f"{r['machine_busy_cores']:.2f} / {r['deployment_cores']:.2f} |"
        )
    lines += ["", "| deployed | largest RSS per process kind (MB) |", "|---|---|"]
    for v in res["deployed"]:
        sizes = ", ".join(f"{k} {m:.0f}" for k, m in v["resources"]["max_rss_mb"].items())
        lines.append(f"| {v['mode']} | {sizes} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--poll-interval", type=float, default=0.05, help="the ServerApp's reply poll (s)"
    )
    parser.add_argument(
        "--node-poll", type=float, default=None, help="SuperNodes' idle sleep (default: auto)"
    )
    parser.add_argument(
        "--launcher-poll", type=float, default=None, help="launchers' poll (default: auto)"
    )
    parser.add_argument(
        "--fab-code",
        action="store_true",
        help="also run each mode with fedkit's packages inside the FAB (Flower ships code)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/deployment"))
    args = parser.parse_args()
    out = (args.out / time.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cfg = compose(["task=digits", f"num_clients={args.nodes}", f"rounds={args.rounds}"])
    res: dict[str, Any] = {
        "config": cfg,
        "nodes": args.nodes,
        "rounds": args.rounds,
        "poll_interval": args.poll_interval,
        "node_poll": args.node_poll,
        "launcher_poll": args.launcher_poll,
        "cpus": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "in_process": {},
        "deployed": [],
    }
    for engine in ("auto", "sequential"):
        res["in_process"][engine] = in_process(cfg, engine, out / "in-process")
    for mode in args.modes:
        print(f"deploying ({mode}) ...", flush=True)
        tuning = {"launcher_poll": args.launcher_poll}
        if args.node_poll is not None:
            tuning["node_poll"] = args.node_poll
        for fab_code in (False, True) if args.fab_code else (False,):
            res["deployed"].append(
                deployed(cfg, args.nodes, mode, out, args.poll_interval, fab_code, **tuning)
            )
            (out / "bench.json").write_text(json.dumps(res, indent=1, default=str))
    res["loadavg_after"] = os.getloadavg()
    (out / "bench.json").write_text(json.dumps(res, indent=1, default=str))
    text = report(res)
    (out / "bench.md").write_text(text + "\n")
    print(text)
    print(f"\n{out / 'bench.json'}")


if __name__ == "__main__":
    main()
