"""Aggregator benchmark: fedkit vs Flower vs ByzFL on identical inputs, in one process.

Prints a table of wall times and speed-ups (peer time / fedkit time) and writes it as JSON
and Markdown. Each row times fedkit and its peers one after the other on the same data, so
a busy machine slows them alike; ``--best`` takes the fastest call of each (the least
disturbed one) instead of the median, and the load average before and after the run is
printed and saved with the results. Each library gets the input in its native format (Flower: one list of
NumPy arrays per client with an example count; Flower's Message API: RecordDicts holding an
ArrayRecord; ByzFL and fedkit: one [n, d] tensor); building those inputs is not timed.

    python benchmarks/bench_aggregators.py            # quick grid: n in {10, 50}, d in {1e5, 1e6}
    python benchmarks/bench_aggregators.py --full     # the issue's grid: n in {10,50,100}, d up to 1e7
    python benchmarks/bench_aggregators.py --n 50 --d 1e6 --best --repeats 5 --peer-repeats 3 \
        --threads 2 --only median trimmed_mean krum multi_krum   # issue 17 §4's measurement
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

import fedkit
from fedkit import aggregators as agg

# Skip a peer's call when its estimated time exceeds this (seconds); the table says so.
PEER_BUDGET_S = 60.0


def _timeit(
    fn: Callable[[], object], repeats: int, budget_s: float, best: bool = False
) -> tuple[float, int]:
    """Median (``best``: minimum) seconds of ``fn`` over ``repeats`` calls after one warm-up
    call; a call so slow that the repeats would exceed ``budget_s`` is timed once (the
    warm-up itself)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first * repeats > budget_s:
        return first, 1
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return (min(times) if best else statistics.median(times)), repeats


def _flower_inputs(u: np.ndarray, w: np.ndarray):
    return [([u[i]], int(w[i])) for i in range(u.shape[0])]


def _flower_msg_inputs(u: np.ndarray, w: np.ndarray):
    from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict

    return [
        RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(u[i])}),
                "metrics": MetricRecord({"num-examples": int(w[i])}),
            }
        )
        for i in range(u.shape[0])
    ]


def cases(n: int, f: int):
    """(name, fedkit call, Flower call or None, ByzFL call or None, partition baseline?)."""
    from flwr.server.strategy import aggregate as fa
    from flwr.serverapp.strategy.multikrum import select_multikrum
    from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

    try:
        import byzfl
    except ImportError:  # the bench extra is not installed
        byzfl = None
    m = n - f
    bz = (lambda cls, *a: cls(*a)) if byzfl else None
    return [
        (
            "mean",
            lambda U, W: agg.mean(U, W),
            lambda R, M: fa.aggregate(R),
            bz and bz(byzfl.Average),
            False,
        ),
        (
            "median",
            lambda U, W: agg.median(U),
            lambda R, M: fa.aggregate_median(R),
            bz and bz(byzfl.Median),
            True,
        ),
        (
            "trimmed_mean",
            lambda U, W: agg.trimmed_mean(U, f=f),
            lambda R, M: fa.aggregate_trimmed_avg(R, f / n),
            bz and bz(byzfl.TrMean, f),
            True,
        ),
        (
            "krum",
            lambda U, W: agg.krum(U, f=f),
            lambda R, M: fa.aggregate_krum(R, num_malicious=f, to_keep=0),
            bz and bz(byzfl.Krum, f),
            False,
        ),
        (
            "multi_krum",
            lambda U, W: agg.multi_krum(U, W, f=f, m=m),
            lambda R, M: fa.aggregate_krum(R, num_malicious=f, to_keep=m),
            bz and bz(byzfl.MultiKrum, f),
            False,
        ),
        (
            "multi_krum (msg api)",
            lambda U, W: agg.multi_krum(U, W, f=f, m=m),
            lambda R, M: aggregate_arrayrecords(select_multikrum(M, f, m), "num-examples"),
            None,
            False,
        ),
        (
            "bulyan",
            lambda U, W: agg.bulyan(U, f=f),
            lambda R, M: fa.aggregate_bulyan(
                list(R), num_malicious=f, aggregation_rule=fa.aggregate_krum, to_keep=0
            ),
            None,
            False,
        ),
        (
            "geometric_median",
            lambda U, W: agg.geometric_median(U),
            None,
            bz and bz(byzfl.GeometricMedian),
            False,
        ),
        (
            "centered_clipping",
            lambda U, W: agg.centered_clipping(U, clip_norm=1.0, iters=3),
            None,
            bz and (lambda X: byzfl.CenteredClipping(m=None, L=3, tau=1.0)(X)),
            False,
        ),
        ("meamed", lambda U, W: agg.meamed(U, f=f), None, bz and bz(byzfl.Meamed, f), False),
        ("caf", lambda U, W: agg.caf(U, f=f), None, bz and bz(byzfl.CAF, f), False),
        ("monna", lambda U, W: agg.monna(U, f=f), None, bz and bz(byzfl.MoNNA, f), False),
    ]


def _flower_cost_estimate(name: str, n: int, f: int, d: int, per_norm_s: float) -> float:
    """Rough seconds for Flower's quadratic Python loops (distance matrix of n² norms)."""
    if name == "krum" or name == "multi_krum":
        return n * n * per_norm_s
    if name == "bulyan":
        return sum(k * k for k in range(2 * f + 1, n + 1)) * per_norm_s
    return 0.0


