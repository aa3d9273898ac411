"""Client DP-SGD: the torch.func fast path against the real Opacus, clipping, noise."""

from __future__ import annotations

import functools
import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import keys
from torch import nn

import fedkit
from fedkit.tasks.base import keyed_init
from privacy.dpsgd import (
    DPSGD,
    clipped_grad_sum,
    clipped_grad_sum_of,
    dpsgd_gradient,
    noisy_grad,
    opacus_clipped_grad_sum,
    opacus_noisy_grad,
    per_sample_grads,
    per_sample_norms,
    poisson_batch,
    poisson_mask,
    privatize,
)

loss_fn = nn.functional.cross_entropy


def small_mlp() -> nn.Module:
    return nn.Sequential(
        OrderedDict([("fc1", nn.Linear(6, 8)), ("act", nn.Tanh()), ("out", nn.Linear(8, 3))])
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            [
                ("conv", nn.Conv2d(1, 3, 3, padding=1)),
                ("act", nn.ReLU()),
                ("pool", nn.MaxPool2d(2)),
                ("flat", nn.Flatten()),
                ("out", nn.Linear(3 * 4 * 4, 4)),
            ]
        )
    )


def _setup(kind: str, batch: int, seed: int):
    model = small_mlp() if kind == "mlp" else small_cnn()
    params = {n: t.to(torch.float64) for n, t in keyed_init(model, fedkit.key(seed)).items()}
    model = model.to(torch.float64)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n])
    rng = np.random.default_rng(seed)
    shape = (batch, 6) if kind == "mlp" else (batch, 1, 8, 8)
    x = torch.as_tensor(rng.normal(0, 2, size=shape))
    y = torch.as_tensor(rng.integers(0, 3, size=batch))
    return model, params, x, y


@settings(max_examples=6)
@given(
    st.sampled_from(["mlp", "cnn"]), st.integers(1, 12), st.floats(0.01, 5.0), st.integers(0, 10**6)
)
def test_fast_path_equals_opacus(kind, batch, c, seed):
    model, params, x, y = _setup(kind, batch, seed)
    fast = clipped_grad_sum(model, params, x, y, loss_fn=loss_fn, max_grad_norm=c)
    ref = opacus_clipped_grad_sum(model, x, y, loss_fn=loss_fn, max_grad_norm=c)
    assert fast.keys() == ref.keys()
    for name in fast:
        # Opacus divides by ‖g‖ + 1e-6, the fast path by ‖g‖: relative gap ≤ 1e-6/‖g‖
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-5, atol=1e-6 * c * batch)


def test_fast_path_equals_opacus_on_flat_parameters_and_leaves_the_model_alone():
    model, params, x, y = _setup("cnn", 9, 3)
    flat, spec = fedkit.flatten(params)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    fast = clipped_grad_sum(model, flat, x, y, loss_fn=loss_fn, max_grad_norm=0.5, spec=spec)
    ref = opacus_clipped_grad_sum(
        model, x, y, loss_fn=loss_fn, max_grad_norm=0.5, params=flat, spec=spec
    )
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-8)
    assert fast.shape == (spec.size,)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]) and p.grad is None and not hasattr(p, "grad_sample")


@settings(max_examples=8)
@given(st.integers(1, 10), st.floats(0.01, 3.0), st.integers(0, 10**6))
def test_every_per_sample_gradient_is_clipped_jointly(batch, c, seed):
    model, params, x, y = _setup("mlp", batch, seed)
    flat, spec = fedkit.flatten(params)
    grads = per_sample_grads(model, flat, x, y, loss_fn=loss_fn, spec=spec)
    by_name = per_sample_grads(model, params, x, y, loss_fn=loss_fn)
    norms = per_sample_norms(grads)
    torch.testing.assert_close(norms, per_sample_norms(by_name))  # one joint norm
    total = clipped_grad_sum(model, flat, x, y, loss_fn=loss_fn, max_grad_norm=c, spec=spec)
    assert float(torch.linalg.vector_norm(total)) <= batch * c * (1 + 1e-9)
    # each example contributes g · min(1, C/‖g‖)
    expected = (grads * torch.clamp(c / norms, max=1.0)[:, None]).sum(0)
    torch.testing.assert_close(total, expected)


