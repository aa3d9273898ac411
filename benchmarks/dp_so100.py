"""Utility of episode-level DP-SGD on SO-100: tiny SmolVLA, 3 clients, held-out action loss.

Trains the tiny offline SmolVLA (:mod:`fedkit.tasks.so100.fixture`) federatedly with FedAvg
over 3 clients (every client every round), once without privacy and once per noise
multiplier with episode-level DP-SGD (:mod:`fedkit.tasks.so100.dp`: each Poisson-sampled
episode's gradient clipped to ``C``, noise ``N(0, (zC)²)``, divided by the expected number of
episodes). Reports the held-out action loss (the policy's flow-matching loss on held-out
episodes, the task's ``evaluate``) and ε at δ = 1e-5: per client, ``rounds · steps``
subsampled Gaussian steps at rate ``batch_episodes / client episodes`` (RDP), the largest over
the clients. Sampling of clients is not counted (all train every round).

The data is the fixture's generator with more, shorter episodes than the test fixture (the
accountant needs more than three episodes per client to amplify anything): ``--episodes``
episodes of ``--frames`` frames, the last 6 held out. Runtime with the defaults: about
30 s on an idle 2-core box (4 min of CPU, 9.5 min wall, on a shared one).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dp_so100.py
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dp_so100.py --noise 1 3 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")

import fedkit  # noqa: E402
from fedkit.client import ClientConfig  # noqa: E402
from fedkit.tasks.so100 import so100  # noqa: E402
from fedkit.tasks.so100.fixture import (  # noqa: E402
    make_so100_dataset,
    make_tiny_smolvlm,
    tiny_smolvla_overrides,
)
from privacy.accounting import epsilon  # noqa: E402
from privacy.dpsgd import DPSGD  # noqa: E402

DELTA = 1e-5
HOLDOUT = 6
RESULTS = Path(__file__).parent / "results" / "dp_utility_so100.json"


def build_task(base: Path, episodes: int, frames: int, seed: int):
    vlm = make_tiny_smolvlm(base / "vlm")
    data = make_so100_dataset(
        base / "data",
        key=fedkit.key(seed),
        episodes=episodes,
        frames_per_episode=frames,
        image_size=(24, 32),
        repo_id="fedkit/so100_dp",
    )
    return so100(
        repo_id="fedkit/so100_dp",
        root=data,
        vlm_model_name=vlm,
        num_clients=3,
        holdout_episodes=tuple(range(episodes - HOLDOUT, episodes)),
        batch_size=8,
        key=fedkit.key(seed),
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
    )


def train(task, cfg: ClientConfig, rounds: int, seed: int) -> tuple[float, float]:
    """``(final held-out loss, seconds)`` of ``rounds`` FedAvg rounds with client config
    ``cfg`` from the policy drawn from ``key(seed)``."""
    strategy = fedkit.Strategy(client=cfg, server=fedkit.Mean(), clients_per_round=3)
    start = time.perf_counter()
    history = fedkit.simulate(
        task,
        strategy,
        rounds=rounds,
        key=seed,
        progress=False,
        init_params=task.init(fedkit.key(seed)),
    )
    return float(history.metrics[-1]["test_loss"]), time.perf_counter() - start


def client_epsilon(task, z: float, batch_episodes: int, steps: int) -> float:
    """The largest client ε at ``DELTA`` for ``steps`` episode-level DP-SGD steps."""
    return max(
        epsilon(
            noise_multiplier=z,
            sample_rate=min(1.0, batch_episodes / task.dp_units(c)),
            steps=steps,
            delta=DELTA,
        )
        for c in range(task.num_clients)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=48)
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="local steps per round")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--batch-episodes", type=int, default=3)
    parser.add_argument("--noise", type=float, nargs="+", default=[1.0, 2.0, 5.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        task = build_task(Path(tmp), args.episodes, args.frames, args.seed)
        initial = float(task.evaluate(task.init(fedkit.key(args.seed)))["test_loss"])
        print(f"initial held-out loss {initial:.4f}", flush=True)
        base = ClientConfig(steps=args.steps, lr=args.lr)
        nonprivate, secs = train(task, base, args.rounds, args.seed)
        print(f"non-private: held-out loss {nonprivate:.4f} ({secs:.0f} s)", flush=True)
        rows = [
            {
                "setting": "so100 tiny SmolVLA, non-private",
                "epsilon": None,
                "delta": None,
                "heldout_action_loss": nonprivate,
                "nonprivate_loss": nonprivate,
                "relative_utility_loss": 0.0,
                "seconds": secs,
            }
        ]
        for z in args.noise:
            setting = DPSGD(args.clip, z, args.batch_episodes)
            loss, secs = train(
                task,
                ClientConfig(steps=args.steps, lr=args.lr, dp_sgd=setting),
                args.rounds,
                args.seed,
            )
            eps = client_epsilon(task, z, args.batch_episodes, args.rounds * args.steps)
            rows.append(
                {
                    "setting": f"so100 tiny SmolVLA, episode-level DP-SGD z={z:g}",
                    "epsilon": eps,
                    "delta": DELTA,
                    "heldout_action_loss": loss,
                    "nonprivate_loss": nonprivate,
                    "relative_utility_loss": (loss - nonprivate) / nonprivate,
                    "seconds": secs,
                }
            )
            print(f"z={z:g}: eps={eps:.2f} held-out loss {loss:.4f} ({secs:.0f} s)", flush=True)
        episodes = [task.dp_units(c) for c in range(task.num_clients)]
        heldout_frames = task.holdout_size

    result = {
        "command": "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/dp_so100.py",
        "privacy_unit": "episode",
        "delta": DELTA,
        "accountant": "rdp, per client, largest over clients; client sampling not counted",
        "setup": {
            **{k: v for k, v in vars(args).items() if k != "out"},
            "clients": 3,
            "client_episodes": episodes,
            "heldout_episodes": HOLDOUT,
            "heldout_frames": heldout_frames,
            "initial_heldout_loss": initial,
            "optimizer": "adamw (the SmolVLA preset), same for every row",
            "loss": "the policy's flow-matching action loss on the held-out frames, fixed key",
        },
        "seconds_total": time.perf_counter() - started,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} ({result['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
