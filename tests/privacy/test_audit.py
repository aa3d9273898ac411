"""Empirical privacy audits (privacy.audit, fedkit audit privacy): the ε lower bounds are
valid statistics, every central and local config's claim survives its audit, and the audit
catches the example-weighted mean with noise calibrated for C/m (fixed keys: deterministic)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import fedkit
from experiments.audit_cli import broken_strategy, build_for_audit, compose_config
from experiments.audit_cli import main as audit_main
from experiments.cli import main as cli_main
from fedkit import Strategy, chain
from fedkit.aggregators import Mean
from privacy.accounting import epsilon as accounted_epsilon
from privacy.audit import (
    Population,
    canary_updates,
    client_messages,
    clopper_pearson,
    local_many_run_audit,
    local_one_run_audit,
    many_run_audit,
    one_run_audit,
    one_run_bound,
    one_run_epsilon,
    one_run_p_value,
    rates_epsilon,
    released,
    threshold_epsilon,
)
from privacy.mechanisms import ClipUpdates, GaussianNoise, dp_fedavg, local_dp_epsilon

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "privacy"
DELTA = 1e-5


def mechanism_configs(mechanism: str) -> list[str]:
    """Names of the privacy configs with ``mechanism``."""
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("mechanism") == mechanism:
            out.append(path.stem)
    return out


def experiment(*overrides: str):
    return build_for_audit(compose_config(["threads=1", *overrides]))


# ---------------------------------------------------------------- one-run statistics


def reference_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """Steinke et al. 2023's p-value with exact binomial sums (math.comb, no scipy)."""
    q = math.exp(eps) / (1 + math.exp(eps))
    pmf = [math.comb(r, k) * q**k * (1 - q) ** (r - k) for k in range(r + 1)]
    tail = math.fsum(pmf[v:])
    alpha = max((math.fsum(pmf[v - i : v]) / i for i in range(1, v + 1)), default=0.0)
    return min(1.0, tail + 2 * m * delta * alpha)


@given(
    r=st.integers(1, 60),
    data=st.data(),
    eps=st.floats(0.0, 6.0),
    delta=st.sampled_from([0.0, 1e-5, 1e-3]),
)
def test_one_run_p_value_is_the_papers_binomial_tail_with_its_delta_term(r, data, eps, delta):
    v = data.draw(st.integers(0, r))
    m = data.draw(st.integers(r, 3 * r))
    got = one_run_p_value(canaries=m, guesses=r, correct=v, epsilon=eps, delta=delta)
    assert got == pytest.approx(reference_p_value(m, r, v, eps, delta), rel=1e-9, abs=1e-12)


@given(
    r=st.integers(2, 400),
    data=st.data(),
    delta=st.sampled_from([0.0, 1e-5]),
    beta=st.sampled_from([0.05, 0.01]),
)
def test_one_run_epsilon_grows_with_the_number_of_right_guesses(r, data, delta, beta):
    v = data.draw(st.integers(0, r - 1))
    kw = dict(canaries=2 * r, guesses=r, delta=delta, beta=beta)
    assert one_run_epsilon(correct=v + 1, **kw) >= one_run_epsilon(correct=v, **kw) - 1e-6


@given(r=st.integers(1, 500), eps=st.floats(0.0, 5.0), beta=st.sampled_from([0.05, 0.01]))
def test_one_run_epsilon_stays_below_eps_unless_randomized_response_was_rare(r, eps, beta):
    # ε-DP randomized response answers right with probability e^ε/(1+e^ε): any count it
    # reaches with probability >= β must not prove more than ε (with or without δ).
    q = math.exp(eps) / (1 + math.exp(eps))
    v = int(stats.binom.isf(beta, r, q))  # P[B > v] <= β < ... so P[B >= v] >= β
    while v < r and stats.binom.sf(v, r, q) >= beta:  # largest v with P[B >= v] >= β
        v += 1
    assert stats.binom.sf(v - 1, r, q) >= beta
    for delta in (0.0, 1e-5):
        bound = one_run_epsilon(canaries=r, guesses=r, correct=v, delta=delta, beta=beta)
        assert bound <= eps + 1e-5


