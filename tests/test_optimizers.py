"""Server optimizers: kernels, components, state handling, agreement with Flower."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fedkit
from fedkit.optimizers import (
    AdaptiveState,
    FedAdagrad,
    FedAdam,
    FedAvgM,
    FedYogi,
    MomentumState,
    ServerLR,
    adagrad_step,
    adam_step,
    adaptive_init,
    momentum_init,
    momentum_step,
    server_lr_step,
    yogi_step,
)

seeds = st.integers(0, 2**31 - 1)
dims = st.integers(1, 16)


def deltas(seed: int, d: int, rounds: int = 1, dtype=torch.float64) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    return [torch.as_tensor(rng.normal(0.0, 1.0, size=d), dtype=dtype) for _ in range(rounds)]


ALL = [
    ServerLR(0.5),
    FedAvgM(lr=0.7, momentum=0.9),
    FedAdam(lr=0.1, bias_correction=True),
    FedYogi(lr=0.05),
    FedAdagrad(lr=0.1, beta1=0.5),
]


# ---------------------------------------------------------------- exact, hand-computed values


def test_server_lr_scales():
    step, state = server_lr_step(torch.tensor([1.0, -2.0, 4.0]), lr=0.5)
    assert torch.equal(step, torch.tensor([0.5, -1.0, 2.0]))
    assert state == ()


def test_fedavgm_by_hand():
    state = momentum_init(2, dtype=torch.float64)
    step, state = momentum_step(
        torch.tensor([1.0, 2.0], dtype=torch.float64), state, lr=0.5, momentum=0.5
    )
    assert torch.equal(step, torch.tensor([0.5, 1.0], dtype=torch.float64))
    step, state = momentum_step(
        torch.tensor([3.0, 0.0], dtype=torch.float64), state, lr=0.5, momentum=0.5
    )
    # m = 0.5 * [1, 2] + [3, 0] = [3.5, 1]
    assert torch.equal(state.momentum, torch.tensor([3.5, 1.0], dtype=torch.float64))
    assert torch.equal(step, torch.tensor([1.75, 0.5], dtype=torch.float64))


def test_adagrad_two_steps_by_hand():
    state = adaptive_init(1, dtype=torch.float64)
    step, state = adagrad_step(
        torch.tensor([2.0], dtype=torch.float64), state, lr=1.0, beta1=0.0, eps=0.0
    )
    assert torch.equal(step, torch.tensor([1.0], dtype=torch.float64))  # 2 / sqrt(4)
    step, state = adagrad_step(
        torch.tensor([0.0], dtype=torch.float64), state, lr=1.0, beta1=0.0, eps=0.0
    )
    assert torch.equal(step, torch.tensor([0.0], dtype=torch.float64))
    assert torch.equal(state.v, torch.tensor([4.0], dtype=torch.float64))
    assert int(state.count) == 2


# ---------------------------------------------------------------- properties


@given(seed=seeds, d=dims, lr=st.floats(1e-3, 10.0))
def test_server_lr_is_lr_times_delta(seed, d, lr):
    (delta,) = deltas(seed, d)
    step, _, info = ServerLR(lr)(delta, None, (), None)
    torch.testing.assert_close(step, lr * delta, rtol=0, atol=0)
    assert info == {}


@given(seed=seeds, d=dims, rounds=st.integers(1, 5))
def test_fedavgm_momentum_zero_lr_one_is_identity(seed, d, rounds):
    comp = FedAvgM(lr=1.0, momentum=0.0)
    state = comp.init(d)
    for delta in deltas(seed, d, rounds):
        step, state, _ = comp(delta, None, state, None)
        assert torch.equal(step, delta)
        assert step is not delta


@given(
    seed=seeds,
    d=dims,
    beta1=st.floats(0.0, 0.99),
    beta2=st.floats(0.0, 0.999),
    eps=st.floats(1e-9, 1e-1),
    lr=st.floats(1e-3, 1.0),
)
def test_first_adam_step_closed_form(seed, d, beta1, beta2, eps, lr):
    (delta,) = deltas(seed, d)
    step, state = adam_step(delta, adaptive_init(d), lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    expected = lr * (1 - beta1) * delta / (np.sqrt(1 - beta2) * delta.abs() + eps)
    torch.testing.assert_close(step, expected, rtol=1e-12, atol=1e-15)
    # Yogi's first step from v = 0 is Adam's: v = (1 - β₂) Δ̄².
    ystep, ystate = yogi_step(delta, adaptive_init(d), lr=lr, beta1=beta1, beta2=beta2, eps=eps)
    torch.testing.assert_close(ystep, step, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(ystate.v, state.v, rtol=1e-12, atol=0)


@given(seed=seeds, d=dims, beta1=st.floats(0.0, 0.99), beta2=st.floats(0.0, 0.999))
def test_first_bias_corrected_adam_step_is_lr_times_sign(seed, d, beta1, beta2):
    # With bias correction and τ = 0, the first step is lr · Δ̄ / |Δ̄| (Kingma and Ba).
    (delta,) = deltas(seed, d)
    step, _ = adam_step(
        delta, adaptive_init(d), lr=0.3, beta1=beta1, beta2=beta2, eps=0.0, bias_correction=True
    )
    torch.testing.assert_close(step, 0.3 * torch.sign(delta), rtol=1e-9, atol=1e-12)


@given(seed=seeds, d=dims, rounds=st.integers(1, 6))
def test_adagrad_accumulates_squares_and_yogi_stays_nonnegative(seed, d, rounds):
    ds = deltas(seed, d, rounds)
    state = adaptive_init(d)
    ystate = adaptive_init(d)
    for delta in ds:
        _, state = adagrad_step(delta, state)
        _, ystate = yogi_step(delta, ystate)
        assert bool((ystate.v >= 0).all())
    torch.testing.assert_close(state.v, torch.stack(ds).square().sum(0), rtol=1e-12, atol=0)
    assert int(state.count) == rounds == int(ystate.count)


@pytest.mark.parametrize("comp", ALL, ids=lambda c: type(c).__name__)
@given(seed=seeds, d=dims, rounds=st.integers(2, 5))
def test_state_round_trips_and_calls_are_pure(comp, seed, d, rounds):
    ds = deltas(seed, d, rounds)
    state = comp.init(d)
    states = [state]
    steps = []
    for delta in ds:
        before = [t.clone() for t in _tensors(state)]
        kept = delta.clone()
        step, state, _ = comp(delta, None, state, None)
        # neither the aggregate nor the previous state was written to
        assert torch.equal(delta, kept)
        assert all(torch.equal(a, b) for a, b in zip(before, _tensors(states[-1]), strict=True))
        assert type(state) is type(states[-1])
        states.append(state)
        steps.append(step)
    # replaying any round from its saved state gives the same step and state bit for bit
    for t in range(rounds):
        step, state, _ = comp(ds[t], None, states[t], None)
        assert torch.equal(step, steps[t])
        assert all(
            torch.equal(a, b) for a, b in zip(_tensors(state), _tensors(states[t + 1]), strict=True)
        )


def _tensors(state) -> list[torch.Tensor]:
    return [t for t in state if isinstance(t, torch.Tensor)]


def test_state_follows_the_aggregate_dtype():
    comp = FedAdam()
    state = comp.init(3)
    assert state.m.dtype == torch.float32 and state.count.dtype == torch.int64
    step, state, _ = comp(torch.ones(3, dtype=torch.float64), None, state, None)
    assert step.dtype == state.m.dtype == state.v.dtype == torch.float64
    step, _, _ = comp(torch.ones(3, dtype=torch.float32), None, comp.init(3), None)
    assert step.dtype == torch.float32


def test_initial_accumulator():
    state = FedAdagrad(initial_accumulator=1e-6).init(4)
    assert torch.equal(state.v, torch.full((4,), 1e-6))
    with pytest.raises(ValueError, match="initial_accumulator"):
        FedYogi(initial_accumulator=-1.0).init(2)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: server_lr_step(torch.ones(2, 2), lr=1.0), r"shape \[d\]"),
        (lambda: server_lr_step(torch.ones(2, dtype=torch.int64), lr=1.0), "floating point"),
        (lambda: server_lr_step(torch.ones(2), lr=0.0), "lr"),
        (lambda: momentum_step(torch.ones(2), momentum_init(2), lr=1.0, momentum=1.5), "momentum"),
        (lambda: momentum_step(torch.ones(3), momentum_init(2), lr=1.0, momentum=0.5), "init"),
        (lambda: adam_step(torch.ones(2), adaptive_init(2), beta2=1.0), "beta2"),
        (lambda: yogi_step(torch.ones(2), adaptive_init(2), beta1=-0.1), "beta1"),
        (lambda: adagrad_step(torch.ones(2), adaptive_init(2), eps=-1.0), "eps"),
        (lambda: FedAdam(beta1=1.0), "beta1"),
        (lambda: FedAvgM(lr=-1.0), "lr"),
        (lambda: FedYogi(eps=-1e-3), "eps"),
    ],
)
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


# ---------------------------------------------------------------- inside a chain


class _WeightedMean(fedkit.Reducer):
    """Tiny local reducer (fallback when fedkit.aggregators.mean is not there)."""

    def __call__(self, updates, weights, state, key):
        return (weights[:, None] * updates).sum(0) / weights.sum(), state, {}


def _mean_reducer():
    try:
        from fedkit.aggregators.mean import Mean
    except ImportError:
        return _WeightedMean()
    return Mean()


def test_server_transforms_in_a_chain():
    from fedkit.filters import Clip, Sanitize

    d = 5
    comp = FedAvgM(lr=1.0, momentum=0.5)
    ch = fedkit.chain(Sanitize(), Clip(1.0), _mean_reducer(), comp)
    state = ch.init(d)
    assert isinstance(state[-1], MomentumState)
    rng = np.random.default_rng(0)
    m = torch.zeros(d, dtype=torch.float64)
    for _ in range(3):
        u = torch.as_tensor(rng.normal(0.0, 3.0, size=(4, d)))
        u[2, 1] = float("nan")
        w = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)
        step, state, info = ch(u, w, state, fedkit.key(0))
        keep = torch.tensor([True, True, False, True])
        clipped = u[keep] * torch.clamp(1.0 / u[keep].norm(dim=1, keepdim=True), max=1.0)
        mean = (w[keep, None] * clipped).sum(0) / w[keep].sum()
        m = 0.5 * m + mean
        torch.testing.assert_close(step, m, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(state[-1].momentum, m, rtol=1e-12, atol=1e-12)
        assert info["rejected"]["nonfinite"].tolist() == [False, False, True, False]
        assert info["accepted"].tolist() == [True, True, False, True]


# ---------------------------------------------------------------- agreement with Flower


def _flower_run(strategy, x0: np.ndarray, ds: list[np.ndarray]):
    """Drive a Flower strategy for len(ds) rounds with one client whose new weights are
    x + δ; yield (Δ as Flower sees it, Flower's new weights) per round."""
    from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

    x = x0
    for rnd, d in enumerate(ds, start=1):
        res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters([x + d]), 1, {})
        params, _ = strategy.aggregate_fit(rnd, [(None, res)], [])
        new = parameters_to_ndarrays(params)[0]
        yield (x + d) - x, new
        x = new


