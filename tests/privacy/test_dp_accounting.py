"""Accounting: ε against Opacus, monotonicity, calibration, the budget ledger."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opacus.accountants import PRVAccountant, RDPAccountant

from privacy.accounting import (
    BudgetLedger,
    ClientLedgers,
    PrivacyEvent,
    calibrate,
    central_dp_event,
    dpsgd_event,
    epsilon,
    epsilon_of_history,
)

DELTA = 1e-5
noise = st.floats(0.5, 5.0)
rates = st.floats(0.001, 0.5)
step_counts = st.integers(1, 2000)


# Each RDP evaluation costs ~0.1-0.5 s of CPU (Opacus's series over 150 orders), so the
# property below draws few examples and checks the three directions on each.
@settings(max_examples=8)
@given(noise, rates, step_counts, st.integers(1, 500), st.floats(1.05, 3.0))
def test_epsilon_is_monotone(z, q, t, more, factor):
    def eps(z, q, t):
        return epsilon(noise_multiplier=z, sample_rate=q, steps=t, delta=DELTA)

    base = eps(z, q, t)
    assert eps(z, q, t + more) >= base  # more steps: more ε
    assert eps(z, min(1.0, q * factor), t) >= base  # larger sampling rate: more ε
    assert eps(z * factor, q, t) <= base  # more noise: less ε


def test_prv_is_monotone():
    def eps(z, q, t):
        return epsilon(noise_multiplier=z, sample_rate=q, steps=t, delta=DELTA, accountant="prv")

    base = eps(1.0, 0.05, 100)
    assert eps(1.0, 0.05, 300) > base
    assert eps(1.0, 0.1, 100) > base
    assert eps(1.5, 0.05, 100) < base


HISTORY = [(1.0, 0.1, 5), (1.5, 0.2, 3), (1.0, 0.1, 2), (0.9, 0.05, 40)]


@pytest.mark.parametrize(("name", "cls"), [("rdp", RDPAccountant), ("prv", PRVAccountant)])
def test_epsilon_equals_opacus_for_the_same_history(name, cls):
    reference = cls()
    ledger = BudgetLedger(accountant=name)
    for z, q, steps in HISTORY:
        for _ in range(steps):
            reference.step(noise_multiplier=z, sample_rate=q)
            ledger = ledger.step(PrivacyEvent(z, q))
    expected = reference.get_epsilon(delta=DELTA)
    assert ledger.epsilon(DELTA) == pytest.approx(expected, rel=1e-12)
    assert epsilon_of_history(HISTORY, delta=DELTA, accountant=name) == pytest.approx(
        expected, rel=1e-12
    )
    assert ledger.steps == sum(s for _, _, s in HISTORY)


@pytest.mark.parametrize(
    ("accountant", "target", "q", "steps"),
    [
        ("rdp", 1.0, 0.01, 1000),
        ("rdp", 4.0, 0.1, 100),
        ("rdp", 8.0, 1.0, 20),
        ("prv", 1.0, 0.01, 1000),
        ("prv", 8.0, 1.0, 20),
        ("pld", 1.0, 0.01, 1000),
        ("pld", 8.0, 1.0, 20),
    ],
)
def test_calibrate_inverts_epsilon(accountant, target, q, steps):
    z = calibrate(
        target_epsilon=target, delta=DELTA, sample_rate=q, steps=steps, accountant=accountant
    )
    eps = epsilon(
        noise_multiplier=z, sample_rate=q, steps=steps, delta=DELTA, accountant=accountant
    )
    assert target - 0.01 <= eps <= target


def test_edge_cases():
    assert epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=0, delta=DELTA) == 0.0
    assert epsilon(noise_multiplier=1.0, sample_rate=0.0, steps=10, delta=DELTA) == 0.0
    assert epsilon(noise_multiplier=0.0, sample_rate=0.1, steps=1, delta=DELTA) == math.inf
    with pytest.raises(ValueError, match="delta"):
        epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=1, delta=0.0)
    with pytest.raises(ValueError, match="sample_rate"):
        PrivacyEvent(1.0, 1.5)
    with pytest.raises(ValueError, match="accountant"):
        BudgetLedger(accountant="gdp")
    with pytest.raises(ValueError, match="steps"):
        PrivacyEvent(1.0, 0.1, 2.5)


def _closed_form_epsilon(z: float, rounds: int, delta: float) -> float:
    """Full participation (q = 1): RDP of order α is rounds·α/(2z²); converted to (ε, δ)
    with Balle et al. 2020's bound, minimised over Opacus's default orders."""
    alphas = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)), dtype=float)
    rdp = rounds * alphas / (2 * z**2)
    eps = rdp - (np.log(delta) + np.log(alphas)) / (alphas - 1) + np.log((alphas - 1) / alphas)
    return float(eps.min())


def test_ledger_stops_before_the_round_that_would_exceed_the_target():
    z, target = 3.0, 4.0
    per_round = central_dp_event(noise_multiplier=z, clients_per_round=10, total_clients=10)
    closed = [_closed_form_epsilon(z, t, DELTA) for t in range(1, 60)]
    last_ok = max(t for t, e in enumerate(closed, start=1) if e <= target)
    assert closed[last_ok] > target  # round last_ok + 1 would exceed

    ledger, completed = BudgetLedger(), 0
    while not ledger.would_exceed(per_round, target_epsilon=target, delta=DELTA):
        ledger = ledger.step(per_round)
        completed += 1
    assert completed == last_ok
    assert ledger.epsilon(DELTA) == pytest.approx(closed[last_ok - 1], rel=1e-9)
    assert ledger.epsilon(DELTA) <= target


def test_events_and_client_ledgers():
    ev = central_dp_event(noise_multiplier=1.1, clients_per_round=10, total_clients=1000)
    assert ev == PrivacyEvent(1.1, 0.01, 1)
    dp = dpsgd_event(noise_multiplier=1.0, batch_size=32, local_examples=320, steps=20)
    assert dp == PrivacyEvent(1.0, 0.1, 20)
    led = ClientLedgers.create(3)
    led = led.step([0, 2], [dp, dp]).step([2], [dp])
    eps = led.epsilons(DELTA)
    assert eps[1] == 0.0 and 0 < eps[0] < eps[2] == led.epsilon(DELTA)
    assert eps[2] == pytest.approx(
        epsilon(noise_multiplier=1.0, sample_rate=0.1, steps=40, delta=DELTA)
    )
    assert led.would_exceed([2], [dp], target_epsilon=eps[2], delta=DELTA)
    assert not led.would_exceed([1], [dp], target_epsilon=eps[2], delta=DELTA)
    assert ClientLedgers.from_dict(led.to_dict()) == led
    single = BudgetLedger().step(ev).step(ev)
    assert single.history == ((1.1, 0.01, 2),)
    assert BudgetLedger.from_dict(single.to_dict()) == single


# Three independent implementations: Opacus's RDP (an upper bound, loose by the RDP -> (ε, δ)
# conversion) and PRV, and Google's dp-accounting PLD (pessimistic discretisation). PLD and
# PRV are both near-exact numerical compositions: they must agree closely, and neither may
# exceed RDP by more than their discretisation error.
@settings(max_examples=6, deadline=None)
@given(st.floats(0.6, 3.0), st.floats(0.005, 1.0), st.integers(1, 300))
def test_pld_prv_and_rdp_agree(z, q, steps):
    by = {
        name: epsilon(noise_multiplier=z, sample_rate=q, steps=steps, delta=DELTA, accountant=name)
        for name in ("rdp", "prv", "pld")
    }
    assert by["pld"] == pytest.approx(by["prv"], rel=0.03, abs=0.02)
    assert by["pld"] <= by["rdp"] * 1.001 + 0.01
    assert by["prv"] <= by["rdp"] * 1.001 + 0.01


def test_pld_equals_dp_accounting_for_a_mixed_history():
    import dp_accounting
    from dp_accounting.pld.pld_privacy_accountant import PLDAccountant

    history = [(1.1, 0.1, 30), (0.9, 0.05, 50), (2.0, 1.0, 3)]  # not merged: three events
    reference = PLDAccountant()
    for z, q, steps in history:
        step = dp_accounting.GaussianDpEvent(z)
        if q < 1:
            step = dp_accounting.PoissonSampledDpEvent(q, step)
        reference.compose(step, steps)
    ours = epsilon_of_history(history, delta=DELTA, accountant="pld")
    assert ours == pytest.approx(reference.get_epsilon(DELTA), rel=1e-3)
