"""FedProx paper, Synthetic(1, 1) with 90 % stragglers: FedAvg (drop) vs FedProx μ = 1 (partial).

Setting of Li et al. 2020 (Fig. 1, Synthetic(1,1), 90 % stragglers): 30 devices, 10 sampled
per round, E = 20 local epochs, batch 10, SGD lr 0.01, multinomial logistic regression,
200 rounds. Each round 90 % of the sampled devices are stragglers that manage a random
number of epochs in [1, E]: FedAvg drops them, FedProx keeps their partial work and adds
the proximal term μ = 1. One generated data set (``--data-seed``); the run seeds vary the
initial model, the sampling, the stragglers and the data order.

The paper's finding: FedProx converges markedly better and more stably than FedAvg here.

    python benchmarks/fedprox_synthetic.py [--rounds 200] [--seeds 0 1 2] [--out DIR]

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated Optimization in
Heterogeneous Networks" (MLSys).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import fedkit
from fedkit.aggregators import Mean
from fedkit.tasks import synthetic

METHODS = {
    "FedAvg (drop)": {"prox_mu": 0.0, "policy": "drop"},
    "FedProx mu=1 (partial)": {"prox_mu": 1.0, "policy": "partial"},
}


def strategy(prox_mu: float, policy: str, stragglers: float) -> fedkit.Strategy:
    return fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=20, batch_size=10, lr=0.01, prox_mu=prox_mu),
        server=Mean(),
        clients_per_round=10,
        stragglers=fedkit.Stragglers(fraction=stragglers, policy=policy),
    )


def summary(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.4f} ± {std:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--stragglers", type=float, default=0.9)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--out", type=Path, help="write one results record per run here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = synthetic(1.0, 1.0, key=args.data_seed)
    sizes = [task.client_size(i) for i in range(task.num_clients)]
    print(
        f"Synthetic(1,1): {task.num_clients} devices, {sum(sizes)} training examples "
        f"(largest device {max(sizes)}), {args.rounds} rounds, seeds {args.seeds}"
    )
    finals: dict[str, list[float]] = {m: [] for m in METHODS}
    tails: dict[str, list[float]] = {m: [] for m in METHODS}
    wobble: dict[str, list[float]] = {m: [] for m in METHODS}
    for name, method in METHODS.items():
        for seed in args.seeds:
            start = time.perf_counter()
            history = fedkit.simulate(
                task,
                strategy(method["prox_mu"], method["policy"], args.stragglers),
                rounds=args.rounds,
                key=seed,
                engine=args.engine,
                eval_every=args.eval_every,
            )
            accuracy = history.series("test_accuracy")
            tail = accuracy[-max(1, len(accuracy) // 5) :]  # last fifth of the evaluations
            finals[name].append(accuracy[-1])
            tails[name].append(statistics.fmean(tail))
            wobble[name].append(statistics.pstdev(tail))
            print(
                f"{name:<24} seed {seed}: final acc {accuracy[-1]:.4f}, "
                f"final train loss {history.metrics[-1]['train_loss']:.4f}, "
                f"acc curve {[round(a, 3) for a in accuracy[:: max(1, len(accuracy) // 8)]]} "
                f"({time.perf_counter() - start:.0f} s)"
            )
            if args.out is not None:
                slug = name.split(" ")[0].lower()
                history.save(args.out / f"{slug}_seed{seed}.json")
    print(f"\nfinal test accuracy over seeds {args.seeds} after {args.rounds} rounds")
    print(f"{'method':<24}{'final acc':>18}{'mean acc, last 20%':>22}{'std within run':>18}")
    for name in METHODS:
        print(
            f"{name:<24}{summary(finals[name]):>18}{summary(tails[name]):>22}"
            f"{statistics.fmean(wobble[name]):>18.4f}"
        )


if __name__ == "__main__":
    main()