@pytest.mark.parametrize(
    ("m", "r", "v", "delta", "printed"),
    [(1000, 100, 75, 1e-4, 0.673), (100_000, 1510, 1439, 1e-5, 2.675)],
)
def test_one_run_epsilon_reproduces_the_papers_examples(m, r, v, delta, printed):
    # Steinke et al. 2023: the worked example of Appendix D and a Section 7 result, β = 0.05
    got = one_run_epsilon(canaries=m, guesses=r, correct=v, delta=delta, beta=0.05)
    assert got == pytest.approx(printed, abs=1.5e-3)


def test_one_run_epsilon_of_perfect_guesses_has_a_closed_form():
    # δ = 0, v = r: the p-value is q^r, so the bound is logit(β^(1/r))
    for r, beta in [(10, 0.05), (100, 0.05), (1000, 0.01)]:
        q = beta ** (1 / r)
        expected = math.log(q / (1 - q))
        got = one_run_epsilon(canaries=r, guesses=r, correct=r, delta=0.0, beta=beta)
        assert got == pytest.approx(expected, abs=1e-5)
        assert got <= expected
    # the δ term only weakens the bound
    kw = dict(canaries=1000, guesses=100, correct=95, beta=0.05)
    assert one_run_epsilon(delta=1e-4, **kw) < one_run_epsilon(delta=0.0, **kw)


def test_one_run_bound_on_simulated_randomized_response_is_valid_and_has_power():
    eps, r, trials, beta = 1.0, 400, 300, 0.05
    q = math.exp(eps) / (1 + math.exp(eps))
    root = fedkit.key(7)
    bounds = []
    for t in range(trials):
        right = int(fedkit.core.keys.bernoulli(fedkit.fold_in(root, t), q, r).sum())
        bounds.append(one_run_epsilon(canaries=r, guesses=r, correct=right, delta=0.0, beta=beta))
    exceed = sum(b > eps for b in bounds)
    assert exceed <= stats.binom.isf(1e-4, trials, beta)  # at most β of the time
    assert sum(bounds) / trials > 0.5 * eps  # and not vacuous


def test_one_run_inputs_are_checked_with_clear_errors():
    with pytest.raises(ValueError, match="correct <= guesses <= canaries"):
        one_run_p_value(canaries=10, guesses=5, correct=6, epsilon=1.0, delta=0.0)
    with pytest.raises(ValueError, match="epsilon must be"):
        one_run_p_value(canaries=10, guesses=5, correct=3, epsilon=-1.0, delta=0.0)
    with pytest.raises(ValueError, match="beta must lie in"):
        one_run_epsilon(canaries=10, guesses=5, correct=3, delta=0.0, beta=1.5)
    with pytest.raises(ValueError, match="delta must lie in"):
        one_run_epsilon(canaries=10, guesses=5, correct=3, delta=1.0, beta=0.05)
    with pytest.raises(ValueError, match="same length"):
        one_run_bound(torch.zeros(4), torch.ones(3, dtype=torch.bool), delta=0, confidence=0.9)


# ---------------------------------------------------------------- many-run statistics


@given(n=st.integers(1, 300), data=st.data(), alpha=st.sampled_from([0.025, 0.05, 0.1]))
def test_clopper_pearson_matches_scipy_exact_interval(n, data, alpha):
    k = data.draw(st.integers(0, n))
    lo, hi = clopper_pearson(k, n, alpha=alpha)
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
    assert lo == pytest.approx(ci.low, abs=1e-9)
    assert hi == pytest.approx(ci.high, abs=1e-9)


