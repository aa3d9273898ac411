"""Local training kernels: batching rule, optimiser steps on flat tensors, FedProx term."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_task
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import fedkit
from fedkit.client import ClientConfig, batch_schedule, init_opt_state, local_step, num_steps
from fedkit.core.flat import unflatten


@given(
    n=st.integers(1, 30),
    batch=st.one_of(st.none(), st.integers(1, 40)),
    epochs=st.integers(1, 3),
    seed=st.integers(0, 2**20),
)
def test_every_epoch_visits_every_example_once(n, batch, epochs, seed):
    cfg = ClientConfig(epochs=epochs, batch_size=batch)
    steps = num_steps(n, epochs, cfg)
    width = n if batch is None else min(batch, n)
    per_epoch = math.ceil(n / width)
    assert steps == epochs * per_epoch
    index, mask = batch_schedule(n, steps, batch, True, fedkit.key(seed))
    assert index.shape == (steps, width)
    for e in range(epochs):
        rows, keep = (
            index[e * per_epoch : (e + 1) * per_epoch],
            mask[e * per_epoch : (e + 1) * per_epoch],
        )
        assert torch.equal(torch.sort(rows[keep]).values, torch.arange(n))
        assert bool(keep[:-1].all())  # only the epoch's last batch is short
        assert int(keep[-1].sum()) == n - (per_epoch - 1) * width


def test_steps_walk_through_consecutive_epochs():
    key = fedkit.key(3)
    index, mask = batch_schedule(5, 7, 2, True, key)
    orders = [fedkit.core.keys.permutation(fedkit.fold_in(key, e), 5) for e in range(3)]
    assert torch.equal(index[0], orders[0][:2]) and torch.equal(index[2][:1], orders[0][4:])
    assert torch.equal(index[3], orders[1][:2]) and torch.equal(index[6], orders[2][:2])
    assert mask.sum(1).tolist() == [2, 2, 1, 2, 2, 1, 2]
    same_key_again, _ = batch_schedule(5, 7, 2, True, key)
    assert torch.equal(index, same_key_again)
    unshuffled, _ = batch_schedule(5, 3, 2, False, key)
    assert unshuffled[:2].tolist() == [[0, 1], [2, 3]]


def _train_with_torch(task, flat, batches, make_opt):
    """Reference: the task's module trained by torch.optim on the same batches."""
    module = task.model_fn()
    module.load_state_dict({k: v.clone() for k, v in unflatten(flat.clone(), task.spec).items()})
    opt = make_opt(module.parameters())
    for xb, yb in batches:
        opt.zero_grad()
        nn.functional.cross_entropy(module(xb), yb).backward()
        opt.step()
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def _train_flat(task, cfg, flat, batches):
    state = init_opt_state(flat, cfg)
    p = flat
    for xb, yb in batches:
        p, state, _ = local_step(task, cfg, p, state, xb, yb, torch.ones(len(yb)), flat)
    return p


@pytest.mark.parametrize(
    ("cfg", "make_opt"),
    [
        (ClientConfig(lr=0.3), lambda ps: torch.optim.SGD(ps, lr=0.3)),
        (
            ClientConfig(lr=0.1, momentum=0.9, weight_decay=0.01),
            lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
        ),
        (
            ClientConfig(lr=0.05, optimizer="adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02),
            lambda ps: torch.optim.Adam(
                ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.02
            ),
        ),
    ],
    ids=["sgd", "sgd-momentum-wd", "adam-wd"],
)
def test_flat_optimisers_match_torch_optim(cfg, make_opt):
    task = tiny_task(seed=1)
    flat = task.init(fedkit.key(0))
    x, y = task.client_x[1], task.client_y[1]
    batches = [(x[i : i + 4], y[i : i + 4]) for i in range(0, 12, 4)] * 2
    ours = _train_flat(task, cfg, flat, batches)
    ref = _train_with_torch(task, flat, batches, make_opt)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_proximal_term_adds_mu_times_distance_to_the_anchor():
    task = tiny_task(seed=2)
    anchor = task.init(fedkit.key(0))
    start = anchor + 0.1 * fedkit.core.keys.normal(fedkit.key(1), anchor.shape)
    x, y = task.client_x[0], task.client_y[0]
    mu, lr = 0.7, 0.2
    cfg = ClientConfig(lr=lr, prox_mu=mu)
    ours, _, _ = local_step(task, cfg, start, (), x, y, torch.ones(len(y)), anchor)
    p = start.clone().requires_grad_()
    objective = (
        nn.functional.cross_entropy(task.apply(p, x), y) + mu / 2 * (p - anchor).pow(2).sum()
    )
    (grad,) = torch.autograd.grad(objective, p)
    torch.testing.assert_close(ours, start - lr * grad)
    assert not torch.equal(
        ours, local_step(task, ClientConfig(lr=lr), start, (), x, y, torch.ones(len(y)), anchor)[0]
    )


def test_zero_weight_padding_does_not_change_the_step():
    task = tiny_task(seed=3)
    flat = task.init(fedkit.key(0))
    x, y = task.client_x[1], task.client_y[1]
    cfg = ClientConfig(lr=0.5, momentum=0.5)
    real = local_step(task, cfg, flat, init_opt_state(flat, cfg), x[:3], y[:3], torch.ones(3), flat)
    w = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    padded = local_step(task, cfg, flat, init_opt_state(flat, cfg), x[:5], y[:5], w, flat)
    torch.testing.assert_close(real[0], padded[0])
    torch.testing.assert_close(real[2], padded[2])


def test_local_step_leaves_its_inputs_alone():
    task = tiny_task(seed=4)
    flat = task.init(fedkit.key(0))
    cfg = ClientConfig(optimizer="adam")
    state = init_opt_state(flat, cfg)
    copies = flat.clone(), tuple(s.clone() for s in state)
    local_step(task, cfg, flat, state, task.client_x[0], task.client_y[0], torch.ones(7), flat)
    assert torch.equal(flat, copies[0]) and all(torch.equal(a, b) for a, b in zip(state, copies[1]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be positive"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"lr": -1.0}, "lr must be positive"),
        ({"momentum": 1.0}, "momentum must be < 1"),
        ({"prox_mu": -0.1}, "prox_mu must be >= 0"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_bad_client_config_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClientConfig(**kwargs)
