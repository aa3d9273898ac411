"""DP-FTRL with tree aggregation: the mechanism (privacy.mechanisms.tree) and its
accounting (privacy.tree_accounting)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import keys

import fedkit
from fedkit.core.keys import fold_in, split
from fedkit.core.tree import decode, encode
from privacy.mechanisms import TreeNoise, TreeState, dp_fedavg, dp_ftrl, prefix_noise
from privacy.tree_accounting import (
    MinSeparation,
    TreeAccountant,
    TreeLedger,
    calibrate_ftrl,
    dp_accounting_tree_epsilon,
    ftrl_epsilon,
    gaussian_epsilon,
    min_separation_bound,
    sensitivity_squared,
    worst_sensitivity_squared,
)

restarts = st.one_of(st.none(), st.integers(1, 9))


def _run_tree(aggregates, noise, key, restart_every=None, clip=1.0, m=1.0):
    """Outputs and states of TreeNoise over the rows of ``aggregates`` (one per round)."""
    comp = TreeNoise(noise, clip, m, restart_every=restart_every)
    state = comp.init(aggregates.shape[1])
    outs, states = [], []
    for t, agg in enumerate(aggregates, start=1):
        out, state, _ = comp(agg, None, state, fold_in(key, t))
        outs.append(out)
        states.append(state)
    return outs, states


# --- the mechanism -------------------------------------------------------------------


def test_prefix_noise_variance_is_popcount_times_sigma_squared():
    d, rounds, sigma = 200_000, 8, 0.5
    outs, _ = _run_tree(torch.zeros(rounds, d, dtype=torch.float64), sigma, fedkit.key(3))
    prefixes = torch.cumsum(torch.stack(outs), dim=0)  # N_t, one row per round
    for t in range(1, rounds + 1):
        var = float(prefixes[t - 1].var())
        expected = bin(t).count("1") * sigma**2
        # sample variance of 2e5 Gaussians: relative sd sqrt(2/d) = 0.32 %; 3 % is ~10 sd
        assert var == pytest.approx(expected, rel=0.03), (t, var, expected)
    # prefixes share exactly their common nodes: N_3 = [1,2]+[3], N_2 = [1,2], N_4 = [1..4]
    cov = lambda a, b: float((prefixes[a - 1] * prefixes[b - 1]).mean())  # noqa: E731
    assert cov(3, 2) == pytest.approx(sigma**2, rel=0.03)
    assert abs(cov(4, 3)) < 0.03 * sigma**2
    assert cov(7, 6) == pytest.approx(2 * sigma**2, rel=0.03)


@settings(max_examples=40, deadline=None)
@given(
    rounds=st.integers(1, 20),
    d=st.integers(1, 6),
    restart=restarts,
    key=keys,
    seed=st.integers(0, 2**31),
)
def test_model_equals_prefix_sum_plus_tree_noise(rounds, d, restart, key, seed):
    g = torch.Generator().manual_seed(seed)
    aggs = torch.randn(rounds, d, generator=g, dtype=torch.float64)
    outs, states = _run_tree(aggs, 0.7, key, restart_every=restart)
    model = torch.zeros(d, dtype=torch.float64)
    frozen = torch.zeros(d, dtype=torch.float64)  # noise of the finished trees
    for t in range(rounds):
        model = model + outs[t]
        if t > 0 and states[t].tree != states[t - 1].tree:
            frozen = frozen + prefix_noise(states[t - 1], d)
        expected = aggs[: t + 1].sum(0) + frozen + prefix_noise(states[t], d)
        torch.testing.assert_close(model, expected, rtol=0, atol=1e-12)
        step = t + 1 if restart is None else t % restart + 1
        assert states[t].step == step
        assert len(states[t].noises) == bin(step).count("1")


def test_noise_zero_is_bit_identical_to_dp_fedavg_without_noise():
    task = fedkit.tasks.digits(6, key=0, hidden=())
    client = fedkit.ClientConfig(epochs=1, batch_size=16, lr=0.3)
    runs = []
    for comps in (dp_ftrl(0.5, 0.0, 3), dp_fedavg(0.5, 0.0, 3)):
        strategy = fedkit.Strategy(client=client, server=fedkit.chain(*comps), clients_per_round=3)
        runs.append(fedkit.simulate(task, strategy, rounds=5, key=4, progress=False))
    assert torch.equal(runs[0].final_params, runs[1].final_params)


@settings(max_examples=20, deadline=None)
@given(key=keys, restart=restarts)
def test_deterministic_under_keys_and_inputs_untouched(key, restart):
    aggs = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    copy = aggs.clone()
    a, sa = _run_tree(aggs, 1.3, key, restart_every=restart)
    b, _ = _run_tree(aggs, 1.3, key, restart_every=restart)
    c, _ = _run_tree(aggs, 1.3, split(key)[0], restart_every=restart)
    assert torch.equal(aggs, copy)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[0], c[0])
    assert all(x.dtype == aggs.dtype for x in a)
    # a state is never changed by a later call
    snapshot = [n.clone() for n in sa[2].noises]
    TreeNoise(1.3, 1.0, 1.0, restart_every=restart)(aggs[0], None, sa[2], key)
    assert all(torch.equal(x, y) for x, y in zip(sa[2].noises, snapshot, strict=True))


def test_state_round_trips_through_checkpoint_encoding():
    _, states = _run_tree(torch.zeros(5, 3), 1.0, fedkit.key(0))
    skeleton, tensors = encode(states[-1])
    back = decode(skeleton, tensors)
    assert isinstance(back, TreeState) and back.step == 5
    assert all(torch.equal(x, y) for x, y in zip(back.noises, states[-1].noises, strict=True))


def test_chain_order_and_std():
    comps = dp_ftrl(2.0, 1.5, 4, restart_every=8)
    assert [type(c).__name__ for c in comps] == [
        "ClipUpdates",
        "UniformWeights",
        "FixedMean",
        "TreeNoise",
    ]
    assert comps[-1].std == pytest.approx(1.5 * 2.0 / 4)
    _, state, info = fedkit.chain(*comps)(torch.ones(3, 2), None, None, fedkit.key(0))
    assert info["3.TreeNoise.noise_std"] == pytest.approx(0.75) and state[-1].step == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"noise_multiplier": -1.0}, "noise_multiplier"),
        ({"clip_norm": 0.0}, "clip_norm"),
        ({"expected_clients": 0.0}, "expected_clients"),
        ({"restart_every": 0}, "restart_every"),
    ],
)
def test_bad_config_names_the_argument(kwargs, match):
    args = {"noise_multiplier": 1.0, "clip_norm": 1.0, "expected_clients": 2.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        TreeNoise(**args)


def test_bad_state_and_missing_key():
    comp = TreeNoise(1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="open noises"):
        comp(torch.zeros(2), None, TreeState(step=3, noises=(torch.zeros(2),)), fedkit.key(0))
    with pytest.raises(ValueError, match="key"):
        comp(torch.zeros(2), None, comp.init(2), None)


# --- sensitivity --------------------------------------------------------------------


def _released_blocks(length):
    """Brute force: the dyadic blocks of every prefix 1..length from its binary digits."""
    blocks = set()
    for t in range(1, length + 1):
        start = 0
        for h in reversed(range(t.bit_length())):
            if t >> h & 1:
                blocks.add((start + 1, start + (1 << h)))
                start += 1 << h
    return blocks


def _brute_sensitivity(rounds_in, rounds, restart):
    size = rounds if restart is None else restart
    total = 0
    for first in range(0, rounds, size):
        length = min(size, rounds - first)
        for lo, hi in _released_blocks(length):
            total += sum(1 for r in rounds_in if lo <= r - first <= hi) ** 2
    return total


@settings(max_examples=200, deadline=None)
@given(rounds=st.integers(1, 40), restart=restarts, data=st.data())
def test_sensitivity_matches_brute_force_over_prefix_decompositions(rounds, restart, data):
    rounds_in = data.draw(st.sets(st.integers(1, rounds)))
    assert sensitivity_squared(rounds_in, rounds, restart) == _brute_sensitivity(
        rounds_in, rounds, restart
    )


@pytest.mark.parametrize("length", range(1, 34))
def test_one_participation_worst_leaf_is_the_first_and_costs_the_depth(length):
    per_leaf = [sensitivity_squared([i], length) for i in range(1, length + 1)]
    assert max(per_leaf) == per_leaf[0] == math.ceil(math.log2(length + 1))
    assert worst_sensitivity_squared("once_per_tree", length) == per_leaf[0]


def test_every_round_sensitivity_sums_node_sizes_squared():
    # 8 rounds: nodes released are [1],[1,2],[3],[1..4],[5],[5,6],[7],[1..8]
    assert worst_sensitivity_squared("every_round", 8) == 4 * 1 + 2 * 4 + 16 + 64
    # restarting every round leaves one node per round: the Gaussian mechanism per round
    assert worst_sensitivity_squared("every_round", 8, restart_every=1) == 8


def test_cyclic_and_min_separation_against_brute_force():
    for rounds in range(1, 13):
        for b in range(1, rounds + 1):
            schedules = [
                [i + 1 for i in range(rounds) if mask >> i & 1] for mask in range(1, 1 << rounds)
            ]
            valid = [p for p in schedules if all(y - x >= b for x, y in itertools.pairwise(p))]
            worst = max(sensitivity_squared(p, rounds) for p in valid)
            cyclic = worst_sensitivity_squared(b, rounds)
            bound = min_separation_bound(rounds, MinSeparation(b))
            assert cyclic <= worst <= bound
            if b == 1:
                assert cyclic == worst == bound
    # a cyclic schedule is not the worst in general
    valid14 = [
        p
        for p in ([i + 1 for i in range(14) if mask >> i & 1] for mask in range(1, 1 << 14))
        if all(y - x >= 11 for x, y in itertools.pairwise(p))
    ]
    assert worst_sensitivity_squared(11, 14) < max(sensitivity_squared(p, 14) for p in valid14)


# --- ε ------------------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    z=st.floats(0.5, 20.0),
    length=st.integers(1, 300),
    trees=st.integers(1, 20),
)
def test_epsilon_agrees_with_dp_accountings_tree_event(z, length, trees):
    ours = ftrl_epsilon(
        z, length * trees, "once_per_tree", 1e-5, restart_every=length, accountant="rdp"
    )
    assert ours == pytest.approx(dp_accounting_tree_epsilon(z, length, trees, 1e-5), rel=1e-9)
    exact = ftrl_epsilon(z, length * trees, "once_per_tree", 1e-5, restart_every=length)
    assert exact <= ours * (1 + 1e-9)  # RDP's conversion is an upper bound


@pytest.mark.parametrize("z", [0.3, 1.0, 4.0])
def test_exact_and_pld_conversions_agree(z):
    assert gaussian_epsilon(z, 1e-5, "pld") == pytest.approx(gaussian_epsilon(z, 1e-5), rel=1e-3)


def test_restarting_every_round_is_the_gaussian_mechanism_composed():
    # T rounds, one node of sensitivity 1 each: mu = sqrt(T)/z-GDP
    z, rounds = 3.0, 25
    eps = ftrl_epsilon(z, rounds, "every_round", 1e-5, restart_every=1)
    assert eps == pytest.approx(gaussian_epsilon(z / 5.0, 1e-5))


@settings(max_examples=30, deadline=None)
@given(eps=st.floats(0.2, 20.0), rounds=st.integers(1, 64), restart=restarts)
def test_calibrate_inverts_epsilon(eps, rounds, restart):
    for pattern in ("every_round", "once_per_tree"):
        z = calibrate_ftrl(eps, rounds, pattern, 1e-5, restart_every=restart)
        got = ftrl_epsilon(z, rounds, pattern, 1e-5, restart_every=restart)
        assert got == pytest.approx(eps, rel=1e-6)


def test_bad_accounting_inputs_name_the_argument():
    with pytest.raises(ValueError, match="delta"):
        ftrl_epsilon(1.0, 4, "every_round", 0.0)
    with pytest.raises(ValueError, match="participation"):
        ftrl_epsilon(1.0, 4, "sometimes", 1e-5)
    with pytest.raises(ValueError, match="rounds"):
        ftrl_epsilon(1.0, 0, "every_round", 1e-5)
    with pytest.raises(ValueError, match=r"participation rounds.*\[1, 4\]"):
        sensitivity_squared([5], 4)
    with pytest.raises(ValueError, match="accountant"):
        TreeAccountant(1.0, accountant="moments")
    with pytest.raises(ValueError, match="target_epsilon"):
        TreeAccountant(1.0, target_epsilon=-1.0)


# --- the accountant -------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    rounds=st.integers(1, 30),
    clients=st.integers(1, 5),
    restart=restarts,
    seed=st.integers(0, 2**31),
)
def test_ledger_matches_sensitivity_of_each_clients_schedule(rounds, clients, restart, seed):
    g = torch.Generator().manual_seed(seed)
    plan = torch.rand(rounds, clients, generator=g) < 0.5
    ledger = TreeLedger()
    for t in range(rounds):
        ledger = ledger.step(torch.nonzero(plan[t]).flatten().tolist(), restart)
    for c in range(clients):
        mine = [t + 1 for t in range(rounds) if plan[t, c]]
        want = sensitivity_squared(mine, rounds, restart) if mine else 0
        got = ledger.sens[ledger.clients.index(c)] if c in ledger.clients else 0
        assert got == want


def test_accountant_in_a_run_records_epsilon_and_stops_before_the_budget():
    task = fedkit.tasks.digits(4, key=0, hidden=())
    z, restart = 2.0, 4
    full = TreeAccountant(z, restart_every=restart)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, batch_size=32, lr=0.2),
        server=fedkit.chain(*dp_ftrl(1.0, z, 4, restart_every=restart)),
        accountant=full,
    )
    history = fedkit.simulate(task, strategy, rounds=6, key=1, progress=False)
    eps = [m["epsilon"] for m in history.metrics]
    for t, e in enumerate(eps, start=1):
        assert e == pytest.approx(ftrl_epsilon(z, t, "every_round", 1e-5, restart_every=restart))
    target = (eps[3] + eps[4]) / 2
    capped = fedkit.Strategy(
        client=strategy.client,
        server=strategy.server,
        accountant=TreeAccountant(z, target_epsilon=target, restart_every=restart),
    )
    stopped = fedkit.simulate(task, capped, rounds=6, key=1, progress=False)
    assert len(stopped.metrics) == 4
    assert stopped.metrics[-1]["epsilon"] <= target