def _agree(strategy, comp, d, seed, rounds=4, state=None):
    from flwr.common import ndarrays_to_parameters

    rng = np.random.default_rng(seed)
    x0 = rng.normal(0.0, 1.0, size=d)
    ds = [rng.normal(0.0, 1.0, size=d) for _ in range(rounds)]
    strat = strategy(initial_parameters=ndarrays_to_parameters([x0]))
    x = torch.as_tensor(x0)
    state = comp.init(d) if state is None else state
    for seen, flower_x in _flower_run(strat, x0, ds):
        step, state, _ = comp(torch.as_tensor(seen), None, state, None)
        x = x + step
        np.testing.assert_allclose(x.numpy(), flower_x, rtol=1e-12, atol=1e-12)


@given(seed=seeds, d=st.integers(1, 8))
def test_fedavgm_agrees_with_flower(seed, d):
    from flwr.server.strategy import FedAvgM as FlowerFedAvgM

    def strategy(**kw):
        return FlowerFedAvgM(server_learning_rate=0.7, server_momentum=0.9, **kw)

    _agree(strategy, FedAvgM(lr=0.7, momentum=0.9), d, seed)


@given(seed=seeds, d=st.integers(1, 8))
def test_fedyogi_agrees_with_flower(seed, d):
    from flwr.server.strategy import FedYogi as FlowerFedYogi

    def strategy(**kw):
        return FlowerFedYogi(eta=0.03, beta_1=0.8, beta_2=0.95, tau=1e-3, **kw)

    _agree(strategy, FedYogi(lr=0.03, beta1=0.8, beta2=0.95, eps=1e-3), d, seed)