def test_mask_equals_selecting_the_examples():
    model, params, x, y = _setup("cnn", 8, 1)
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    masked = clipped_grad_sum(model, params, x, y, mask, loss_fn=loss_fn, max_grad_norm=0.3)
    subset = clipped_grad_sum(model, params, x[mask], y[mask], loss_fn=loss_fn, max_grad_norm=0.3)
    for n in masked:
        torch.testing.assert_close(masked[n], subset[n])
    empty = clipped_grad_sum(model, params, x[:0], y[:0], loss_fn=loss_fn, max_grad_norm=0.3)
    assert all(torch.equal(v, torch.zeros_like(params[n])) for n, v in empty.items())


def test_runs_under_an_outer_vmap_over_clients():
    model, params, _, _ = _setup("mlp", 1, 0)
    flat, spec = fedkit.flatten(params)
    rng = np.random.default_rng(5)
    stacked = torch.stack([flat, 0.5 * flat, flat + 0.1])
    xs = torch.as_tensor(rng.normal(size=(3, 7, 6)))
    ys = torch.as_tensor(rng.integers(0, 3, size=(3, 7)))
    masks = torch.stack([poisson_mask(fedkit.key(i), 7, 0.5) for i in range(3)])
    f = functools.partial(clipped_grad_sum, model, loss_fn=loss_fn, max_grad_norm=0.4, spec=spec)
    together = torch.func.vmap(f)(stacked, xs, ys, masks)
    one_by_one = torch.stack([f(stacked[i], xs[i], ys[i], masks[i]) for i in range(3)])
    torch.testing.assert_close(together, one_by_one)


@pytest.mark.parametrize(("z", "c", "b"), [(1.0, 1.0, 32.0), (0.6, 2.0, 10.0)])
def test_privatize_noise_is_calibrated(z, c, b):
    zero = torch.zeros(1000, dtype=torch.float64)
    root = fedkit.key(11)
    draws = torch.cat(
        [
            privatize(
                zero,
                noise_multiplier=z,
                max_grad_norm=c,
                expected_batch_size=b,
                key=fedkit.fold_in(root, i),
            )
            for i in range(100)
        ]
    )
    assert abs(float(draws.std()) / (z * c / b) - 1) < 0.02
    assert abs(float(draws.mean())) < 4 * (z * c / b) / math.sqrt(draws.numel())
    same = privatize(
        {"a": zero}, noise_multiplier=z, max_grad_norm=c, expected_batch_size=b, key=root
    )
    assert torch.equal(
        same["a"],
        privatize(
            {"a": zero}, noise_multiplier=z, max_grad_norm=c, expected_batch_size=b, key=root
        )["a"],
    )


def test_opacus_noise_is_calibrated_and_keyed():
    model, _params, x, y = _setup("mlp", 4, 2)
    kw = {
        "loss_fn": loss_fn,
        "max_grad_norm": 1.0,
        "noise_multiplier": 2.0,
        "expected_batch_size": 4.0,
    }
    clean = opacus_clipped_grad_sum(model, x, y, loss_fn=loss_fn, max_grad_norm=1.0)
    a = opacus_noisy_grad(model, x, y, key=fedkit.key(0), **kw)
    assert all(
        torch.equal(a[n], v)
        for n, v in opacus_noisy_grad(model, x, y, key=fedkit.key(0), **kw).items()
    )
    resid = torch.cat(
        [
            torch.cat([(g[n] * 4.0 - clean[n]).reshape(-1) for n in g])
            for g in (opacus_noisy_grad(model, x, y, key=fedkit.key(i), **kw) for i in range(40))
        ]
    )
    assert abs(float(resid.std()) / 2.0 - 1) < 0.05  # 40 × 59 draws of N(0, (zC)²)


