"""Round time of the SO-100 task in process vs through a real Flower deployment, on CPU.

The same experiment config (``task=so100 so100@task=fixture`` on the offline fixture: tiny
SmolVLA, 3 clients of 45 frames, FedAvg, one local epoch = 6 AdamW steps at lr 0.01) runs
twice: in process with ``fedkit run`` (sequential engine), then with ``fedkit deploy local
--nodes 3`` (a SuperLink and 3 SuperNodes, TLS + node authentication). Reports each round's wall time (the
server's: sampling to evaluation) and held-out action loss, and each run's total wall time
and CPU time (in process: this process; deployment: the ``fedkit deploy`` process and the
descendants it reaped, i.e. SuperLink, SuperNodes, Apps and the ``flwr`` CLI calls), which
load on a shared machine changes much less than wall time.

    python benchmarks/bench_so100_deploy.py                 # 3 rounds, about 3 to 6 minutes
    python benchmarks/bench_so100_deploy.py --rounds 2 --out runs/so100_deploy

Writes ``OUT/result.json`` and ``OUT/result.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

REPO = Path(__file__).resolve().parents[1]


def overrides(fixture: Path, rounds: int, out: Path) -> list[str]:
    return [
        "task=so100",
        "so100@task=fixture",
        f"task.directory={fixture}",
        "num_clients=3",
        f"rounds={rounds}",
        "client.lr=0.01",
        "seed=0",
        f"out_dir={out}",
    ]


def in_process(fixture: Path, rounds: int, out: Path) -> dict:
    from experiments.flower_app import compose
    from experiments.run import run_experiment

    t0, c0 = time.perf_counter(), time.process_time()
    cfg = compose([*overrides(fixture, rounds, out), "engine=sequential"])
    record = run_experiment(cfg, out, progress=False)
    return {
        "total_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "rounds": [_round(m) for m in record["metrics"]],
    }


def deployed(fixture: Path, rounds: int, out: Path) -> dict:
    cmd = [sys.executable, "-m", "experiments.cli", "deploy", "local", "--nodes", "3"]
    cmd += overrides(fixture, rounds, out)
    t0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    total = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    record = json.loads((out / "record.json").read_text())
    return {
        "command": " ".join(cmd[1:]),
        "total_s": total,
        "cpu_s": cpu,
        "rounds": [_round(m) for m in record["metrics"]],
    }


def _round(m: dict) -> dict:
    keys = ("round", "test_loss", "train_loss", "accepted", "train_time", "wall_time")
    return {k: m.get(k) for k in keys}


def table(result: dict) -> str:
    lines = [
        "| round | in-process wall (s) | deployment wall (s) | held-out loss (in process) "
        "| held-out loss (deployment) |",
        "|---|---|---|---|---|",
    ]
    for a, b in zip(result["in_process"]["rounds"], result["deployment"]["rounds"]):
        lines.append(
            f"| {a['round']} | {a['wall_time']:.1f} | {b['wall_time']:.1f} "
            f"| {a['test_loss']:.4f} | {b['test_loss']:.4f} |"
        )
    sim, dep = result["in_process"], result["deployment"]
    lines.append(
        f"\nInitial held-out loss {result['initial_loss']:.4f}. Totals: in process "
        f"{sim['total_s']:.0f} s wall, {sim['cpu_s']:.0f} s CPU (with the task build); deployment {dep['total_s']:.0f} s wall, "
        f"{dep['cpu_s']:.0f} s CPU (start to teardown). Load average before: "
        f"{result['load_before']}."
    )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "so100_deploy")
    args = parser.parse_args()
    from fedkit.core.keys import key, split
    from fedkit.tasks.so100.fixture import make_offline_fixture

    out = args.out.resolve()
    fixture = out / "fixture"
    make_offline_fixture(fixture)
    load = [round(x, 2) for x in os.getloadavg()]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    sim = in_process(fixture, args.rounds, out / f"run-{stamp}")
    from fedkit.tasks.so100.offline import so100_fixture

    task = so100_fixture(fixture, num_clients=3, key=0)
    initial = task.evaluate(task.init(split(key(0), 4)[0]))["test_loss"]
    del task
    dep = deployed(fixture, args.rounds, out / f"deploy-{stamp}")
    result = {
        "load_before": load,
        "initial_loss": initial,
        "in_process": sim,
        "deployment": dep,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    (out / "result.md").write_text(table(result))
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