@pytest.mark.parametrize(("p", "n"), [(0.03, 200), (0.5, 50), (0.9, 500)])
def test_clopper_pearson_bounds_contain_the_true_rate(p, n):
    alpha, trials = 0.05, 2000
    counts = stats.binom.rvs(n, p, size=trials, random_state=12345)
    lo_miss = sum(clopper_pearson(int(k), n, alpha=alpha)[0] > p for k in counts)
    hi_miss = sum(clopper_pearson(int(k), n, alpha=alpha)[1] < p for k in counts)
    limit = stats.binom.isf(1e-4, trials, alpha)
    assert lo_miss <= limit and hi_miss <= limit


def test_rates_epsilon():
    assert rates_epsilon(0.5, 0.05, 0.0) == pytest.approx(math.log(10))
    assert rates_epsilon(0.5, 0.05, 0.1) == pytest.approx(math.log(8))
    assert rates_epsilon(0.1, 0.2, 0.0) == 0.0
    with pytest.raises(ValueError, match="fpr must lie"):
        rates_epsilon(0.5, 1.5, 0.0)


@pytest.mark.parametrize("mu", [0.5, 1.5, 3.0])
def test_threshold_epsilon_is_below_the_gaussian_mechanisms_epsilon(mu):
    # scores N(μ, 1) with the canary and N(0, 1) without: the Gaussian mechanism at Δ/σ = μ
    true_eps = local_dp_epsilon(2.0 / mu, "gaussian", DELTA)  # μ = 2/z
    root = fedkit.key(int(mu * 10))
    bounds = []
    for t in range(20):
        k_in, k_out, k_sel = fedkit.split(fedkit.fold_in(root, t), 3)
        s_in = fedkit.core.keys.normal(k_in, 2000, mean=mu, dtype=torch.float64)
        s_out = fedkit.core.keys.normal(k_out, 2000, dtype=torch.float64)
        test = threshold_epsilon(s_in, s_out, delta=DELTA, beta=0.05, key=k_sel)
        assert test.favoured_runs == test.other_runs == 1000
        bounds.append(test.epsilon)
    assert sum(b > true_eps for b in bounds) <= 3  # 20 trials at β = 0.05
    # not vacuous (1000 held-out runs a side cannot prove much more than log(1000) ≈ 7)
    assert sum(bounds) / len(bounds) > {0.5: 0.2, 1.5: 1.5, 3.0: 3.5}[mu]


def test_threshold_epsilon_finds_the_low_side_too():
    k_in, k_out, k_sel = fedkit.split(fedkit.key(3), 3)
    s_in = fedkit.core.keys.normal(
        k_in, 1000, mean=-4.0, dtype=torch.float64
    )  # "in" lowers the score
    s_out = fedkit.core.keys.normal(k_out, 1000, dtype=torch.float64)
    test = threshold_epsilon(s_in, s_out, delta=DELTA, beta=0.05, key=k_sel)
    assert test.region == "below" and test.epsilon > 2.0
    with pytest.raises(ValueError, match="at least 4 runs"):
        threshold_epsilon(s_in[:3], s_out, delta=DELTA, beta=0.05, key=k_sel)


# ---------------------------------------------------------------- the server driver


def test_released_moves_by_the_canary_over_m_in_the_rounds_it_was_sampled():
    # without noise, present vs absent differs by u/m in each round the canary was drawn
    m, n, d, rounds = 5, 10, 64, 4
    strategy = Strategy(server=chain(*dp_fedavg(1.0, 0.0, m)), clients_per_round=m)
    pop = Population(num_clients=n, dim=d, update_norm=1.0)
    row = canary_updates(fedkit.key(1), 1, d, norm=1.0)
    before = row.clone()
    ids = torch.tensor([3])
    kw = dict(canary_ids=ids, canary_rows=row, rounds=rounds, key=fedkit.key(2))
    with_it = released(strategy, pop, present=torch.tensor([True]), **kw)
    without = released(strategy, pop, present=torch.tensor([False]), **kw)
    assert torch.equal(with_it, released(strategy, pop, present=torch.tensor([True]), **kw))
    assert torch.equal(row, before)
    drawn = 0
    state = strategy.init(torch.zeros(d))
    for t in range(rounds):
        k_sample = fedkit.split(fedkit.fold_in(fedkit.key(2), t), 3)[0]
        drawn += int(3 in strategy.sample(state, n, k_sample).tolist())
    assert 0 < drawn < rounds  # the keys make this case informative
    diff = (with_it - without).to(torch.float32)
    torch.testing.assert_close(diff, drawn * row[0] / m, atol=1e-6, rtol=1e-5)


