"""DP-SGD step benchmark: the torch.func fast path vs Opacus, and the cost of DP itself.

One DP-SGD step = per-example gradients, per-example clipping, the sum, Gaussian noise and
an SGD update. Timed on the same model and the same batch in one process, methods
interleaved round by round (so drifting machine load hits all alike), median over repeats:

* ``plain``      — non-private step: mean loss, ``backward``, ``torch.optim.SGD.step``;
* ``opacus``     — ``GradSampleModule`` + ``DPOptimizer`` (SGD), created once, as Opacus users do;
* ``func``       — :func:`privacy.dpsgd.noisy_grad` on a dict of parameters + SGD update;
* ``func-flat``  — the same on one flat parameter vector (what the fedkit engines hold).

    python benchmarks/bench_dpsgd.py                 # digits CNN and FMNIST CNN, batch 64 and 256
    python benchmarks/bench_dpsgd.py --repeats 50 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch
from opacus import GradSampleModule
from opacus.optimizers import DPOptimizer
from torch import nn

import fedkit
from fedkit.tasks.base import keyed_init
from fedkit.tasks.models import digits_cnn, fmnist_cnn
from privacy.dpsgd import noisy_grad

MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "digits_cnn": (digits_cnn, (1, 8, 8)),
    "fmnist_cnn": (fmnist_cnn, (1, 28, 28)),
}
LR, CLIP, NOISE = 0.05, 1.0, 1.0
loss_fn = nn.functional.cross_entropy


def _fresh(factory: Callable[[], nn.Module]) -> nn.Module:
    model = factory()
    params = keyed_init(model, fedkit.key(0))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(params[name])
    return model


def _plain(factory, x, y):
    model = _fresh(factory)
    opt = torch.optim.SGD(model.parameters(), lr=LR)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


def _opacus(factory, x, y):
    gsm = GradSampleModule(_fresh(factory), loss_reduction="mean")
    opt = DPOptimizer(
        torch.optim.SGD(gsm.parameters(), lr=LR),
        noise_multiplier=NOISE,
        max_grad_norm=CLIP,
        expected_batch_size=x.shape[0],
        generator=fedkit.core.keys.generator(fedkit.key(1)),
    )

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(gsm(x), y).backward()
        opt.step()

    return step


def _func(factory, x, y, flat: bool):
    model = _fresh(factory)
    named = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {"params": fedkit.flatten(named)[0] if flat else named, "round": 0}
    spec = fedkit.spec_of(named) if flat else None
    root = fedkit.key(2)

    def step():
        p = state["params"]
        g = noisy_grad(
            model,
            p,
            x,
            y,
            loss_fn=loss_fn,
            max_grad_norm=CLIP,
            noise_multiplier=NOISE,
            expected_batch_size=x.shape[0],
            key=fedkit.fold_in(root, state["round"]),
            spec=spec,
        )
        state["params"] = p - LR * g if flat else {n: p[n] - LR * g[n] for n in p}
        state["round"] += 1

    return step


def bench(model_name: str, batch: int, repeats: int, warmup: int) -> dict:
    factory, shape = MODELS[model_name]
    rng = np.random.default_rng(batch)
    x = torch.as_tensor(rng.normal(size=(batch, *shape)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 10, size=batch))
    steps = {
        "plain": _plain(factory, x, y),
        "opacus": _opacus(factory, x, y),
        "func": _func(factory, x, y, flat=False),
        "func-flat": _func(factory, x, y, flat=True),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(warmup):
        for fn in steps.values():
            fn()
    for _ in range(repeats):
        for name, fn in steps.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    params = sum(p.numel() for p in factory().parameters())
    return {"model": model_name, "params": params, "batch": batch, "median_s": med, "min_s": best}


def _table(rows: list[dict], stat: str) -> None:
    print(f"\n{stat.removesuffix('_s')} step time (ms):\n")
    print(
        "| model | params | batch | plain | opacus | func | func-flat "
        "| opacus/func | func/plain | opacus/plain |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        t = {k: v * 1e3 for k, v in r[stat].items()}
        print(
            f"| {r['model']} | {r['params']} | {r['batch']} | {t['plain']:.2f} | "
            f"{t['opacus']:.2f} | {t['func']:.2f} | {t['func-flat']:.2f} | "
            f"{t['opacus'] / t['func']:.2f}x | {t['func'] / t['plain']:.2f}x | "
            f"{t['opacus'] / t['plain']:.2f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Full backward hook is firing")
    rows = [bench(m, b, args.repeats, args.warmup) for m in args.models for b in args.batches]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), cpu, {args.repeats} steps"
    )
    for stat in ("median_s", "min_s"):
        _table(rows, stat)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