@given(keys, st.integers(0, 400), st.floats(0.0, 1.0))
def test_poisson_sampling(k, n, q):
    idx = poisson_batch(k, n, q)
    assert torch.equal(idx, torch.nonzero(poisson_mask(k, n, q)).flatten())
    assert idx.dtype == torch.int64 and torch.all(idx[1:] > idx[:-1])
    if q == 0.0:
        assert idx.numel() == 0
    if q == 1.0:
        assert idx.numel() == n


def test_poisson_batch_size_has_mean_qn():
    sizes = [poisson_batch(fedkit.key(i), 1000, 0.05).numel() for i in range(200)]
    assert abs(np.mean(sizes) - 50) < 4 * math.sqrt(1000 * 0.05 * 0.95 / 200)


def test_dpsgd_config_and_both_backends_agree_without_noise():
    cfg = DPSGD(max_grad_norm=0.5, noise_multiplier=0.0, batch_size=4)
    assert cfg.sample_rate(20) == 0.2 and cfg.expected_batch_size(20) == pytest.approx(4.0)
    assert cfg.steps_per_epoch(21) == 6
    assert cfg.event(20, 6).as_tuple() == (0.0, 0.2, 6)
    model, params, x, y = _setup("cnn", 20, 4)
    flat, spec = fedkit.flatten(params)
    k = fedkit.key(9)
    fast = dpsgd_gradient(cfg, model, flat, x, y, loss_fn=loss_fn, key=k, spec=spec)
    slow = dpsgd_gradient(
        DPSGD(0.5, 0.0, 4, backend="opacus"), model, flat, x, y, loss_fn=loss_fn, key=k, spec=spec
    )
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-8)
    noisy = noisy_grad(
        model,
        flat,
        x,
        y,
        loss_fn=loss_fn,
        max_grad_norm=0.5,
        noise_multiplier=1.0,
        expected_batch_size=4.0,
        key=k,
        spec=spec,
    )
    assert noisy.shape == flat.shape
    with pytest.raises(ValueError, match="backend"):
        DPSGD(1.0, 1.0, 4, backend="jax")
    with pytest.raises(ValueError, match="ParamSpec"):
        clipped_grad_sum(model, flat, x, y, loss_fn=loss_fn, max_grad_norm=1.0)


def test_generic_loss_form_matches_a_fedkit_task():
    from fedkit.tasks.base import SupervisedTask

    rng = np.random.default_rng(8)
    x = torch.as_tensor(rng.normal(size=(10, 6)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, size=10))
    task = SupervisedTask(
        name="toy",
        model_fn=small_mlp,
        client_x=(x,),
        client_y=(y,),
        test_x=x,
        test_y=y,
        num_classes=3,
    )
    flat = task.init(fedkit.key(0))
    mask = poisson_mask(fedkit.key(1), 10, 0.5)

    def batch_loss(p, xb, yb):
        return task.loss(task.apply(p, xb), yb)

    generic = clipped_grad_sum_of(batch_loss, flat, x, y, mask, max_grad_norm=0.2)
    direct = clipped_grad_sum(
        task.module, flat, x, y, mask, loss_fn=loss_fn, max_grad_norm=0.2, spec=task.spec
    )
    torch.testing.assert_close(generic, direct)


def test_privatize_divides_each_client_row_by_its_expected_batch():
    sums = torch.ones(3, 4, dtype=torch.float64)
    b = torch.tensor([1.0, 2.0, 4.0])
    out = privatize(
        sums, noise_multiplier=0.0, max_grad_norm=1.0, expected_batch_size=b, key=fedkit.key(0)
    )
    torch.testing.assert_close(out, sums / b[:, None].to(sums.dtype))
    with pytest.raises(ValueError, match="stack of that many rows"):
        privatize(
            torch.ones(4),
            noise_multiplier=0.0,
            max_grad_norm=1.0,
            expected_batch_size=b,
            key=fedkit.key(0),
        )