def test_the_drivers_check_their_inputs():
    strategy = Strategy(server=chain(*dp_fedavg(1.0, 1.0, 2)), clients_per_round=2)
    pop = Population(num_clients=4, dim=8, update_norm=1.0)
    row = canary_updates(fedkit.key(1), 1, 8, norm=1.0)
    with pytest.raises(ValueError, match="canary_ids must be distinct slots"):
        released(
            strategy,
            pop,
            canary_ids=torch.tensor([4]),
            canary_rows=row,
            present=torch.tensor([True]),
            rounds=1,
            key=fedkit.key(0),
        )
    with pytest.raises(ValueError, match="canaries must lie in"):
        one_run_audit(strategy, pop, canaries=5, rounds=1, delta=DELTA, key=fedkit.key(0))
    with pytest.raises(ValueError, match="runs must be an even integer"):
        many_run_audit(strategy, pop, runs=15, rounds=1, delta=DELTA, key=fedkit.key(0))
    with pytest.raises(ValueError, match="no LocalDP"):
        client_messages(strategy, row, examples=1, key=fedkit.key(0))
    with pytest.raises(ValueError, match="update_norm must be"):
        Population(num_clients=4, dim=8, update_norm=0.0)


# ---------------------------------------------------------------- claims that must hold


@pytest.mark.parametrize("name", mechanism_configs("central"))
def test_every_central_config_claim_holds_under_one_run_audit(name):
    exp = experiment(
        f"privacy={name}", "privacy.noise_multiplier=1", "rounds=2",
        "num_clients=1200", "strategy.clients_per_round=600",
    )  # fmt: skip
    claim = exp.privacy.epsilon(2)
    assert 2.0 < claim < 10.0  # a claim small enough for the test to mean something
    assert exp.privacy.status == "sound"
    pop = Population(1200, 1024, exp.privacy.clip_norm)
    result = one_run_audit(
        exp.strategy, pop, canaries=1000, rounds=2, delta=exp.privacy.delta, key=fedkit.key(0)
    )
    assert result.details["guesses"] > 0
    assert 0.0 <= result.epsilon <= claim


@pytest.mark.parametrize("name", mechanism_configs("central"))
def test_every_central_config_claim_holds_under_many_run_audit(name):
    exp = experiment(
        f"privacy={name}", "privacy.noise_multiplier=1", "rounds=2",
        "num_clients=20", "strategy.clients_per_round=10",
    )  # fmt: skip
    claim = exp.privacy.epsilon(2)
    # the heavy canary changes nothing: uniform weights ignore example counts
    pop = Population(20, 256, exp.privacy.clip_norm, honest_examples=10, canary_examples=1000)
    result = many_run_audit(
        exp.strategy, pop, runs=400, rounds=2, delta=exp.privacy.delta, key=fedkit.key(1)
    )
    assert 0.0 <= result.epsilon <= claim


def test_a_sound_central_chain_with_little_noise_is_audited_well_above_zero():
    exp = experiment(
        "privacy=central", "privacy.noise_multiplier=0.5", "rounds=1",
        "num_clients=20", "strategy.clients_per_round=10",
    )  # fmt: skip
    claim = exp.privacy.epsilon(1)
    pop = Population(20, 256, exp.privacy.clip_norm)
    result = many_run_audit(
        exp.strategy, pop, runs=600, rounds=1, delta=exp.privacy.delta, key=fedkit.key(2)
    )
    assert 1.0 < result.epsilon <= claim


