"""Client DP-SGD's two backends in the engines: Opacus (``GradSampleModule``) against the
``torch.func`` path — per-example gradients, clipped sums, noise, whole runs and ε."""

from __future__ import annotations

import functools
import math

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import fedkit
from fedkit.aggregators import Mean
from fedkit.client import DP_BACKENDS, ClientConfig
from fedkit.client_dp import (
    DPSGDBackend,
    TorchFuncBackend,
    dp_backend,
    dp_keys,
    dp_noise,
    per_example_grads,
)
from fedkit.simulation import SequentialEngine, VectorizedEngine
from fedkit.simulation.jobs import ClientJob
from fedkit.tasks import models
from fedkit.tasks.base import SupervisedTask
from fedkit.training import train_local
from privacy.budget import DPSGDAccountant
from privacy.dpsgd import DPSGD, OpacusBackend, opacus_per_example_grads

MODELS = {
    "mlp": functools.partial(models.mlp, 64, hidden=(16,), num_classes=10),
    "cnn": functools.partial(models.digits_cnn, (3, 4), num_classes=10),
    "logreg": functools.partial(models.logistic_regression, 64, 10),
}


def _task(kind: str, n: int, seed: int) -> SupervisedTask:
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.uniform(0, 1, size=(n, 1, 8, 8)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 10, size=n))
    return SupervisedTask(
        name=f"toy-{kind}",
        model_fn=MODELS[kind],
        client_x=(x,),
        client_y=(y,),
        test_x=x,
        test_y=y,
        num_classes=10,
    )


def _flat(blocks: tuple[torch.Tensor, ...], b: int) -> torch.Tensor:
    return torch.cat([g.reshape(b, -1) for g in blocks], dim=1)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(sorted(MODELS)), st.integers(1, 12), st.integers(0, 10**6))
def test_per_example_gradients_agree(kind, batch, seed):
    task = _task(kind, batch, seed)
    params = task.init(fedkit.key(seed))
    x, y = task.client_x[0], task.client_y[0]
    ours, _ = per_example_grads(task, params, x, y)
    ref = opacus_per_example_grads(task, params, x, y)
    assert ref.shape == (batch, params.numel())
    torch.testing.assert_close(_flat(ours, batch), ref, rtol=1e-4, atol=1e-6)


@settings(max_examples=12, deadline=None)
@given(
    st.sampled_from(sorted(MODELS)),
    st.integers(1, 12),
    st.floats(0.01, 5.0),
    st.integers(0, 10**6),
)
def test_clipped_sums_and_losses_agree_with_noise_off(kind, batch, c, seed):
    task = _task(kind, batch, seed)
    params = task.init(fedkit.key(seed))
    x, y = task.client_x[0], task.client_y[0]
    wb = (torch.rand(batch, generator=torch.Generator().manual_seed(seed)) < 0.7).float()
    fast_sum, fast_loss = TorchFuncBackend().bind(task, c)(params, x, y, wb)
    ref_sum, ref_loss = OpacusBackend().bind(task, c)(params, x, y, wb)
    # Opacus clips by C / (‖g‖ + 1e-6), torch.func by C / max(‖g‖, C)
    torch.testing.assert_close(ref_sum, fast_sum, rtol=1e-4, atol=1e-5 * c)
    torch.testing.assert_close(ref_loss, fast_loss, rtol=1e-5, atol=1e-6)
    assert float(ref_sum.norm()) <= c * float(wb.sum()) * (1 + 1e-5) + 1e-6


def test_the_opacus_backend_leaves_the_task_module_alone_and_is_repeatable():
    task = _task("cnn", 9, 3)
    before = {n: p.detach().clone() for n, p in task.module.named_parameters()}
    bound = OpacusBackend().bind(task, 0.5)
    ones = torch.ones(9)
    a = bound(task.init(fedkit.key(1)), task.client_x[0], task.client_y[0], ones)
    bound(task.init(fedkit.key(2)), task.client_x[0], task.client_y[0], ones)
    again = bound(task.init(fedkit.key(1)), task.client_x[0], task.client_y[0], ones)
    assert torch.equal(a[0], again[0]) and torch.equal(a[1], again[1])
    for n, p in task.module.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None and not hasattr(p, "grad_sample")


def _one_step(task, setting, key):
    cfg = ClientConfig(steps=1, lr=1.0, dp_sgd=setting)
    x, y = task.client_x[0], task.client_y[0]
    with torch.no_grad():
        update, _, _ = train_local(task, task.init(fedkit.key(0)), x, y, 1, key, cfg)
    return update


@pytest.mark.parametrize("backend", DP_BACKENDS)
def test_noise_std_is_z_c_over_the_expected_batch(backend):
    z, c, b, n = 1.3, 0.7, 8, 40
    task = _task("mlp", n, 5)
    quiet, noisy = DPSGD(c, 0.0, b, backend=backend), DPSGD(c, z, b, backend=backend)
    root = fedkit.key(17)
    draws = torch.cat(
        [
            # lr 1, one step: update = −(Σ clip(g) + noise) / (q·n); the clean part cancels
            (_one_step(task, quiet, k) - _one_step(task, noisy, k)).to(torch.float64)
            for k in (fedkit.fold_in(root, i) for i in range(8))
        ]
    )
    sigma = z * c / noisy.expected_batch_size(n)
    assert noisy.expected_batch_size(n) == pytest.approx(b)
    m = draws.numel()
    # Σ x²/σ² ~ χ²(m): fails by chance with probability 1e-6
    lo, hi = stats.chi2.ppf([5e-7, 1 - 5e-7], m)
    assert lo <= float((draws / sigma).pow(2).sum()) <= hi
    assert abs(float(draws.mean())) <= 5.0 * sigma / math.sqrt(m)  # 5σ: p ≈ 6e-7


