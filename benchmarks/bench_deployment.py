"""Issue 7 §5: a real local Flower deployment against the in-process simulation, same
workload: scikit-learn digits, MLP (64-32-10), 3 clients (one per SuperNode), all training
every round, 1 local epoch, batch 32, SGD lr 0.05, FedAvg, seed 0.

* round latency: the ServerApp's per-round wall time (sampling, messages out, every
  ClientApp's training, replies back, aggregation, server-side test) vs
  :func:`fedkit.simulate` (sequential engine) on the same task and strategy;
* start -> first finished round: from ``LocalDeployment.start()`` (certificates, SuperLink,
  node keys registered, SuperNodes) to the first checkpoint on disk;
* the time to resume after a SuperLink kill comes from the chaos experiment
  (``chaos --no-version-check run chaos/experiments/kill-superlink.json``), not from here.

Writes ``runs/deployment/bench.json`` and prints a markdown table.

    python benchmarks/bench_deployment.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from fedkit.flower.env import FLOWER_ENV
from fedkit.flower.local import LocalDeployment
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.run import checkpoint as ckpt
from fedkit.simulation import simulate

os.environ.update(FLOWER_ENV)


def in_process(config: dict, rounds: int) -> list[float]:
    settings = Settings.from_run_config(config)
    history = simulate(
        build_task(settings), build_strategy(settings), rounds=rounds, key=0, engine="sequential"
    )
    return [float(m["wall_time"]) for m in history.metrics]


def deployed(config: dict, rounds: int, run_dir: Path) -> dict:
    out = {}
    with LocalDeployment(run_dir, nodes=config["task-clients"]) as d:
        t0 = time.monotonic()
        d.start()
        out["start_s"] = time.monotonic() - t0
        run_id = d.submit(
            {
                **config,
                "rounds": rounds,
                "checkpoint-dir": str(run_dir / "checkpoints"),
                "log-dir": str(run_dir / "logs"),
            }
        )
        while not ckpt.rounds_on_disk(run_dir / "checkpoints"):
            if time.monotonic() - t0 > 1800:
                raise TimeoutError("no round finished within 30 min")
            time.sleep(0.1)
        out["start_to_first_round_s"] = time.monotonic() - t0
        out["status"] = d.wait(run_id, timeout=1800)
        out["total_s"] = time.monotonic() - t0
    record = json.loads((run_dir / "logs" / "record.json").read_text())
    out["round_s"] = [float(m["wall_time"]) for m in record["metrics"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("runs/deployment"))
    args = parser.parse_args()
    config = {"task": "digits", "task-clients": 3, "seed": 0, "min-nodes": 3}
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    sim = in_process(config, args.rounds)
    dep = deployed(config, args.rounds, (args.out / time.strftime("run-%H%M%S")).resolve())
    result = {
        "config": config,
        "rounds": args.rounds,
        "simulation_round_s": sim,
        "deployment": dep,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    (args.out / "bench.json").write_text(json.dumps(result, indent=1))
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    print("| figure | value |\n|---|---|")
    print(f"| in-process simulation, mean round | {mean(sim):.3f} s |")
    print(f"| deployment, mean round | {mean(dep['round_s']):.1f} s |")
    print(f"| deployment / simulation | {mean(dep['round_s']) / mean(sim):.0f}x |")
    print(
        f"| deployment start (SuperLink + {config['task-clients']} nodes) | {dep['start_s']:.1f} s |"
    )
    print(f"| start -> first finished round | {dep['start_to_first_round_s']:.1f} s |")
    print(f"| load average before / after | {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} |")


if __name__ == "__main__":
    main()
