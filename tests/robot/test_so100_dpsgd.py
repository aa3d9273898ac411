"""Episode-level DP-SGD on the SO-100 task: an episode's whole contribution to a step is one
clipped gradient, whatever its frames; the schedule, noise and steps are the episodes'.

Offline: the tiny SmolVLM and generated SO-100 dataset of :mod:`fedkit.tasks.so100.fixture`.
"""

from __future__ import annotations

import os

import pytest
import torch

import fedkit
from fedkit.client import ClientConfig
from fedkit.client_dp import dp_noise
from fedkit.tasks.so100 import so100
from fedkit.tasks.so100.dp import episode_dp_gradient, frames_by_episode
from fedkit.tasks.so100.fixture import make_offline_fixture, tiny_smolvla_overrides
from fedkit.tasks.so100.offline import FIXTURE_HOLDOUT
from fedkit.tasks.so100.rng import seeded_global_rng
from privacy.dpsgd import DPSGD

pytestmark = [pytest.mark.robot, pytest.mark.slow]

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"

C = 1e-3  # far below the gradients' norms: every episode is clipped


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    vlm, data = make_offline_fixture(tmp_path_factory.mktemp("so100_dp"))
    return so100(
        repo_id="fedkit/so100_fixture",
        root=data,
        vlm_model_name=vlm,
        num_clients=3,
        holdout_episodes=FIXTURE_HOLDOUT,
        batch_size=8,
        key=fedkit.key(0),
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
        optimizer="sgd",
    )


def _poison(task, client: int, episode: int, scale: float) -> None:
    """Scale the actions of one episode of ``client`` in the task's frame cache (the data
    an adversarial or unusual demonstration would bring)."""
    frames = frames_by_episode(task._frame_episodes(client), [episode])[0]
    data = task._dataset(client)
    for i in frames.tolist():
        item = dict(task._item(data, client, i))
        item["action"] = item["action"] * scale
        task._cache[(client, i)] = item


def _episode_grads(task, flat, client):
    """The unclipped gradient of each episode's mean loss (all its frames), policy noise
    from a fixed key."""
    policy = task._load(flat)
    policy.train()
    data = task._dataset(client)
    frames = frames_by_episode(task._frame_episodes(client), range(task.dp_units(client)))
    out = []
    with torch.enable_grad():
        for j, rows in enumerate(frames):
            with seeded_global_rng(fedkit.key(100 + j)):
                loss = policy.forward(task._batch(data, client, rows))
            out.append(task._flat_grad(loss[0] if isinstance(loss, tuple) else loss))
    return torch.stack(out)


def test_an_episode_with_huge_gradients_moves_the_step_by_at_most_c_over_b(task):
    flat = task.init(fedkit.key(1))
    before = _episode_grads(task, flat, 2)
    _poison(task, 2, 0, 1e4)
    grads = _episode_grads(task, flat, 2)
    assert float(grads[0].norm()) > 100 * float(before[0].norm())  # it is huge now
    assert float(grads[0].norm()) > 1e3 * C
    b = 2.0  # the expected batch
    zero = torch.zeros(grads.shape[1])
    with_it = episode_dp_gradient(grads, C, zero, b)
    without = episode_dp_gradient(grads[1:], C, zero, b)
    assert float((with_it - without).norm()) <= C / b * (1 + 1e-4)
    # the same episode, unclipped, would move the step by ‖g‖ / B
    assert float((grads.sum(0) - grads[1:].sum(0)).norm()) / b > 1e3 * C / b