def test_both_backends_add_the_same_keyed_noise_bits():
    task = _task("cnn", 30, 6)
    key = fedkit.key(4)
    noisy = {b: _one_step(task, DPSGD(0.5, 2.0, 6, backend=b), key) for b in DP_BACKENDS}
    clean = {b: _one_step(task, DPSGD(0.5, 0.0, 6, backend=b), key) for b in DP_BACKENDS}
    setting = DPSGD(0.5, 2.0, 6)
    noise = dp_noise(setting, dp_keys(key)[1], 0, task.init(fedkit.key(0)))
    for b in DP_BACKENDS:
        torch.testing.assert_close(noisy[b] - clean[b], -noise / 6.0, rtol=1e-4, atol=1e-6)
    # what differs between the backends is the clipped sum only, never the noise
    torch.testing.assert_close(
        noisy["opacus"] - noisy["torch.func"],
        clean["opacus"] - clean["torch.func"],
        atol=1e-6,
        rtol=0,
    )


def _run(task, backend, engine, z):
    cfg = ClientConfig(epochs=1, lr=0.3, momentum=0.5, dp_sgd=DPSGD(1.0, z, 16, backend=backend))
    accountant = DPSGDAccountant(delta=1e-5) if z > 0 else None
    strategy = fedkit.Strategy(
        client=cfg, server=Mean(), clients_per_round=3, accountant=accountant
    )
    return fedkit.simulate(task, strategy, rounds=2, key=7, engine=engine, progress=False)


@pytest.mark.parametrize("z", [0.0, 1.1])
def test_a_digits_run_with_opacus_in_both_engines_matches_torch_func(z):
    # The MLP: a CNN's max-pool and ReLU kinks turn the backends' 1e-7 rounding gaps into
    # 1e-3 gaps after a few dozen steps (a kink crossed; the true gradient jumps there).
    task = fedkit.tasks.digits(3, key=0, model="mlp")
    runs = {(b, e): _run(task, b, e, z) for b in DP_BACKENDS for e in ("sequential", "vectorized")}
    assert runs["opacus", "vectorized"].record["run"]["engine_used"] == "vectorized"
    # the vectorised engine trains Opacus clients one by one with the sequential engine's loop
    assert torch.equal(
        runs["opacus", "sequential"].final_params, runs["opacus", "vectorized"].final_params
    )
    ref = runs["torch.func", "sequential"]
    for h in runs.values():
        torch.testing.assert_close(h.final_params, ref.final_params, rtol=1e-5, atol=1e-6)
        for got, want in zip(h.metrics, ref.metrics, strict=True):
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-5)
            if z > 0:  # the accountant does not depend on the backend or the engine
                assert got["epsilon"] == want["epsilon"] and math.isfinite(got["epsilon"])
        if z > 0:
            assert h.record["privacy_budget"]["epsilon"] == ref.record["privacy_budget"]["epsilon"]
    if z == 0:
        assert ref.metrics[-1]["test_accuracy"] > 0.5  # it trained


@attrs.frozen
class _Setting:
    max_grad_norm: float = 1.0
    noise_multiplier: float = 1.0
    batch_size: int = 4
    backend: str = "torch.func"

    def sample_rate(self, n: int) -> float:
        return min(1.0, self.batch_size / n)


@attrs.frozen
class _BadBackend(_Setting):
    def grad_backend(self):
        return "not a backend"


def test_client_config_accepts_opacus_and_rejects_unknown_backends():
    cfg = ClientConfig(dp_sgd=DPSGD(1.0, 1.0, 4, backend="opacus"))
    assert isinstance(dp_backend(cfg.dp_sgd), OpacusBackend)
    assert isinstance(dp_backend(DPSGD(1.0, 1.0, 4)), TorchFuncBackend)
    assert isinstance(dp_backend(_Setting()), TorchFuncBackend)  # e.g. a wire DPSGDConfig
    assert all(isinstance(b, DPSGDBackend) for b in (OpacusBackend(), TorchFuncBackend()))
    assert not OpacusBackend.vmappable and TorchFuncBackend.vmappable
    with pytest.raises(ValueError, match=r"dp_sgd\.backend must be one of .*'jax'"):
        ClientConfig(dp_sgd=_Setting(backend="jax"))
    with pytest.raises(ValueError, match=r"backend='opacus' needs .*grad_backend"):
        ClientConfig(dp_sgd=_Setting(backend="opacus"))
    with pytest.raises(ValueError, match="backend must be one of"):
        DPSGD(1.0, 1.0, 4, backend="jax")
    with pytest.raises(TypeError, match="DPSGDBackend"):
        dp_backend(_BadBackend())


def test_opacus_backend_refuses_a_task_that_does_not_apply_its_module():
    class OwnApply(SupervisedTask):
        def apply(self, flat, x):
            return super().apply(flat, x)

    base = _task("mlp", 4, 0)
    task = OwnApply(
        name="own",
        model_fn=MODELS["mlp"],
        client_x=base.client_x,
        client_y=base.client_y,
        test_x=base.test_x,
        test_y=base.test_y,
        num_classes=10,
    )
    with pytest.raises(ValueError, match="applies its own module"):
        OpacusBackend().bind(task, 1.0)
    job = ClientJob(client=0, work=1, key=fedkit.key(0), x=task.client_x[0], y=task.client_y[0])
    cfg = ClientConfig(steps=1, dp_sgd=DPSGD(1.0, 1.0, 2, backend="opacus"))
    for engine in (SequentialEngine(), VectorizedEngine()):
        with pytest.raises(ValueError, match=r"backend='torch\.func'"):
            engine.train(task, task.init(fedkit.key(0)), [job], cfg)
