"""FedProx paper, Figure 1 on Synthetic(α, β): global training loss per round of FedAvg
(stragglers dropped), FedProx μ = 0 (stragglers' partial work kept, no proximal term) and
FedProx μ > 0 (partial work + proximal term).

Setting of Li et al. 2020 (Section 5, Figure 1): Synthetic(0,0), Synthetic(0.5,0.5) and
Synthetic(1,1) with 30 devices; 10 devices sampled per round, E = 20 local epochs, batch 10,
SGD lr 0.01, multinomial logistic regression, 200 rounds, μ = 1 for FedProx μ > 0 (the
paper's best μ on the synthetic data). Each round 0 %, 50 % or 90 % of the sampled devices
are stragglers that manage a uniform random number of epochs in [1, E]: FedAvg drops them,
both FedProx arms keep their partial work (``fedkit.PartialWork(policy="partial")``). With
0 % stragglers FedAvg and FedProx μ = 0 are the same algorithm (drop and partial only differ
for stragglers); the μ = 0 run stands for both.

What is measured: the *global training loss* f(w_t) = Σ_k n_k F_k(w_t) / Σ_k n_k of the
global model after every round (round 0 = the initial model) on the union of all 30
devices' training data (:func:`fedkit.tasks.global_loss.global_train_loss`), as the paper's
Figure 1 plots it; not the local minibatch loss a round reports. One generated data set per
setting (``--data-seed``); the run seeds vary the initial model, the sampling, the
stragglers and the data order.

As in the authors' code (github.com/litian96/FedProx, ``flearn/trainers``): devices are
sampled uniformly without replacement and averaged with weights n_k (the paper's
Algorithms 1-2 write sampling with p_k = n_k / n and a plain average; both target f), and
FedAvg and FedProx see the same devices and stragglers in a round (one run seed). One
difference: fedkit's stragglers draw their epochs from [1, E], the authors' code from
[1, E - 1].

Run time: the defaults are the paper's setting, 24 distinct runs of 200 rounds: 66 min of
CPU time, some 35 min on 2 free cores (measured; each results file states what it took).
Most of it is the largest devices: the log-normal sizes put ~1000 examples on one device,
which does 20 epochs of batch 10 whenever it is sampled. ``--max-samples 200`` caps every
device at 200 examples (``synthetic(max_samples_per_client=200)``: the first 200 of each
device's examples, trimming the 6 largest of the 30 devices of data seed 0) and takes at
most half the time -- but fewer local steps on the big devices means less client drift, and
the proximal term's advantage shrinks with it (``results/fedprox_synthetic.capped200.md``).

The paper's findings: with stragglers, FedProx μ = 0 (partial work) already converges
better than FedAvg (dropping them); μ > 0 makes convergence more stable under statistical
heterogeneity (α, β > 0) and stragglers.

    python benchmarks/fedprox_synthetic.py [--rounds 200] [--max-samples 0] [--seeds 0]
        [--jobs 2] [--results benchmarks/results] [--name fedprox_synthetic] [--out DIR]
    python benchmarks/fedprox_synthetic.py --from-json benchmarks/results/NAME.json

writes ``NAME.{md,json,png}`` under ``--results`` (``--from-json`` re-renders the md and
png of a finished grid without running it).

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith 2020, "Federated Optimization in
Heterogeneous Networks" (MLSys).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import multiprocessing
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

import fedkit
from fedkit.aggregators import Mean
from fedkit.run.callbacks import Callback
from fedkit.tasks import synthetic
from fedkit.tasks.global_loss import global_train_loss

SETTINGS = ((0.0, 0.0), (0.5, 0.5), (1.0, 1.0))
STRAGGLERS = (0.0, 0.5, 0.9)
FEDAVG, PROX0, PROX = "FedAvg", "FedProx mu=0", "FedProx mu>0"
ARMS = (FEDAVG, PROX0, PROX)
NAME = "fedprox_synthetic"  # stem of the results files
TAIL = 10  # rounds averaged for the "last rounds" column
STEADY = 1e-3  # a rise below this is no rise (float noise of a steady descent)


class GlobalLoss(Callback):
    """Records the global training loss of the initial model and after every round."""

    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_run_start(self, run: Any) -> None:
        self.losses.append(global_train_loss(run.task, run.state.params))

    def on_round_end(self, run: Any, metrics: dict[str, Any]) -> None:
        self.losses.append(global_train_loss(run.task, run.state.params))


def arm_config(arm: str, mu: float) -> tuple[float, str]:
    """``(prox_mu, straggler policy)`` of an arm."""
    return {FEDAVG: (0.0, "drop"), PROX0: (0.0, "partial"), PROX: (mu, "partial")}[arm]


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """One run; returns its curves. Runs in a worker process (one thread each)."""
    torch.set_num_threads(1)
    alpha, beta = job["setting"]
    task = synthetic(
        alpha,
        beta,
        data_seed=job["data_seed"],
        max_samples_per_client=job["max_samples"],
        key=job["seed"],
    )
    prox_mu, policy = arm_config(job["arm"], job["mu"])
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=20, batch_size=10, lr=0.01, prox_mu=prox_mu),
        server=Mean(),
        clients_per_round=10,
        stragglers=fedkit.PartialWork(fraction=job["stragglers"], policy=policy),
    )
    recorder = GlobalLoss()
    start, cpu_start = time.perf_counter(), time.process_time()
    history = fedkit.simulate(
        task,
        strategy,
        rounds=job["rounds"],
        key=job["seed"],
        engine=job["engine"],
        eval_every=job["eval_every"],
        callbacks=[recorder],
        progress=False,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if job["out"] is not None:
        arm = job["arm"].replace(" ", "_").replace("=", "").replace(">", "gt")
        slug = f"a{alpha:g}_b{beta:g}_s{job['stragglers']:g}_{arm}"
        history.save(Path(job["out"]) / f"{slug}_seed{job['seed']}.json")
    return {
        **{k: job[k] for k in ("setting", "stragglers", "arm", "seed")},
        "global_loss": recorder.losses,
        "local_train_loss": [m.get("train_loss") for m in history.metrics],
        "final_test_accuracy": history.series("test_accuracy")[-1],
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
    }


def rise(curve: list[float]) -> float:
    """Total increase of a loss curve, Σ_t max(0, f_t - f_{t-1}): 0 for a curve that never
    goes up; how much it oscillates (or diverges) beyond a steady descent."""
    return sum(max(0.0, b - a) for a, b in itertools.pairwise(curve))


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def fmt(values: list[float], digits: int = 3) -> str:
    mean, std = mean_std(values)
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if len(values) > 1 else "")


def summarise(runs: list[dict[str, Any]]) -> dict[tuple, dict[str, list[float]]]:
    """Per (setting, stragglers, arm), each a list over seeds: the final loss, the mean loss
    over all rounds (how fast it converged), over the last TAIL rounds, the rise and the
    final test accuracy."""
    out: dict[tuple, dict[str, list[float]]] = {}
    for r in runs:
        cell = out.setdefault(
            (tuple(r["setting"]), r["stragglers"], r["arm"]),
            {"final": [], "mean": [], "tail": [], "rise": [], "accuracy": []},
        )
        curve = r["global_loss"]
        cell["final"].append(curve[-1])
        cell["mean"].append(statistics.fmean(curve[1:]))
        cell["tail"].append(statistics.fmean(curve[-TAIL:]))
        cell["rise"].append(rise(curve))
        cell["accuracy"].append(r["final_test_accuracy"])
    return out


def findings(table: dict[tuple, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """The paper's claims, checked cell by cell (every setting with stragglers) on the mean
    over seeds: "beats" on the mean loss over all rounds (the paper compares convergence
    curves) and on the last rounds, "more stable" on the rise. ``holds`` is ``"yes"``, ``"no"`` or ``"tie"`` (both
    rises below ``STEADY``: neither curve ever goes up by more than that in all)."""

    def m(key: tuple, what: str) -> float:
        return statistics.fmean(table[key][what])

    def check(claim, setting, frac, better, worse, what):
        b, w = m((setting, frac, better), what), m((setting, frac, worse), what)
        tie = what == "rise" and max(b, w) < STEADY
        return {
            "claim": claim,
            "setting": setting,
            "stragglers": frac,
            "holds": "tie" if tie else "yes" if b < w else "no",
            "values": {worse: w, better: b},
        }

    claims = (
        ("mu=0 with partial work beats dropping (mean f)", PROX0, FEDAVG, "mean"),
        ("mu=0 with partial work beats dropping (last-10 f)", PROX0, FEDAVG, "tail"),
        ("mu>0 beats FedAvg (mean f)", PROX, FEDAVG, "mean"),
        ("mu>0 beats FedAvg (last-10 f)", PROX, FEDAVG, "tail"),
        ("mu>0 is more stable than mu=0 (rise)", PROX, PROX0, "rise"),
        ("mu>0 is more stable than FedAvg (rise)", PROX, FEDAVG, "rise"),
    )
    return [
        check(claim, setting, frac, better, worse, what)
        for setting, frac, arm in table
        if arm == PROX and frac > 0.0
        for claim, better, worse, what in claims
    ]


def plot(payload: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg, runs = payload["config"], payload["runs"]
    settings, stragglers = [tuple(s) for s in cfg["settings"]], cfg["stragglers"]
    colours = {FEDAVG: "tab:green", PROX0: "tab:blue", PROX: "tab:red"}
    labels = {
        FEDAVG: "FedAvg (drop)",
        PROX0: "FedProx μ=0 (partial)",
        PROX: f"FedProx μ={cfg['mu']:g} (partial)",
    }
    fig, axes = plt.subplots(
        len(stragglers),
        len(settings),
        figsize=(4.2 * len(settings), 3.2 * len(stragglers)),
        squeeze=False,
    )
    for i, frac in enumerate(stragglers):
        for j, setting in enumerate(settings):
            ax = axes[i][j]
            for arm in ARMS:
                curves = [
                    r["global_loss"]
                    for r in runs
                    if tuple(r["setting"]) == setting
                    and r["stragglers"] == frac
                    and r["arm"] == arm
                ]
                if not curves:
                    continue
                mean = [statistics.fmean(c[t] for c in curves) for t in range(len(curves[0]))]
                style = "--" if arm == FEDAVG and frac == 0.0 else "-"
                ax.plot(mean, style, color=colours[arm], label=labels[arm], linewidth=1.2)
            ax.set_title(f"Synthetic({setting[0]:g},{setting[1]:g}), {frac:.0%} stragglers")
            ax.set_xlabel("# rounds")
            ax.set_ylabel("global training loss")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    cap = cfg["max_samples_per_client"]
    fig.suptitle(
        "FedProx reproduction (Li et al. 2020, Fig. 1): E=20, 10 of 30 devices per round"
        + (f", at most {cap} examples per device" if cap else ", uncapped devices"),
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def command(cfg: dict[str, Any]) -> str:
    """The command line that reproduces a results file."""
    flat = " ".join(f"{a:g}" for s in cfg["settings"] for a in s)
    return (
        f"python benchmarks/fedprox_synthetic.py --rounds {cfg['rounds']} "
        f"--seeds {' '.join(map(str, cfg['seeds']))} --data-seed {cfg['data_seed']} "
        f"--mu {cfg['mu']:g} --max-samples {cfg['max_samples_per_client'] or 0} "
        f"--settings {flat} --stragglers {' '.join(f'{f:g}' for f in cfg['stragglers'])} "
        f"--engine {cfg['engine']} --jobs {cfg['jobs']}"
        + (f" --name {cfg['name']}" if cfg.get("name", NAME) != NAME else "")
    )


def markdown(payload: dict[str, Any], table, checks) -> str:
    cfg, runs, sizes = payload["config"], payload["runs"], payload["train_sizes"]
    settings, stragglers = [tuple(s) for s in cfg["settings"]], cfg["stragglers"]
    distinct = [r for r in runs if "same_run_as" not in r]
    cpu, jobs = payload["cpu_seconds"], cfg["jobs"]
    cap = cfg["max_samples_per_client"]
    lines = [
        "# FedProx on Synthetic(α, β): global training loss (Li et al. 2020, Figure 1)",
        "",
        "Generated by `benchmarks/fedprox_synthetic.py` (its docstring gives the setting); "
        "do not edit by hand.",
        "",
        f"Command: `{command(cfg)}`  ",
        f"Run time: {len(distinct)} runs took {cpu / 60:.0f} min of CPU time in all, i.e. "
        f"about {cpu / 60 / jobs:.0f} min on {jobs} free cores; this time "
        f"{payload['wall_seconds'] / 60:.0f} min wall with {jobs} workers on "
        f"{payload.get('cpu_count', os.cpu_count())} cores shared with other work (load average "
        f"{payload['load_average_at_start']:.1f} at the start).",
        "",
        f"30 devices, {sizes['examples']} training examples (largest device "
        f"{sizes['largest']}, smallest {sizes['smallest']}; data seed {cfg['data_seed']}"
        + (f", at most {cap} examples per device" if cap else ", the paper's uncapped sizes")
        + f"), 10 devices per round, E = 20, batch 10, lr 0.01, {cfg['rounds']} rounds, "
        f"seeds {' '.join(map(str, cfg['seeds']))}, engine {cfg['engine']}. "
        f"FedProx μ>0 uses μ = {cfg['mu']:g}.",
        "",
        "**Global training loss** f(w_t) = loss of the global model on the union of all "
        "devices' training data (the example-weighted mean of per-device losses), after every "
        "round. Columns: f after the last round; the mean of f over all rounds (lower = "
        f"faster convergence); over the last {TAIL} rounds; *rise* = Σ_t max(0, f_t − "
        "f_{t−1}), the total increase of the curve (0 for a steady descent; large when it "
        "oscillates or diverges); final test accuracy. "
        + ("Mean ± std over seeds. " if len(cfg["seeds"]) > 1 else "")
        + "With 0 % stragglers FedAvg and FedProx μ=0 are one algorithm (one run, shown "
        "in both rows).",
        "",
        "| setting | stragglers | method | final f | mean f | last-10 f | rise | test acc |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for setting in settings:
        for frac in stragglers:
            for arm in ARMS:
                cell = table.get((setting, frac, arm))
                if cell is None:
                    continue
                lines.append(
                    f"| Synthetic({setting[0]:g},{setting[1]:g}) | {frac:.0%} | {arm} | "
                    f"{fmt(cell['final'])} | {fmt(cell['mean'])} | {fmt(cell['tail'])} | "
                    f"{fmt(cell['rise'])} | {fmt(cell['accuracy'])} |"
                )
    lines += [
        "",
        f"![global training loss per round]({cfg.get('name', NAME)}.png)",
        "",
        "## The paper's findings, checked cell by cell",
        "",
        "| claim | setting | stragglers | holds | values |",
        "|---|---|---|---|---|",
    ]
    for c in checks:
        vals = ", ".join(f"{k}: {v:.3f}" for k, v in c["values"].items())
        s = c["setting"]
        lines.append(
            f"| {c['claim']} | Synthetic({s[0]:g},{s[1]:g}) | {c['stragglers']:.0%} | "
            f"{c['holds'] if c['holds'] != 'no' else '**no**'} | {vals} |"
        )
    lines.append("")
    for claim in dict.fromkeys(c["claim"] for c in checks):
        mine = [c["holds"] for c in checks if c["claim"] == claim]
        lines.append(
            f"- {claim}: holds in {mine.count('yes')} of {len(mine)} cells"
            + (f" ({mine.count('tie')} ties: both steady)" if "tie" in mine else "")
        )
    lines.append("")
    return "\n".join(lines)


def render(payload: dict[str, Any], results: Path) -> Path:
    """Write ``<name>.{json,md,png}`` of a finished grid under ``results``; the md's path."""
    table = summarise(payload["runs"])
    checks = findings(table)
    payload = {**payload, "findings": [{**c, "setting": list(c["setting"])} for c in checks]}
    name = payload["config"].get("name", NAME)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{name}.json").write_text(json.dumps(payload, indent=1) + "\n")
    plot(payload, results / f"{name}.png")
    md = results / f"{name}.md"
    md.write_text(markdown(payload, table, checks))
    return md