def run(
    ns,
    ds,
    repeats: int,
    out_dir: Path,
    console: Console,
    *,
    peer_repeats: int | None = None,
    best: bool = False,
    only: list[str] | None = None,
) -> list[dict]:
    peer_repeats = peer_repeats or repeats
    rows = []
    combos = [(n, d) for n in ns for d in ds]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarking", total=len(combos))
        for n, d in combos:
            f = max(1, n // 10)
            key = fedkit.key(n * 1_000_003 + d)
            U = fedkit.core.keys.normal(key, (n, d))
            W = torch.full((n,), 10.0)
            Un, Wn = U.numpy(), W.numpy()
            results = _flower_inputs(Un, Wn)
            msgs = _flower_msg_inputs(Un, Wn)
            a, b = Un[0], Un[1]
            t0 = time.perf_counter()
            for _ in range(5):
                np.linalg.norm(a - b)
            per_norm = (time.perf_counter() - t0) / 5
            for name, ours, flower, byz, partition in cases(n, f):
                if only and name not in only and name.split(" ")[0] not in only:
                    continue
                progress.update(task, description=f"n={n} d={d:.0e} {name}")
                row = {"aggregator": name, "n": n, "d": d, "f": f}
                row["fedkit_s"], _ = _timeit(
                    lambda ours=ours, U=U, W=W: ours(U, W), repeats, PEER_BUDGET_S, best
                )
                if flower is not None:
                    est = _flower_cost_estimate(name.split(" ")[0], n, f, d, per_norm)
                    if est > PEER_BUDGET_S:
                        row["flower_s"] = None
                        row["flower_note"] = f"skipped (est. {est:.0f} s)"
                    else:
                        row["flower_s"], _ = _timeit(
                            lambda flower=flower, R=results, M=msgs: flower(R, M),
                            peer_repeats,
                            PEER_BUDGET_S,
                            best,
                        )
                if byz is not None:
                    row["byzfl_s"], _ = _timeit(
                        lambda byz=byz, U=U: byz(U), peer_repeats, PEER_BUDGET_S, best
                    )
                if partition:
                    k = n // 2 if name == "median" else f
                    row["np_partition_s"], _ = _timeit(
                        lambda Un=Un, k=k, n=n: np.partition(Un, (k, n - 1 - k), axis=0),
                        peer_repeats,
                        PEER_BUDGET_S,
                        best,
                    )
                for peer in ("flower", "byzfl", "np_partition"):
                    if row.get(f"{peer}_s"):
                        row[f"{peer}_speedup"] = row[f"{peer}_s"] / row["fedkit_s"]
                rows.append(row)
            gc.collect()
            progress.advance(task)
    return rows


def render(rows: list[dict], console: Console, stat: str = "median") -> str:
    table = Table(title=f"Aggregators: {stat} seconds; speed-up = peer time / fedkit time")
    cols = [
        "aggregator",
        "n",
        "d",
        "fedkit",
        "Flower",
        "x Flower",
        "ByzFL",
        "x ByzFL",
        "np.partition",
        "x part.",
    ]
    for c in cols:
        table.add_column(c, justify="right" if c not in ("aggregator",) else "left")
    md = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def fmt(v, unit=""):
        if v is None:
            return "–"
        return f"{v * 1e3:.1f} ms" if unit == "s" else f"{v:.1f}x"

    for r in rows:
        cells = [
            r["aggregator"],
            str(r["n"]),
            f"{r['d']:.0e}",
            fmt(r["fedkit_s"], "s"),
            r.get("flower_note") or fmt(r.get("flower_s"), "s"),
            fmt(r.get("flower_speedup")),
            fmt(r.get("byzfl_s"), "s"),
            fmt(r.get("byzfl_speedup")),
            fmt(r.get("np_partition_s"), "s"),
            fmt(1 / r["np_partition_speedup"]) if r.get("np_partition_speedup") else "–",
        ]
        table.add_row(*cells)
        md.append("| " + " | ".join(cells) + " |")
    console.print(table)
    console.print("x part. = fedkit time / np.partition time (selection-bound target: ≤ 2x)")
    return "\n".join(md) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--full", action="store_true", help="n in {10,50,100}, d in {1e5,1e6,1e7}")
    p.add_argument("--n", type=int, nargs="*")
    p.add_argument("--d", type=float, nargs="*")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of fedkit (and peers)")
    p.add_argument("--peer-repeats", type=int, help="timed calls of each peer (default: --repeats)")
    p.add_argument("--best", action="store_true", help="fastest call instead of the median")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    p.add_argument("--only", nargs="*", help="aggregator names to run (default: all)")
    p.add_argument("--out", type=Path, default=Path("runs/bench_aggregators"))
    args = p.parse_args(argv)
    ns = args.n or ([10, 50, 100] if args.full else [10, 50])
    ds = [int(x) for x in (args.d or ([1e5, 1e6, 1e7] if args.full else [1e5, 1e6]))]
    if args.threads:
        torch.set_num_threads(args.threads)
    console = Console()
    stat = "best" if args.best else "median"
    peer_repeats = args.peer_repeats or args.repeats
    setting = (
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; n={ns}, d={ds}; "
        f"{stat} of {args.repeats} (fedkit) / {peer_repeats} (peers) calls"
    )
    load_before = os.getloadavg()
    console.print(f"{setting}; load average {load_before[0]:.2f}")
    rows = run(
        ns,
        ds,
        args.repeats,
        args.out,
        console,
        peer_repeats=peer_repeats,
        best=args.best,
        only=args.only,
    )
    load_after = os.getloadavg()
    md = render(rows, console, stat)
    md = f"{setting}; load average {load_before[0]:.2f} → {load_after[0]:.2f}\n\n{md}"
    console.print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"setting": setting, "load_before": load_before, "load_after": load_after}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "table.md").write_text(md)
    console.print(f"wrote {args.out}/results.json and table.md")


if __name__ == "__main__":
    main()