def test_a_noiseless_step_through_train_client_is_bounded_by_c(task):
    """All episodes sampled (q = 1), SGD with lr 1, no noise: the update is
    −Σ_e clip_C(g_e) / E, so its norm is at most C however large an episode's gradient."""
    flat = task.init(fedkit.key(2))
    cfg = ClientConfig(steps=1, lr=1.0, dp_sgd=DPSGD(C, 0.0, batch_size=3))
    _poison(task, 1, 2, 1e4)
    update, frames, metrics = task.train_client(flat, 1, cfg, 1, fedkit.key(3))
    assert frames == task.client_size(1) and metrics["dp_episodes_sampled"] == 3
    assert 0.3 * C < float(update.norm()) <= C * (1 + 1e-4)
    # the noise is the keyed N(0, (zC)^2) over the expected batch of episodes
    noisy = DPSGD(C, 2.0, batch_size=3)
    with_noise, _, _ = task.train_client(
        flat, 1, ClientConfig(steps=1, lr=1.0, dp_sgd=noisy), 1, fedkit.key(3)
    )
    k_noise = fedkit.split(fedkit.key(3), 4)[1]  # the task's keys: batches, noise, frames, policy
    noise = dp_noise(noisy, k_noise, 0, flat)
    torch.testing.assert_close(with_noise - update, -noise / 3.0, rtol=1e-4, atol=1e-6)
    assert float(noise.std()) == pytest.approx(2.0 * C, rel=0.05)


def test_steps_and_rates_count_episodes_and_the_engine_runs_it(task):
    setting = DPSGD(1.0, 1.0, batch_size=2)
    assert task.dp_units(0) == 3 and setting.sample_rate(task.dp_units(0)) == pytest.approx(2 / 3)
    assert task.steps_for(0, ClientConfig(epochs=2, dp_sgd=setting), 2) == 2 * 2
    assert task.steps_for(0, ClientConfig(epochs=2), 2) == 2 * 6  # frames: ceil(45 / 8)
    from privacy.accounting import epsilon
    from privacy.budget import DPSGDAccountant

    strategy = fedkit.Strategy(
        client=ClientConfig(epochs=1, lr=1e-2, dp_sgd=setting),
        server=fedkit.Mean(),
        accountant=DPSGDAccountant(delta=1e-5),
    )
    h = fedkit.simulate(task, strategy, rounds=1, key=0, progress=False)
    assert h.record["run"]["engine_used"] == "sequential"
    assert h.metrics[0]["accepted"] == 3
    # the accountant counts episodes (rate 2/3, ceil(3/2) = 2 steps), not frames (2/45)
    worst = max(
        epsilon(
            noise_multiplier=1.0,
            sample_rate=setting.sample_rate(task.dp_units(c)),
            steps=task.steps_for(c, strategy.client, 1),
            delta=1e-5,
        )
        for c in range(task.num_clients)
    )
    assert h.metrics[0]["epsilon"] == pytest.approx(worst, rel=1e-12)
    with pytest.raises(ValueError, match="prox_mu"):
        task.train_client(
            task.init(fedkit.key(0)),
            0,
            ClientConfig(steps=1, prox_mu=0.1, dp_sgd=setting),
            1,
            fedkit.key(0),
        )


def test_episode_helpers_name_bad_input_and_subsample_by_key():
    from fedkit.tasks.so100.dp import episode_subset

    with pytest.raises(ValueError, match="episode 7 has no frames"):
        frames_by_episode(torch.tensor([0, 0, 1]), [0, 7])
    frames = torch.arange(10, 20)
    assert episode_subset(frames, None, fedkit.key(0)) is frames
    assert episode_subset(frames, 50, fedkit.key(0)) is frames
    a = episode_subset(frames, 4, fedkit.key(1))
    assert torch.equal(a, episode_subset(frames, 4, fedkit.key(1)))  # same key, same frames
    assert a.numel() == 4 and bool((a.diff() > 0).all()) and set(a.tolist()) <= set(frames.tolist())
    with pytest.raises(ValueError, match="frames_per_episode must be >= 1"):
        episode_subset(frames, 0, fedkit.key(0))
    noise = torch.zeros(3)
    with pytest.raises(ValueError, match="expected_batch must be positive"):
        episode_dp_gradient(torch.zeros(2, 3), 1.0, noise, 0.0)
    with pytest.raises(ValueError, match=r"per-episode gradients \[k, 3\]"):
        episode_dp_gradient(torch.zeros(2, 4), 1.0, noise, 2.0)
    # an empty Poisson batch releases the noise alone
    assert torch.equal(
        episode_dp_gradient(torch.zeros(0, 3), 1.0, torch.ones(3), 2.0), torch.full((3,), 0.5)
    )
