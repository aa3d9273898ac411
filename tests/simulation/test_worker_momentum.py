"""Worker momentum (Karimireddy et al. 2021): what clients send, kept for every client
between rounds, equal in both engines, and saved in checkpoints."""

from __future__ import annotations

import attrs
import pytest
import torch
from faults_for_tests import PowerCut
from helpers import strategy, tiny_task
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
from fedkit.run.client_state import ClientStates, apply_worker_momentum


@pytest.fixture(scope="module")
def task():
    return tiny_task()


def momentum_strategy(beta: float, **kw):
    base = strategy(lr=0.1, **kw)
    return attrs.evolve(base, client=attrs.evolve(base.client, worker_momentum=beta))


@settings(max_examples=40, deadline=None)
@given(
    beta=st.floats(0.0, 0.99),
    trained=st.lists(st.booleans(), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_a_client_that_trained_sends_and_keeps_the_mix(beta, trained, seed):
    m = len(trained)
    k = fedkit.key(seed)
    updates = fedkit.core.keys.normal(k, (m, 4), dtype=torch.float64)
    previous = fedkit.core.keys.normal(fedkit.fold_in(k, 1), (m, 4), dtype=torch.float64)
    mask = torch.tensor(trained)
    u0, p0 = updates.clone(), previous.clone()
    sent, kept = apply_worker_momentum(updates, previous, mask, beta)
    mix = beta * previous + (1 - beta) * updates
    torch.testing.assert_close(sent[mask], mix[mask])
    torch.testing.assert_close(kept[mask], mix[mask])
    assert torch.equal(kept[~mask], previous[~mask])  # a dropped client keeps its momentum
    assert torch.equal(sent[~mask], updates[~mask])
    assert torch.equal(updates, u0) and torch.equal(previous, p0)


def test_client_states_never_change_in_place():
    states = ClientStates()
    a = states.with_rows(torch.tensor([2]), torch.ones(1, 3), num_clients=4)
    b = a.with_rows(torch.tensor([0]), torch.full((1, 3), 2.0), num_clients=4)
    assert states.momentum is None
    assert torch.equal(a.momentum[0], torch.zeros(3)) and torch.equal(
        b.momentum[0], torch.full((3,), 2.0)
    )
    assert torch.equal(b.momentum[2], torch.ones(3))
    assert torch.equal(a.momentum_rows(torch.tensor([2, 1]), 4, torch.zeros(3))[0], torch.ones(3))


def test_the_server_receives_each_clients_momentum_over_rounds(task):
    """Round by round, replay the clients' updates by hand with β and a plain mean: the
    global model must match what the run produced (the momenta of clients that sat out a
    round persist until they are sampled again)."""
    beta = 0.8
    strat = attrs.evolve(momentum_strategy(beta), clients_per_round=3)
    hist = fedkit.simulate(task, strat, rounds=4, key=5, engine="sequential", progress=False)
    params = task.init(fedkit.run.plan.RunKeys.of(fedkit.key(5)).init)
    momentum = torch.zeros(task.num_clients, params.numel())
    keys = fedkit.run.plan.RunKeys.of(fedkit.key(5))
    state = strat.init(params)
    for r in range(1, 5):
        plan = fedkit.run.plan.plan_round(
            strat, state, task.num_clients, torch.zeros(0, dtype=torch.int64), keys
        )
        rows, weights = [], []
        for c in plan.clients.tolist():
            update, n, _ = task.train_client(
                state.params, c, strat.client, strat.client.work, plan.keys.client(c)
            )
            momentum[c] = beta * momentum[c] + (1 - beta) * update
            rows.append(momentum[c])
            weights.append(float(n))
        w = torch.tensor(weights)
        step = (torch.stack(rows) * (w / w.sum())[:, None]).sum(0)
        state = fedkit.ServerState(
            round=r, params=state.params + step, chain_state=state.chain_state
        )
    torch.testing.assert_close(hist.final_params, state.params, rtol=1e-5, atol=1e-6)
    plain = fedkit.simulate(
        task,
        attrs.evolve(strat, client=attrs.evolve(strat.client, worker_momentum=0.0)),
        rounds=4,
        key=5,
        engine="sequential",
        progress=False,
    )
    assert not torch.allclose(plain.final_params, hist.final_params)


def test_both_engines_agree(task):
    strat = attrs.evolve(momentum_strategy(0.9), clients_per_round=4)
    a = fedkit.simulate(task, strat, rounds=3, key=1, engine="sequential", progress=False)
    b = fedkit.simulate(task, strat, rounds=3, key=1, engine="vectorized", progress=False)
    torch.testing.assert_close(a.final_params, b.final_params, rtol=1e-5, atol=1e-6)


def test_resume_restores_every_clients_momentum(task, tmp_path):
    strat = attrs.evolve(momentum_strategy(0.9), clients_per_round=3)
    run = dict(key=3, engine="sequential", progress=False, rounds=5)
    straight = fedkit.simulate(task, strat, **run)
    with pytest.raises(RuntimeError, match="power cut"):
        fedkit.simulate(task, strat, checkpoint_dir=tmp_path, faults=PowerCut(at=4), **run)
    resumed = fedkit.simulate(task, strat, checkpoint_dir=tmp_path, resume=True, **run)
    assert resumed.record["run"]["resumed_from"] == 3
    assert torch.equal(resumed.final_params, straight.final_params)


def test_worker_momentum_must_lie_in_0_1():
    with pytest.raises(ValueError, match="worker_momentum"):
        fedkit.ClientConfig(worker_momentum=1.0)
    with pytest.raises(ValueError, match="worker_momentum"):
        fedkit.ClientConfig(worker_momentum=-0.1)