@pytest.mark.parametrize("name", mechanism_configs("local"))
def test_every_local_config_claim_holds_per_client(name):
    exp = experiment(f"privacy={name}", "privacy.noise_multiplier=2", "rounds=2")
    claim = exp.privacy.epsilon(2)
    assert 2.0 < claim < 10.0
    kw = dict(rounds=2, dim=256, norm=exp.privacy.clip_norm, delta=exp.privacy.delta)
    one = local_one_run_audit(exp.strategy, canaries=1000, key=fedkit.key(3), **kw)
    many = local_many_run_audit(exp.strategy, runs=4000, key=fedkit.key(4), **kw)
    for result in (one, many):
        assert result.observed == "client message"
        assert 0.5 < result.epsilon <= claim  # valid, and the audit sees the noise level


# ---------------------------------------------------------------- a claim that must fail


def test_the_audit_catches_the_weighted_mean_with_noise_for_c_over_m():
    # issue 14's defect: clip → example-weighted mean → noise z·C/m; one client holds most
    # of the examples and moves the aggregate by ~0.9·C instead of C/m
    z, clip, n, m = 2.0, 0.5, 20, 10
    strategy = Strategy(
        server=chain(ClipUpdates(clip), Mean(), GaussianNoise(z, clip, m)), clients_per_round=m
    )
    claim = accounted_epsilon(noise_multiplier=z, sample_rate=m / n, steps=1, delta=DELTA)
    pop = Population(n, 256, clip, honest_examples=10, canary_examples=1000)
    result = many_run_audit(strategy, pop, runs=1200, rounds=1, delta=DELTA, key=fedkit.key(5))
    assert result.epsilon > claim + 1.0, (result.epsilon, claim)
    # the CLI's rendition of the defect is the same chain for a config's numbers
    exp = experiment(
        "privacy=central", f"privacy.noise_multiplier={z}", f"privacy.clip_norm={clip}",
        "rounds=1", f"num_clients={n}", f"strategy.clients_per_round={m}",
    )  # fmt: skip
    assert exp.privacy.epsilon(1) == pytest.approx(claim)
    assert broken_strategy(exp) == strategy


# ---------------------------------------------------------------- the command line


def test_fedkit_audit_privacy_prints_a_table_and_writes_a_record(tmp_path, capsys):
    out = tmp_path / "audit.json"
    argv = [
        "audit", "privacy", "privacy=central", "privacy.noise_multiplier=2",
        "strategy.clients_per_round=10", "--rounds", "1", "--runs", "800", "--dim", "128",
        "--population", "100", "--canaries", "100", "--broken-example", "--out", str(out),
    ]  # fmt: skip
    assert cli_main(argv) == 0
    table = capsys.readouterr().out
    assert "claimed ε" in table and "VIOLATED" in table
    record = json.loads(out.read_text())
    assert record["kind"] == "fedkit.audit.privacy/1"
    rows = record["rows"]
    assert [r["method"] for r in rows] == ["one-run", "many-run", "many-run"]
    assert rows[0]["details"]["num_clients"] == 100 and rows[1]["details"]["num_clients"] == 20
    claim = rows[0]["claimed_epsilon"]
    assert all(r["claimed_epsilon"] == pytest.approx(claim) for r in rows)
    assert [r["verdict"] for r in rows] == ["holds", "holds", "VIOLATED"]
    assert rows[2]["status"] == "defect" and rows[2]["audited_epsilon"] > claim


def test_fedkit_audit_refuses_what_it_cannot_audit(capsys):
    assert audit_main(["verify"]) == 2
    assert audit_main([]) == 0 and "privacy" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not audited here"):
        audit_main(["privacy", "privacy=none", "--runs", "16", "--out", "/dev/null"])
