"""Memory and time of robust aggregation at full SmolVLA size, on CPU.

A federated SmolVLA round sends ~100 M trainable parameters per client. This benchmark
aggregates 10 such float32 updates (4 GB of input) with ``mean``, ``trimmed_mean``,
``krum`` and ``geometric_median`` and reports, for each, the wall time, the extra memory
the kernel needed on top of its input (peak resident set size during the call minus the
size before it, sampled every 2 ms; "working" is that minus the ``[d]`` result) and the
process's peak RSS. The issue's target: the
whole round fits in 24 GiB.

Each aggregator runs in its own child process (so one kernel's freed memory cannot hide
another's peak); the input is drawn from a fixed key in coordinate chunks.

    python benchmarks/bench_so100_aggregation.py                  # 10 x 100 M (about 5 min)
    python benchmarks/bench_so100_aggregation.py --d 10000000     # a quick 10 x 10 M run
    python benchmarks/bench_so100_aggregation.py --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch

import fedkit

GIB = 1024**3
AGGREGATORS = {
    "mean": ("fedkit.aggregators.mean", "mean", {}),
    "trimmed_mean": ("fedkit.aggregators.trimmed_mean", "trimmed_mean", {"f": 2}),
    "krum": ("fedkit.aggregators.krum", "krum", {"f": 2}),
    "geometric_median": ("fedkit.aggregators.geometric_median", "geometric_median", {}),
    # the rest of the coordinate-wise and distance-based reducers (issue 2's memory bound:
    # extra memory under 10 % of the input at n = 10, d = 1e8); run them with --all
    "median": ("fedkit.aggregators.median", "median", {}),
    "multi_krum": ("fedkit.aggregators.krum", "multi_krum", {"f": 2, "m": 5}),
    "bulyan": ("fedkit.aggregators.bulyan", "bulyan", {"f": 1}),
    "centered_clipping": (
        "fedkit.aggregators.centered_clipping",
        "centered_clipping",
        {"clip_norm": 1.0, "iters": 3},
    ),
    "meamed": ("fedkit.aggregators.meamed", "meamed", {"f": 2}),
}
DEFAULT = ("mean", "trimmed_mean", "krum", "geometric_median")


def keyed_updates(n: int, d: int, key: fedkit.Key, chunk: int = 1 << 24) -> torch.Tensor:
    """``[n, d]`` float32 N(0, 1) rows drawn chunk by chunk (little memory beyond the
    output); row ``i``, chunk ``j`` from ``fold_in(fold_in(key, i), j)``."""
    out = torch.empty(n, d, dtype=torch.float32)
    for i in range(n):
        row = fedkit.fold_in(key, i)
        for j, start in enumerate(range(0, d, chunk)):
            stop = min(d, start + chunk)
            out[i, start:stop] = fedkit.core.keys.normal(fedkit.fold_in(row, j), stop - start)
    return out


class PeakRss:
    """Samples this process's RSS in a thread; ``peak`` is the largest value seen."""

    def __init__(self, interval: float = 0.002) -> None:
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def run_one(name: str, n: int, d: int, threads: int | None) -> dict:
    """Aggregate once in this process and measure (the child's job)."""
    import importlib

    if threads:
        torch.set_num_threads(threads)
    module, attr, kwargs = AGGREGATORS[name]
    kernel = getattr(importlib.import_module(module), attr)
    key = fedkit.key(2024)
    updates = keyed_updates(n, d, fedkit.fold_in(key, 0))
    weights = fedkit.core.keys.randint(fedkit.fold_in(key, 1), 50, 500, n).to(torch.float32)
    gc.collect()
    before = psutil.Process().memory_info().rss
    with PeakRss() as rss:
        t0 = time.perf_counter()
        out = kernel(updates, weights, **kwargs)
        seconds = time.perf_counter() - t0
    assert out.shape == (d,) and bool(torch.isfinite(out).all()), f"{name}: bad output"
    return {
        "aggregator": name,
        "n": n,
        "d": d,
        "input_gib": updates.numel() * updates.element_size() / GIB,
        "seconds": seconds,
        "extra_gib": (rss.peak - before) / GIB,
        # working memory: the extra minus the [d] result itself (1/n of the input)
        "working_gib": (rss.peak - before - out.numel() * out.element_size()) / GIB,
        "peak_rss_gib": rss.peak / GIB,
        "ru_maxrss_gib": _ru_maxrss_gib(),
        "threads": torch.get_num_threads(),
    }


def _ru_maxrss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10, help="clients")
    parser.add_argument("--d", type=int, default=100_000_000, help="parameters per client")
    parser.add_argument("--only", choices=sorted(AGGREGATORS), action="append")
    parser.add_argument("--all", action="store_true", help="every reducer listed, not 4")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--child", choices=sorted(AGGREGATORS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.n, args.d, args.threads)))
        return
    need = args.n * args.d * 4 / GIB
    free = psutil.virtual_memory().available / GIB
    print(f"{args.n} x {args.d:,} float32 = {need:.2f} GiB of input; {free:.1f} GiB available")
    if need * 1.5 > free:
        sys.exit(f"not enough free memory for a {need:.1f} GiB input (have {free:.1f} GiB)")
    rows = []
    for name in args.only or (list(AGGREGATORS) if args.all else DEFAULT):
        cmd = [sys.executable, __file__, "--child", name, "--n", str(args.n), "--d", str(args.d)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{name:>17}: {row['seconds']:8.2f} s   extra {row['extra_gib']:6.2f} GiB   "
            f"(working {100 * row['working_gib'] / row['input_gib']:4.1f} % of input)   "
            f"peak RSS {row['peak_rss_gib']:6.2f} GiB (ru_maxrss {row['ru_maxrss_gib']:.2f})"
        )
    worst = max(r["peak_rss_gib"] for r in rows)
    print(f"largest peak RSS {worst:.2f} GiB: {'fits' if worst < 24 else 'does NOT fit'} in 24 GiB")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
