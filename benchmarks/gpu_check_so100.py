"""GPU check for the SO-100 task at full SmolVLA size (one H100, under 5 minutes, offline).

1. Builds a SmolVLM directory with the dimensions of SmolVLM2-500M (random weights, no
   download: :data:`fedkit.tasks.so100.fixture.SMOLVLM2_500M`) and a small generated SO-100
   dataset, then the SO-100 task with SmolVLA's default config on ``cuda``: about 450 M
   parameters, 100 M of them trainable.
2. Times training steps (``train_client``; float32, batch ``--batch-size``) after a warm-up
   epoch that also fills the frame cache (so decoding is not timed),
   and one held-out evaluation.
3. Aggregates 10 client updates of the trainable size (about 10 x 100 M float32 = 4 GB) on
   the GPU with mean, trimmed mean, Krum and geometric median: time and peak extra GPU
   memory each.

Prints one JSON summary (also written to ``--json``). Exits with status 2 and a message when
no CUDA device is present. ``--cpu-smoke`` runs the same code on the CPU with one step at
batch 2 and a 10 x 1 M aggregation (to check the script without a GPU: about 7 GB of host
memory, a few minutes); its numbers are not the check's.

    python benchmarks/gpu_check_so100.py --json "$OUT/gpu_check_so100.json"

On a GPU image without the robot extra, bring LeRobot's wheels (``pip download --no-deps``
of lerobot 0.6.1, av 15.1.0, datasets 4.8.5, draccus 0.11.6, mergedeep, toml, gymnasium,
farama-notifications, num2words, multiprocess, dill, fsspec 2026.2.0, transformers 5.5.4,
tokenizers 0.22.2: about 57 MB), ``pip install --no-deps --target DIR`` them and put DIR
and the repository on ``PYTHONPATH``. Measured that way on one H100 (80 GB HBM3): the whole
check in 90 s, 0.56 s per step at batch 32 (float32, 9.5 GiB peak), aggregation of
10 x 99.9 M: mean 0.005 s, trimmed mean 0.20 s, Krum 0.06 s, geometric median 0.04 s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

GIB = 1024**3


def require_cuda() -> torch.device:
    """The CUDA device, or exit with status 2 and a clear message."""
    if not torch.cuda.is_available():
        print(
            "gpu_check_so100: needs a CUDA GPU (torch.cuda.is_available() is False); "
            "run it on a GPU machine",
            file=sys.stderr,
        )
        sys.exit(2)
    return torch.device("cuda")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _allocated(peak: bool = False) -> int:
    if not torch.cuda.is_available():
        return 0
    return torch.cuda.max_memory_allocated() if peak else torch.cuda.memory_allocated()


def build_task(work: Path, batch_size: int, episodes: int, frames: int, device: str):
    """The full-size SO-100 task on cuda, from a generated VLM directory and dataset."""
    import fedkit
    from fedkit.tasks.so100 import so100
    from fedkit.tasks.so100.fixture import SMOLVLM2_500M, make_smolvlm, make_so100_dataset

    vlm = make_smolvlm(work / "smolvlm2_500m", **SMOLVLM2_500M)
    data = make_so100_dataset(
        work / "data",
        key=fedkit.key(0),
        episodes=episodes,
        frames_per_episode=frames,
        image_size=(96, 128),  # resized with padding to 512x512 inside SmolVLA
    )
    return so100(
        repo_id="fedkit/so100_fixture",
        root=data,
        vlm_model_name=vlm,
        num_clients=3,
        holdout_episodes=1,
        batch_size=batch_size,
        device=device,
        key=fedkit.key(0),
        cache_frames=True,
        max_eval_frames=2 * batch_size,
        eval_batch_size=batch_size,
    )


def time_training(task, steps: int, warmup: int) -> dict:
    import fedkit

    x = task.init(fedkit.key(1))
    t0 = time.perf_counter()
    task.train_client(x, 0, steps=warmup, lr=1e-4, key=fedkit.key(2))
    _sync()
    warm_s = time.perf_counter() - t0
    _reset_peak()
    t0 = time.perf_counter()
    delta, _, metrics = task.train_client(x, 0, steps=steps, lr=1e-4, key=fedkit.key(3))
    _sync()
    train_s = time.perf_counter() - t0
    peak = _allocated(peak=True) / GIB
    t0 = time.perf_counter()
    ev = task.evaluate(x + delta)
    _sync()
    return {
        "warmup_steps": warmup,
        "warmup_seconds": warm_s,
        "timed_steps": steps,
        "seconds_per_step": train_s / steps,
        "train_peak_gpu_gib": peak,
        "loss_first": metrics.get("loss_first"),
        "loss_last": metrics.get("loss_last"),
        "eval_seconds": time.perf_counter() - t0,
        "eval_frames": ev["test_frames"],
        "test_loss": ev["test_loss"],
        "delta": delta,
    }


def time_aggregation(base: torch.Tensor, n: int, device: torch.device | str) -> list[dict]:
    """Aggregate ``n`` updates ``base + noise_i`` of size ``d`` on ``device``."""
    import fedkit
    from fedkit.aggregators.geometric_median import geometric_median
    from fedkit.aggregators.krum import krum
    from fedkit.aggregators.mean import mean
    from fedkit.aggregators.trimmed_mean import trimmed_mean

    d = base.numel()
    key = fedkit.key(7)
    updates = torch.empty(n, d, dtype=torch.float32, device=device)
    scale = float(base.abs().mean()) or 1e-3
    for i in range(n):  # keyed noise, drawn on the CPU so the bits match on every device
        updates[i] = base.to(device) + fedkit.core.keys.normal(
            fedkit.fold_in(key, i), d, std=scale, device=device
        )
    weights = torch.full((n,), 100.0, device=device)
    kernels = {
        "mean": lambda: mean(updates, weights),
        "trimmed_mean": lambda: trimmed_mean(updates, weights, f=2),
        "krum": lambda: krum(updates, weights, f=2),
        "geometric_median": lambda: geometric_median(updates, weights),
    }
    rows = []
    for name, run in kernels.items():
        run()  # warm-up (kernels, allocator)
        _sync()
        _reset_peak()
        before = _allocated()
        t0 = time.perf_counter()
        out = run()
        _sync()
        seconds = time.perf_counter() - t0
        rows.append(
            {
                "aggregator": name,
                "n": n,
                "d": d,
                "seconds": seconds,
                "extra_gpu_gib": (_allocated(peak=True) - before) / GIB,
                "finite": bool(torch.isfinite(out).all()),
            }
        )
        del out
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="steps; 3 fill the frame cache")
    parser.add_argument("--clients", type=int, default=10, help="updates to aggregate")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cpu-smoke", action="store_true", help="check the script on a CPU")
    args = parser.parse_args()
    if args.cpu_smoke:
        device = "cpu"
        args.batch_size, args.steps, args.warmup = 2, 1, 1
    else:
        device = require_cuda()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    start = time.perf_counter()
    name = "cpu (smoke run)" if args.cpu_smoke else torch.cuda.get_device_name(0)
    summary: dict = {"device": name, "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        frames = max(3 * args.batch_size, 8)
        task = build_task(Path(tmp), args.batch_size, 4, frames, str(device))
        summary["build_seconds"] = time.perf_counter() - t0
        policy_params = sum(p.numel() for p in task._policy.parameters())
        summary |= {"policy_params": policy_params, "trainable_params": task.spec.size}
        print(
            f"built in {summary['build_seconds']:.1f} s: {policy_params:,} parameters, "
            f"{task.spec.size:,} trainable",
            flush=True,
        )
        training = time_training(task, args.steps, args.warmup)
        delta = training.pop("delta")
        summary["training"] = training
        print(
            f"training: {training['seconds_per_step']:.3f} s/step at batch {args.batch_size}",
            flush=True,
        )
        del task
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if args.cpu_smoke:
            delta = delta[:1_000_000]
        summary["aggregation"] = time_aggregation(delta, args.clients, device)
        for row in summary["aggregation"]:
            print(
                f"{row['aggregator']:>17}: {row['seconds']:.3f} s, "
                f"extra {row['extra_gpu_gib']:.2f} GiB",
                flush=True,
            )
    summary["total_seconds"] = time.perf_counter() - start
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)


if __name__ == "__main__":
    main()
