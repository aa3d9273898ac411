"""The SO-100 task driven by ``fedkit.simulate`` (the engine's call form of ``train_client``).

Offline: the tiny SmolVLM and generated SO-100 dataset of :mod:`fedkit.tasks.so100.fixture`,
built the same way as in ``test_so100.py``.
"""

from __future__ import annotations

import os

import pytest

import fedkit
from fedkit.tasks.so100 import so100
from fedkit.tasks.so100.fixture import (
    make_so100_dataset,
    make_tiny_smolvlm,
    tiny_smolvla_overrides,
)

pytestmark = [pytest.mark.robot, pytest.mark.slow]

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"

REPO = "fedkit/so100_fixture"
EPISODES, FRAMES, IMAGE = 12, 15, (24, 32)
HOLDOUT = (9, 10, 11)  # one episode of each task: 3 clients of 3 episodes (45 frames) each
BATCH = 8


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    base = tmp_path_factory.mktemp("so100_simulate")
    vlm = make_tiny_smolvlm(base / "vlm")
    data = make_so100_dataset(
        base / "data",
        key=fedkit.key(0),
        episodes=EPISODES,
        frames_per_episode=FRAMES,
        image_size=IMAGE,
        repo_id=REPO,
    )
    return so100(
        repo_id=REPO,
        root=data,
        vlm_model_name=vlm,
        num_clients=3,
        holdout_episodes=HOLDOUT,
        batch_size=BATCH,
        key=fedkit.key(0),
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
    )


def _run(task, server, rounds):
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(steps=3, lr=1e-2), server=server)
    return fedkit.simulate(task, strategy, rounds=rounds, key=fedkit.key(0), progress=False)


def test_simulate_lowers_the_held_out_action_loss(task):
    """3 rounds of FedAvg over 3 clients through the engine lower the held-out loss; a
    robust reducer runs in the same chain (TrimmedMean with f=0 over equal-sized clients is
    the plain mean, so its first round matches FedAvg's)."""
    # The engine's epoch rule: ceil(45 frames / batch 8) = 6 steps per epoch.
    assert task.steps_for(0, fedkit.ClientConfig(epochs=2), 2) == 2 * 6
    assert task.steps_for(0, fedkit.ClientConfig(steps=3), 3) == 3

    history = _run(task, fedkit.chain(fedkit.Mean()), rounds=3)
    losses = [m["test_loss"] for m in history.metrics]
    assert history.record["run"]["engine_used"] == "sequential"
    assert [m["accepted"] for m in history.metrics] == [3, 3, 3]
    assert losses[-1] < 0.85 * losses[0], losses
    task.spec.check(history.final_params)

    robust = _run(task, fedkit.chain(fedkit.TrimmedMean(f=0)), rounds=1)
    assert robust.metrics[0]["test_loss"] == pytest.approx(losses[0], rel=1e-5)
