"""Rounds per second on digits: fedkit's vectorised and sequential engines vs Flower's own
simulation engine (flwr[simulation], Ray) running the same client code.

Workload (issue §5): scikit-learn digits, MLP (64-64-10), 100 IID clients, all sampled each
round, 1 local epoch, batch 16, SGD lr 0.05, FedAvg. Every engine runs the same local
training kernel (:func:`fedkit.training.train_local` in Flower's ClientApp), so
the table compares engines, not training code. Timing: fedkit engines report the mean
round time without the test evaluation (identical for all engines) after one warm-up
round; Flower's rounds are timed from the ServerApp (round 1 excluded: it includes Ray's
start). torch runs one intra-op thread everywhere; Ray gets every core, one actor each.

    python benchmarks/bench_simulation.py [--rounds 5] [--flower-rounds 4] [--no-flower]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.update(
    RAY_USAGE_STATS_ENABLED="0",
    FLWR_TELEMETRY_ENABLED="0",
    FLWR_DISABLE_UPDATE_CHECK="1",
    FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
    OMP_NUM_THREADS="1",
)
os.environ.setdefault("RAY_TMPDIR", tempfile.mkdtemp(prefix="fedkit-ray-", dir="/tmp"))

import torch

import fedkit

torch.set_num_threads(1)

NUM_CLIENTS, BATCH, LR, EPOCHS, TASK_SEED = 100, 16, 0.05, 1, 0


def make_task():
    from fedkit.tasks import digits

    return digits(NUM_CLIENTS, model="mlp", hidden=(64,), key=TASK_SEED)


def client_config() -> fedkit.ClientConfig:
    return fedkit.ClientConfig(epochs=EPOCHS, batch_size=BATCH, lr=LR)


def mean_reducer():
    from fedkit.aggregators import Mean

    return Mean()


def bench_fedkit(task, engine: str, rounds: int) -> dict:
    strategy = fedkit.Strategy(client=client_config(), server=mean_reducer())
    fedkit.simulate(task, strategy, rounds=1, key=1, engine=engine, progress=False)  # warm-up
    start = time.perf_counter()
    history = fedkit.simulate(
        task, strategy, rounds=rounds, key=1, engine=engine, progress=False, eval_every=rounds
    )
    total = time.perf_counter() - start
    per_round = [m["train_time"] + m["aggregate_time"] for m in history.metrics]
    return {
        "engine": f"fedkit {engine}",
        "rounds": rounds,
        "round_s": sum(per_round) / rounds,
        "rounds_per_s": rounds / sum(per_round),
        "end_to_end_s": total,
        "test_accuracy": history.metrics[-1]["test_accuracy"],
    }


# ---- Flower: the same client code inside a ClientApp, FedAvg in a ServerApp -------------

_TASK = None
_ROUND_TIMES: list[float] = []


def _flower_apps(rounds: int):
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    from fedkit.training import train_local

    client_app = ClientApp()

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        global _TASK
        if _TASK is None:
            torch.set_num_threads(1)
            _TASK = make_task()
        cid = int(context.node_config["partition-id"])
        server_round = int(msg.content["config"]["server-round"])
        params = torch.cat(
            [t.reshape(-1) for t in msg.content["arrays"].to_torch_state_dict().values()]
        )
        x, y = _TASK.client_x[cid], _TASK.client_y[cid]
        key = fedkit.fold_in(fedkit.key(server_round), cid)
        with torch.no_grad():
            update, loss, _ = train_local(_TASK, params, x, y, EPOCHS, key, client_config())
        local = fedkit.unflatten(params + update, _TASK.spec)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: v.clone() for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": int(x.shape[0]), "loss": loss}),
            }
        )
        return Message(content=content, reply_to=msg)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        task = make_task()
        init = fedkit.unflatten(task.init(fedkit.key(1)), task.spec)
        strategy = FedAvg(
            fraction_train=1.0,
            fraction_evaluate=0.0,
            min_train_nodes=NUM_CLIENTS,
            min_available_nodes=NUM_CLIENTS,
        )

        def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            _ROUND_TIMES.append(time.perf_counter())
            return MetricRecord({})

        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord({k: v.clone() for k, v in init.items()}),
            num_rounds=rounds,
            evaluate_fn=stamp,
        )

    return server_app, client_app


def bench_flower(rounds: int) -> dict:
    from flwr.simulation import run_simulation

    server_app, client_app = _flower_apps(rounds)
    cpus = os.cpu_count() or 1
    start = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=NUM_CLIENTS,
        backend_config={
            "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": cpus,
                "include_dashboard": False,
                "_node_ip_address": "127.0.0.1",
                "object_store_memory": 256 * 1024 * 1024,
            },
        },
    )
    total = time.perf_counter() - start
    stamps = _ROUND_TIMES[1:]  # stamp 0 is the evaluation of the initial model
    if len(stamps) < 2:
        raise RuntimeError(f"Flower finished {len(stamps)} rounds; need at least 2 to time them")
    per_round = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    return {
        "engine": "flower simulation (ray)",
        "rounds": len(stamps),
        "round_s": per_round,
        "rounds_per_s": 1.0 / per_round,
        "end_to_end_s": total,
        "test_accuracy": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per fedkit engine")
    parser.add_argument(
        "--flower-rounds", type=int, default=4, help="Flower rounds (first is warm-up)"
    )
    parser.add_argument("--no-flower", action="store_true", help="skip Flower's simulation")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    task = make_task()
    rows = [
        bench_fedkit(task, "vectorized", args.rounds),
        bench_fedkit(task, "sequential", args.rounds),
    ]
    if not args.no_flower:
        rows.append(bench_flower(args.flower_rounds))
    vec = rows[0]["rounds_per_s"]
    print(
        f"\ndigits MLP, {NUM_CLIENTS} clients/round, {EPOCHS} epoch, batch {BATCH}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, 1 torch thread"
    )
    print(f"{'engine':<28}{'rounds':>7}{'s/round':>10}{'rounds/s':>10}{'vec speed-up':>14}")
    for r in rows:
        print(
            f"{r['engine']:<28}{r['rounds']:>7}{r['round_s']:>10.3f}{r['rounds_per_s']:>10.2f}"
            f"{vec / r['rounds_per_s']:>13.1f}x"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
