"""Bucketing before a reducer with a minimum-rows rule: too few buckets for the rule are
refused early, with the bucket size, the clients per round, the bucket count and the rule,
when the chain is checked (experiments.build) and when an armed Bucketing is called."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_module
from hypothesis import given
from hypothesis import strategies as st
from strategies import updates as update_matrices

import fedkit
from experiments.build import build
from fedkit.aggregators import Bulyan, GeometricMedian, Krum, Mean, MultiKrum, TrimmedMean
from fedkit.filters import Bucketing, Clip, KrumSelect, bucketing
from fedkit.filters.bucketing import RowRule, check_bucketed_reducer, num_buckets, row_rule


@given(n=st.integers(1, 60), s=st.integers(1, 8), f=st.integers(0, 6))
def test_krum_after_bucketing_is_refused_exactly_when_buckets_are_below_2f_plus_3(n, s, f):
    chain = fedkit.chain(Bucketing(s), Krum(f=f))
    buckets = -(-n // s)
    if buckets >= 2 * f + 3:
        armed = check_bucketed_reducer(chain, n)
        assert armed.components[0] == Bucketing(s, then=RowRule("Krum", f, 2, 3))
        assert armed.components[1] == Krum(f=f)
    else:
        with pytest.raises(ValueError) as err:
            check_bucketed_reducer(chain, n)
        msg = str(err.value)
        assert f"Bucketing(bucket_size={s}) with {n} clients per round" in msg
        assert f"⌈{n}/{s}⌉ = {buckets} buckets" in msg
        assert f"Krum needs n >= 2f + 3 = {2 * f + 3} rows for f={f}" in msg


def test_each_reducer_is_checked_against_its_own_rule():
    # Bulyan: 4f + 3 = 7 buckets
    check_bucketed_reducer(fedkit.chain(Bucketing(2), Bulyan(f=1)), 13)  # ⌈13/2⌉ = 7
    with pytest.raises(ValueError, match=r"⌈12/2⌉ = 6 buckets.*Bulyan needs n >= 4f \+ 3 = 7"):
        check_bucketed_reducer(fedkit.chain(Bucketing(2), Bulyan(f=1)), 12)
    # Multi-Krum also needs the m rows it keeps
    with pytest.raises(ValueError, match=r"2f \+ 3 = 3 rows for f=0 and n >= m = 6"):
        check_bucketed_reducer(fedkit.chain(Bucketing(2), MultiKrum(f=0, m=6)), 10)
    # trimmed mean: more than 2f rows; a transform in between does not change the count
    with pytest.raises(ValueError, match=r"TrimmedMean needs n >= 2f \+ 1 = 5"):
        check_bucketed_reducer(fedkit.chain(Bucketing(3), Clip(1.0), TrimmedMean(f=2)), 12)
    # after a KrumSelect keeping m rows, the reducer sees m rows
    with pytest.raises(ValueError, match="TrimmedMean needs"):
        check_bucketed_reducer(
            fedkit.chain(Bucketing(2), KrumSelect(f=1, m=4), TrimmedMean(f=2)), 20
        )
    assert row_rule(Mean()) is None and row_rule(GeometricMedian()) is None


def test_chains_without_a_bucketed_rule_are_left_alone():
    for chain in (
        fedkit.chain(Krum(f=3)),  # no bucketing: the reducer's own error applies
        fedkit.chain(Bucketing(4), GeometricMedian()),  # no rule after it
    ):
        assert check_bucketed_reducer(chain, 5) == chain
    with pytest.raises(ValueError, match="clients_per_round must be >= 1"):
        check_bucketed_reducer(fedkit.chain(Bucketing(2), Krum(f=1)), 0)
    with pytest.raises(ValueError, match="no bucket size helps: it needs at least 5"):
        check_bucketed_reducer(fedkit.chain(Bucketing(1), Krum(f=1)), 4)


@given(u=update_matrices(min_n=5, max_n=12), key_seed=st.integers(0, 1000))
def test_an_armed_bucketing_fails_early_on_a_short_round_and_changes_nothing_otherwise(u, key_seed):
    s, f = 2, 1
    plain = fedkit.chain(Bucketing(s), Krum(f=f))
    armed = check_bucketed_reducer(plain, 10)
    key = fedkit.key(key_seed)
    n = u.shape[0]
    if num_buckets(n, s) >= 2 * f + 3:
        a, _, _ = plain(u, None, None, key)
        b, _, _ = armed(u, None, None, key)
        assert torch.equal(a, b)
        return
    with pytest.raises(ValueError, match="krum needs n_active"):  # deep inside, no s
        plain(u, None, None, key)
    buckets = num_buckets(n, s)
    with pytest.raises(
        ValueError, match=rf"bucket_size=2\) with {n} active rows gives ⌈{n}/2⌉ = {buckets}"
    ):
        armed(u, None, None, key)


def test_weight_zero_rows_do_not_count_as_clients_at_call_time():
    armed = check_bucketed_reducer(fedkit.chain(Bucketing(2), Krum(f=1)), 10)
    u = torch.arange(40.0).reshape(10, 4)
    w = torch.tensor([1.0] * 8 + [0.0] * 2)  # 8 active rows: 4 buckets < 5
    with pytest.raises(ValueError, match=r"with 8 active rows gives ⌈8/2⌉ = 4 buckets"):
        armed(u, w, None, fedkit.key(0))
    # the kernel checks the same rule (no logic only in the component)
    with pytest.raises(ValueError, match=r"⌈8/2⌉ = 4 buckets.*Krum needs n >= 2f \+ 3 = 5"):
        bucketing(u, w, bucket_size=2, then=RowRule("Krum", 1, 2, 3), key=fedkit.key(0))
    _, new_w = bucketing(u, w, bucket_size=2, then=RowRule("Krum", 1, 2, 2), key=fedkit.key(0))
    assert int((new_w > 0).sum()) == 4


def cfg_of(*overrides: str):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=["num_clients=10", "rounds=1", *overrides])


def test_build_refuses_a_bucketed_krum_with_too_few_clients_and_arms_a_valid_one():
    with pytest.raises(ValueError, match=r"with 8 clients per round gives ⌈8/2⌉ = 4 buckets"):
        build(cfg_of("server=[bucketing,krum]", "f=1", "strategy.clients_per_round=8"))
    exp = build(cfg_of("server=[bucketing,krum]", "f=1"))  # 10 clients: 5 buckets
    bucketing, krum = exp.strategy.server.components
    assert bucketing == Bucketing(2, then=RowRule("Krum", 1, 2, 3)) and krum == Krum(f=1)
