"""Client DP-SGD inside the simulation engines (``ClientConfig(dp_sgd=...)``): the engines'
step against privacy.dpsgd and Opacus, engine agreement, clipping bound, keyed noise."""

from __future__ import annotations

import math

import attrs
import pytest
import torch
from helpers import TinyMLP, tiny_task
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
from fedkit.aggregators import Mean
from fedkit.client import (
    ClientConfig,
    num_steps,
)
from fedkit.client_dp import (
    clipped_grad_sum,
    dp_keys,
    dp_noise,
    poisson_schedule,
)
from fedkit.core.flat import unflatten
from fedkit.simulation import SequentialEngine, VectorizedEngine, pick_engine
from fedkit.simulation.jobs import ClientJob
from privacy.dpsgd import DPSGD, opacus_clipped_grad_sum, poisson_mask
from privacy.dpsgd import clipped_grad_sum as privacy_clipped_grad_sum

ENGINES = (SequentialEngine(), VectorizedEngine())


def _jobs(task, work=1, seed=1, clients=None):
    ids = range(task.num_clients) if clients is None else clients
    root = fedkit.key(seed)
    return [
        ClientJob(
            client=c, work=work, key=fedkit.fold_in(root, c), x=task.client_x[c], y=task.client_y[c]
        )
        for c in ids
    ]


def _config(z=0.0, c=0.5, batch=4, **kw):
    cfg = {"steps": 1, "lr": 1.0, **kw}
    return ClientConfig(dp_sgd=DPSGD(max_grad_norm=c, noise_multiplier=z, batch_size=batch), **cfg)


def _first_batch(job, cfg):
    """The examples of a job's first DP-SGD step, rebuilt from its key."""
    n = job.num_examples
    index, mask = poisson_schedule(n, 1, cfg.dp_sgd.sample_rate(n), dp_keys(job.key)[0])
    rows = index[0][mask[0]]
    return job.x[rows], job.y[rows]


@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_noiseless_step_equals_privacy_dpsgd_and_opacus(engine):
    task = tiny_task(seed=2, sizes=(9, 12, 6))
    params = task.init(fedkit.key(0))
    cfg = _config(z=0.0, c=0.3, batch=5)
    jobs = _jobs(task)
    out = engine.train(task, params, jobs, cfg)
    loss_fn = torch.nn.functional.cross_entropy
    for i, job in enumerate(jobs):
        xb, yb = _first_batch(job, cfg)
        expected = cfg.dp_sgd.expected_batch_size(job.num_examples)
        ours = privacy_clipped_grad_sum(
            task.module, params, xb, yb, loss_fn=loss_fn, max_grad_norm=0.3, spec=task.spec
        )
        module = TinyMLP(5, classes=3)
        module.load_state_dict(unflatten(params, task.spec))
        ref = opacus_clipped_grad_sum(module, xb, yb, loss_fn=loss_fn, max_grad_norm=0.3)
        ref_flat, _ = fedkit.flatten(ref, task.spec)
        # one SGD step with lr 1: update = −Σ clip(g) / (q·n)
        torch.testing.assert_close(out.updates[i], -ours / expected, rtol=1e-5, atol=1e-7)
        # Opacus divides by ‖g‖ + 1e-6 instead of ‖g‖
        torch.testing.assert_close(out.updates[i], -ref_flat / expected, rtol=1e-5, atol=1e-6)


def test_noise_is_the_clients_keyed_gaussian_over_the_expected_batch():
    task = tiny_task(seed=3, sizes=(8, 10))
    params = task.init(fedkit.key(1))
    jobs = _jobs(task, seed=7)
    quiet = SequentialEngine().train(task, params, jobs, _config(z=0.0, c=0.7))
    noisy = SequentialEngine().train(task, params, jobs, _config(z=1.3, c=0.7))
    for i, job in enumerate(jobs):
        setting = _config(z=1.3, c=0.7).dp_sgd
        noise = dp_noise(setting, dp_keys(job.key)[1], 0, params)
        expected = setting.expected_batch_size(job.num_examples)
        torch.testing.assert_close(noisy.updates[i] - quiet.updates[i], -noise / expected)
        assert float(noise.std()) == pytest.approx(1.3 * 0.7, rel=0.35)