def run_grid(args: argparse.Namespace) -> dict[str, Any]:
    """Every run of the grid, in a pool of ``args.jobs`` worker processes."""
    settings = [(args.settings[i], args.settings[i + 1]) for i in range(0, len(args.settings), 2)]
    probe = synthetic(
        *settings[0], data_seed=args.data_seed, max_samples_per_client=args.max_samples, key=0
    )
    train_sizes = [probe.client_size(k) for k in range(probe.num_clients)]
    sizes = {
        "examples": sum(train_sizes),
        "largest": max(train_sizes),
        "smallest": min(train_sizes),
    }
    jobs = [
        {
            "setting": setting,
            "stragglers": frac,
            "arm": arm,
            "seed": seed,
            "mu": args.mu,
            "rounds": args.rounds,
            "data_seed": args.data_seed,
            "max_samples": args.max_samples,
            "engine": args.engine,
            "eval_every": args.eval_every,
            "out": None if args.out is None else str(args.out),
        }
        for setting in settings
        for frac in args.stragglers
        for arm in (ARMS if frac > 0 else (PROX0, PROX))
        for seed in args.seeds
    ]

    def cost(job: dict[str, Any]) -> float:
        """Relative work of a run: stragglers do about half of E epochs, or none when
        dropped. The pool takes the longest first, so its workers finish together."""
        return 1 - job["stragglers"] * (1.0 if job["arm"] == FEDAVG else 0.5)

    jobs.sort(key=cost, reverse=True)
    print(f"{len(jobs)} runs of {args.rounds} rounds on {args.jobs} worker(s); {sizes}")
    load = os.getloadavg()[0]
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for r in pool.map(run_one, jobs):
            runs.append(r)
            s = r["setting"]
            print(
                f"Synthetic({s[0]:g},{s[1]:g}) {r['stragglers']:.0%} {r['arm']:<13} seed "
                f"{r['seed']}: global loss {r['global_loss'][0]:.3f} -> "
                f"{r['global_loss'][-1]:.3f}, test acc {r['final_test_accuracy']:.3f} "
                f"({r['seconds']:.0f} s, {r['cpu_seconds']:.0f} s CPU)",
                flush=True,
            )
    wall = time.perf_counter() - start
    cpu = sum(r["cpu_seconds"] for r in runs)
    # without stragglers FedAvg is FedProx mu=0 (module doc): one run stands for both
    runs += [
        {**r, "arm": FEDAVG, "same_run_as": PROX0}
        for r in runs
        if r["stragglers"] == 0.0 and r["arm"] == PROX0
    ]
    runs.sort(key=lambda r: (tuple(r["setting"]), r["stragglers"], ARMS.index(r["arm"]), r["seed"]))
    return {
        "benchmark": "fedprox_synthetic",
        "paper": "Li et al. 2020, Federated Optimization in Heterogeneous Networks, Figure 1",
        "config": {
            "name": args.name,
            "rounds": args.rounds,
            "seeds": args.seeds,
            "data_seed": args.data_seed,
            "mu": args.mu,
            "settings": settings,
            "stragglers": args.stragglers,
            "max_samples_per_client": args.max_samples,
            "clients_per_round": 10,
            "epochs": 20,
            "batch_size": 10,
            "lr": 0.01,
            "engine": args.engine,
            "jobs": args.jobs,
        },
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "train_sizes": sizes,
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--mu", type=float, default=1.0)
    parser.add_argument(
        "--settings",
        type=float,
        nargs="+",
        default=[a for s in SETTINGS for a in s],
        help="alpha beta pairs, flattened (default: 0 0 0.5 0.5 1 1)",
    )
    parser.add_argument("--stragglers", type=float, nargs="+", default=list(STRAGGLERS))
    parser.add_argument(
        "--max-samples", type=int, default=0, help="per-device cap; 0 (default): none, as the paper"
    )
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument(
        "--engine",
        default="sequential",
        help="sequential (default: the vectorised engine pads every device to the longest "
        "local run, so stragglers save it nothing), vectorized or auto",
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--name", default=NAME, help="stem of the results files")
    parser.add_argument("--out", type=Path, help="also write one results record per run here")
    parser.add_argument(
        "--from-json", type=Path, help="re-render the md and png of a results JSON; run nothing"
    )
    args = parser.parse_args()
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text())
        payload["config"].setdefault("name", args.from_json.stem)
        print(render(payload, args.results).read_text())
        return
    args.max_samples = args.max_samples or None
    if len(args.settings) % 2:
        parser.error(f"--settings takes alpha beta pairs, got {len(args.settings)} numbers")
    torch.set_num_threads(1)
    payload = run_grid(args)
    print(render(payload, args.results).read_text())
    if any(not math.isfinite(r["global_loss"][-1]) for r in payload["runs"]):
        print("warning: some runs ended with a non-finite loss")


if __name__ == "__main__":
    main()