@given(seed=seeds, d=st.integers(1, 8))
def test_fedadagrad_agrees_with_flower_at_beta1_zero(seed, d):
    # Flower's FedAdagrad fixes β₁ = 0 (no server momentum); fedkit defaults to the
    # paper's β₁ = 0.9, so agreement needs beta1=0.
    from flwr.server.strategy import FedAdagrad as FlowerFedAdagrad

    def strategy(**kw):
        return FlowerFedAdagrad(eta=0.1, tau=1e-3, **kw)

    _agree(strategy, FedAdagrad(lr=0.1, beta1=0.0, eps=1e-3), d, seed)


@given(seed=seeds, d=st.integers(1, 8))
def test_fedadam_agrees_with_flower_one_step_ahead(seed, d):
    # Flower's FedAdam always bias-corrects, with exponent t = server_round + 1 (2 on the
    # first round). fedkit counts t = 1, 2, ...; starting its state at count = 1 reproduces
    # Flower exactly. (The documented difference: fedkit's first corrected step uses t = 1.)
    from flwr.server.strategy import FedAdam as FlowerFedAdam

    def strategy(**kw):
        return FlowerFedAdam(eta=0.1, beta_1=0.9, beta_2=0.99, tau=1e-9, **kw)

    comp = FedAdam(lr=0.1, beta1=0.9, beta2=0.99, eps=1e-9, bias_correction=True)
    start = comp.init(d)
    shifted = AdaptiveState(start.m, start.v, torch.ones((), dtype=torch.int64))
    _agree(strategy, comp, d, seed, state=shifted)


def test_fedadam_first_step_differs_from_flower_by_its_bias_correction():
    from flwr.common import ndarrays_to_parameters
    from flwr.server.strategy import FedAdam as FlowerFedAdam

    x0 = np.zeros(3)
    d = np.array([1.0, -2.0, 0.5])
    strat = FlowerFedAdam(initial_parameters=ndarrays_to_parameters([x0]), eta=0.1, tau=0.0)
    ((_, flower_x),) = list(_flower_run(strat, x0, [d]))
    step, _ = adam_step(torch.as_tensor(d), adaptive_init(3), lr=0.1, eps=0.0, bias_correction=True)
    # Flower's t = 2: step = 0.1 · √(1 − 0.99²)/(1 − 0.9²) · 0.1 Δ/(√0.01 |Δ|)
    flower_factor = np.sqrt(1 - 0.99**2) / (1 - 0.9**2) * 0.1 / np.sqrt(0.01)
    np.testing.assert_allclose(flower_x, 0.1 * flower_factor * np.sign(d), rtol=1e-12)
    np.testing.assert_allclose(step.numpy(), 0.1 * np.sign(d), rtol=1e-12)