def test_engines_agree_on_a_small_dp_run():
    task = tiny_task(seed=4)
    cfg = ClientConfig(
        epochs=2,
        lr=0.2,
        momentum=0.5,
        dp_sgd=DPSGD(max_grad_norm=1.0, noise_multiplier=0.8, batch_size=3),
    )
    strategy = fedkit.Strategy(client=cfg, server=Mean(), clients_per_round=4)
    runs = [
        fedkit.simulate(task, strategy, rounds=3, key=11, engine=e.name, progress=False)
        for e in ENGINES
    ]
    assert runs[1].record["run"]["engine_used"] == "vectorized"
    torch.testing.assert_close(runs[0].final_params, runs[1].final_params, rtol=1e-5, atol=1e-6)
    for a, b in zip(runs[0].metrics, runs[1].metrics, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


@settings(max_examples=15, deadline=None)
@given(
    c=st.floats(0.01, 3.0),
    batch=st.integers(1, 12),
    seed=st.integers(0, 2**20),
)
def test_a_noiseless_step_moves_at_most_lr_C_batch_over_expected_batch(c, batch, seed):
    task = tiny_task(seed=seed % 7, sizes=(12, 5))
    params = task.init(fedkit.key(seed))
    cfg = _config(z=0.0, c=c, batch=batch, lr=0.5)
    jobs = _jobs(task, seed=seed)
    out = VectorizedEngine().train(task, params, jobs, cfg)
    for i, job in enumerate(jobs):
        xb, _ = _first_batch(job, cfg)
        bound = 0.5 * c * xb.shape[0] / cfg.dp_sgd.expected_batch_size(job.num_examples)
        assert float(out.updates[i].norm()) <= bound * (1 + 1e-5) + 1e-7


@settings(max_examples=25)
@given(
    n=st.integers(1, 6),
    d=st.integers(1, 9),
    c=st.floats(0.01, 10.0),
    seed=st.integers(0, 2**20),
)
def test_clipped_sum_clips_each_example_jointly_over_blocks(n, d, c, seed):
    gen = torch.Generator().manual_seed(seed)
    grads = torch.randn(n, d + 2, generator=gen, dtype=torch.float64) * 3
    weights = (torch.rand(n, generator=gen) < 0.6).to(torch.float64)
    total = clipped_grad_sum(grads, weights, c)
    norms = grads.norm(dim=1)
    expected = ((weights * torch.clamp(c / norms, max=1.0))[:, None] * grads).sum(0)
    torch.testing.assert_close(total, expected)
    blocks = (grads[:, :2].reshape(n, 1, 2), grads[:, 2:])
    torch.testing.assert_close(clipped_grad_sum(blocks, weights, c), total)
    assert float(total.norm()) <= c * float(weights.sum()) * (1 + 1e-9)


@settings(max_examples=20)
@given(
    n=st.integers(1, 40), steps=st.integers(1, 6), q=st.floats(0.0, 1.0), seed=st.integers(0, 2**20)
)
def test_poisson_schedule_is_the_keyed_poisson_mask_of_each_step(n, steps, q, seed):
    key = fedkit.key(seed)
    index, mask = poisson_schedule(n, steps, q, key)
    assert index.shape == mask.shape and index.shape[0] == steps
    for t in range(steps):
        chosen = torch.nonzero(poisson_mask(fedkit.fold_in(key, t), n, q)).flatten()
        assert torch.equal(index[t][mask[t]], chosen)
        assert bool(mask[t][: chosen.numel()].all()) and not bool(mask[t][chosen.numel() :].any())


def test_dp_steps_per_epoch_follow_the_dp_batch_size():
    cfg = ClientConfig(epochs=2, batch_size=32, dp_sgd=DPSGD(1.0, 1.0, batch_size=4))
    assert num_steps(10, 2, cfg) == 2 * math.ceil(10 / 4)
    assert num_steps(10, 2, attrs.evolve(cfg, steps=5)) == 2


def test_keyed_determinism_and_key_dependence():
    task = tiny_task(seed=5)
    params = task.init(fedkit.key(2))
    cfg = _config(z=1.0, c=1.0, steps=3, lr=0.1)
    a = VectorizedEngine().train(task, params, _jobs(task, seed=3), cfg)
    b = VectorizedEngine().train(task, params, _jobs(task, seed=3), cfg)
    c = VectorizedEngine().train(task, params, _jobs(task, seed=4), cfg)
    assert torch.equal(a.updates, b.updates)
    assert not torch.allclose(a.updates, c.updates)


def test_dp_sgd_runs_vectorised_and_rejects_bad_settings():
    task = tiny_task()
    strategy = fedkit.Strategy(client=_config(z=1.0), server=Mean())
    assert pick_engine(task, strategy, "auto").name == "vectorized"
    with pytest.raises(TypeError, match="DPSGDSetting"):
        ClientConfig(dp_sgd={"max_grad_norm": 1.0})
    assert ClientConfig(dp_sgd=DPSGD(1.0, 1.0, 4, backend="opacus")).dp_sgd.backend == "opacus"
    with pytest.raises(ValueError, match="backend"):
        ClientConfig(dp_sgd=attrs.evolve(DPSGD(1.0, 1.0, 4), backend="jax"))
    with pytest.raises(ValueError, match="weights"):
        clipped_grad_sum(torch.zeros(3, 2), torch.zeros(2), 1.0)
