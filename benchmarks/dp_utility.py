"""Utility vs privacy on Fashion-MNIST: test accuracy against ε (δ = 1e-5) for central
DP-FedAvg and for client DP-SGD, next to the non-private baseline with the same setup.

Setup (one core, the vectorised engine, ``threads=1``): Fashion-MNIST from the local IDX
files, a random ``max_train`` subset split IID over ``num_clients`` clients, an MLP
(784-64-10), ``clients_per_round`` clients per round, one local epoch of SGD per round,
``rounds`` rounds, test accuracy on a random ``max_test`` subset of the test set. ε comes
from the run's own privacy accountant (:mod:`privacy.budget`, RDP):

* central DP-FedAvg (user level): ``chain(*dp_fedavg(C, z, m))``, one subsampled Gaussian
  step per round at rate ``m / N``;
* client DP-SGD (example level, the largest ε over clients): every local step clips each
  example's gradient to ``C`` and adds ``N(0, (zC)²)``, Poisson batches at rate ``B / n``.

Outputs ``<out>/results.json``, ``<out>/table.md``, ``<out>/utility_vs_epsilon.png``.

    python benchmarks/dp_utility.py                        # the study (about 23 min, one core)
    python benchmarks/dp_utility.py --only baseline        # one point, to time it
    python benchmarks/dp_utility.py --merge                # only the points not in results.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import torch

import fedkit
from fedkit.aggregators import Mean
from fedkit.simulation import VectorizedEngine
from fedkit.tasks import fashion_mnist
from privacy.accounting import calibrate, epsilon
from privacy.budget import CentralDPAccountant, DPSGDAccountant
from privacy.dpsgd import DPSGD
from privacy.mechanisms import dp_fedavg

DELTA = 1e-5
SETUP: dict[str, Any] = {
    "num_clients": 1000,
    "clients_per_round": 100,
    "rounds": 30,
    "max_train": 30000,
    "max_test": 2000,
    "hidden": [64],
    "epochs": 1,
    "batch_size": 10,
    "lr": 0.3,
    "central_clip": 0.3,
    "dpsgd_clip": 1.0,
    "seed": 0,
    "max_parallel": 50,
}
CENTRAL_Z = (0.7, 1.0, 1.5, 2.0, 3.0)
DPSGD_Z = (1.0, 2.0, 3.0, 5.0)
LARGER_CLIPS = (0.6, 1.0)  # central: clipping alone and z = 3 (ε ≈ 0.84) at larger clip norms

Point = tuple[str, float | None, float | None]  # (kind, noise multiplier, clip norm)


def points(setup: dict) -> list[Point]:
    """The study's runs: the baseline, DP-FedAvg's clipping without noise (what clipping
    alone costs), central DP-FedAvg and DP-SGD by noise, then central at larger clips."""
    c, cs = setup["central_clip"], setup["dpsgd_clip"]
    return [
        ("baseline", None, None),
        ("clip_only", 0.0, c),
        *(("central", z, c) for z in CENTRAL_Z),
        *(("dpsgd", z, cs) for z in DPSGD_Z),
        ("dpsgd", 0.0, cs),  # per-example clipping and Poisson batches without noise
        *(p for big in LARGER_CLIPS for p in (("clip_only", 0.0, big), ("central", 3.0, big))),
    ]


def make_strategy(kind: str, z: float | None, clip: float | None, setup: dict) -> fedkit.Strategy:
    m = setup["clients_per_round"]
    client = fedkit.ClientConfig(
        epochs=setup["epochs"], batch_size=setup["batch_size"], lr=setup["lr"]
    )
    if kind == "baseline":
        return fedkit.Strategy(client=client, server=Mean(), clients_per_round=m)
    if kind == "clip_only":
        return fedkit.Strategy(
            client=client, server=fedkit.chain(*dp_fedavg(clip, 0.0, m)), clients_per_round=m
        )
    if kind == "central":
        return fedkit.Strategy(
            client=client,
            server=fedkit.chain(*dp_fedavg(clip, z, m)),
            clients_per_round=m,
            accountant=CentralDPAccountant(noise_multiplier=z, delta=DELTA),
        )
    if kind == "dpsgd":
        dp = DPSGD(max_grad_norm=clip, noise_multiplier=z, batch_size=setup["batch_size"])
        return fedkit.Strategy(
            client=fedkit.ClientConfig(epochs=setup["epochs"], lr=setup["lr"], dp_sgd=dp),
            server=Mean(),
            clients_per_round=m,
            accountant=DPSGDAccountant(delta=DELTA),
        )
    raise ValueError(f"unknown kind {kind!r}")


def run_point(task, point: Point, setup: dict) -> dict[str, Any]:
    kind, z, clip = point
    strategy = make_strategy(kind, z, clip, setup)
    t0 = time.perf_counter()
    history = fedkit.simulate(
        task,
        strategy,
        rounds=setup["rounds"],
        key=setup["seed"],
        engine=VectorizedEngine(max_parallel=setup["max_parallel"]),
        eval_every=setup["rounds"],
        progress=False,
    )
    seconds = time.perf_counter() - t0
    budget = history.record.get("privacy_budget") or {}
    return {
        "kind": kind,
        "noise_multiplier": z,
        "clip": clip,
        "epsilon": budget.get("epsilon"),
        "delta": DELTA,
        "test_accuracy": history.record["final"]["test_accuracy"],
        "train_loss": history.record["final"]["train_loss"],
        "central_noise_std": (
            z * clip / setup["clients_per_round"] if kind in ("central", "clip_only") else None
        ),
        "seconds": seconds,
        "train_s": history.record["timings"]["train_s"],
    }


def _key(r: dict, setup: dict) -> Point:
    clip = r.get("clip")
    if clip is None and r["kind"] in ("central", "clip_only"):  # records before clip was kept
        clip = setup["central_clip"]
    if clip is None and r["kind"] == "dpsgd":
        clip = setup["dpsgd_clip"]
    return (r["kind"], r["noise_multiplier"], clip)


def what_it_takes(results: list[dict], setup: dict) -> dict[str, Any]:
    """What ε ≤ 1 with < 10 % accuracy loss needs for central DP-FedAvg. The noisiest studied
    point within 10 % of the baseline fixes a tolerable noise std σ* = zC/m (at its clip C).
    Keeping the sampling rate q = m/N and the rounds, ``calibrate`` gives the z that spends
    exactly ε = 1; σ* then needs m ≥ zC/σ* clients per round (population m/q). With the
    population fixed instead, more clients per round raise q and z with it."""
    base = next(r["test_accuracy"] for r in results if r["kind"] == "baseline")
    central = [r for r in results if r["kind"] == "central"]
    ok = [r for r in central if r["test_accuracy"] >= 0.9 * base]
    out: dict[str, Any] = {"baseline_accuracy": base}
    within = [r for r in ok if r["epsilon"] is not None and r["epsilon"] <= 1.0]
    if within:
        out["studied_point_within_10pct_at_eps_le_1"] = max(
            within, key=lambda r: r["test_accuracy"]
        )
    if not ok:
        out["note"] = "no central point within 10 % of the baseline"
        return out
    tolerable = max(ok, key=lambda r: r["central_noise_std"])
    clip, sigma = tolerable["clip"], tolerable["central_noise_std"]
    q = setup["clients_per_round"] / setup["num_clients"]
    z1 = calibrate(target_epsilon=1.0, delta=DELTA, sample_rate=q, steps=setup["rounds"])
    m_needed = math.ceil(z1 * clip / sigma)
    fixed_n = None
    for m in range(10, setup["num_clients"] + 1, 10):
        zq = calibrate(
            target_epsilon=1.0,
            delta=DELTA,
            sample_rate=m / setup["num_clients"],
            steps=setup["rounds"],
        )
        if zq * clip / m <= sigma:
            fixed_n = {"clients_per_round": m, "noise_multiplier": zq, "noise_std": zq * clip / m}
            break
    out.update(
        tolerable_point=tolerable,
        sample_rate=q,
        z_for_epsilon_1=z1,
        check_epsilon=epsilon(
            noise_multiplier=z1, sample_rate=q, steps=setup["rounds"], delta=DELTA
        ),
        clients_per_round_needed=m_needed,
        population_needed=math.ceil(m_needed / q),
        with_population_fixed=fixed_n,
    )
    return out


def table(results: list[dict], setup: dict) -> str:
    base = next(r["test_accuracy"] for r in results if r["kind"] == "baseline")
    lines = [
        "| method | z | clip C | ε (δ=1e-5) | test accuracy | loss vs non-DP | run s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        eps = "∞ (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.3g}"
        z = "-" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:g}"
        clip = "-" if r.get("clip") is None else f"{r['clip']:g}"
        loss = (base - r["test_accuracy"]) / base
        lines.append(
            f"| {r['kind']} | {z} | {clip} | {eps} | {r['test_accuracy']:.4f} | {100 * loss:+.1f} % |"
            f" {r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def figure(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.0, 3.8))
    base = next(r["test_accuracy"] for r in results if r["kind"] == "baseline")
    ax.axhline(base, color="k", ls="--", label="non-DP")
    series: dict[str, list] = {}
    for r in results:
        if r["kind"] == "dpsgd" and r["epsilon"] is None:
            ax.axhline(r["test_accuracy"], color="C1", ls=":", label="DP-SGD clipping only")
        elif r["kind"] == "central":
            series.setdefault(f"central DP-FedAvg (user), C={r['clip']:g}", []).append(r)
        elif r["kind"] == "dpsgd":
            series.setdefault(f"DP-SGD (example), C={r['clip']:g}", []).append(r)
        elif r["kind"] == "clip_only" and r["clip"] == min(
            x["clip"] for x in results if x["kind"] == "clip_only"
        ):
            ax.axhline(
                r["test_accuracy"], color="gray", ls=":", label=f"clip only, C={r['clip']:g}"
            )
    for label, rows in series.items():
        pts = sorted((r["epsilon"], r["test_accuracy"]) for r in rows)
        ax.plot(*zip(*pts, strict=True), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("ε (δ = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.set_title("Fashion-MNIST MLP, 1000 clients, 100 per round")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/dp_utility")
    parser.add_argument("--only", choices=("baseline", "central", "dpsgd"), default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the runs already in <out>/results.json (same setup) and run only the others",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    setup = dict(SETUP)
    if args.rounds is not None:
        setup["rounds"] = args.rounds
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task = fashion_mnist(
        setup["num_clients"],
        model="mlp",
        hidden=setup["hidden"],
        max_train=setup["max_train"],
        max_test=setup["max_test"],
        key=setup["seed"],
    )
    todo = points(setup)
    if args.only is not None:  # one point of that kind, to time it
        todo = [p for p in todo if p[0] == args.only][:1]
    results = []
    done: dict[tuple, dict] = {}
    if args.merge and (out / "results.json").exists():
        old = json.loads((out / "results.json").read_text())
        if old["setup"] == setup:
            done = {_key(r, setup): r for r in old["runs"]}
    start = time.perf_counter()
    for point in todo:
        if point in done:
            results.append({**done[point], "clip": point[2]})
            continue
        r = run_point(task, point, setup)
        results.append(r)
        print(
            f"{point} eps={r['epsilon']} acc={r['test_accuracy']:.4f} ({r['seconds']:.0f} s)",
            flush=True,
        )
        (out / "results.json").write_text(json.dumps({"setup": setup, "runs": results}, indent=1))
    total = time.perf_counter() - start
    runs_s = sum(r["seconds"] for r in results)  # merged runs included
    summary = {"setup": setup, "runs": results, "this_call_s": total, "runs_s": runs_s}
    if any(r["kind"] == "baseline" for r in results):
        summary["what_it_takes"] = what_it_takes(results, setup)
        (out / "table.md").write_text(table(results, setup))
        figure(results, out / "utility_vs_epsilon.png")
    (out / "results.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps(summary.get("what_it_takes"), indent=1, default=str))
    print(f"this call {total:.0f} s; all runs {runs_s:.0f} s")


if __name__ == "__main__":
    main()
