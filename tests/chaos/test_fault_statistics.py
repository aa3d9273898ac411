"""Each fault model's statistics over many keyed rounds and clients. Keys are fixed, so every
number here is deterministic; tolerances are four standard errors."""

from __future__ import annotations

import math

import pytest
import torch
from chaos_helpers import KIND, plans, runs

import chaos
import fedkit
from fedkit.protocols import FaultKind
from fedkit.simulation.delivery import CORRUPTIONS

KEY = fedkit.key(2024)
ROUNDS = range(1, 81)
CLIENTS = torch.arange(100, dtype=torch.int64)
N = len(ROUNDS) * len(CLIENTS)


def close(rate: float, p: float, n: int = N) -> bool:
    return abs(rate - p) <= 4 * math.sqrt(max(p * (1 - p), 1e-12) / n) + 1e-12


@pytest.mark.parametrize("p", [0.0, 0.05, 0.3, 0.7, 1.0])
def test_dropout_rate(p):
    got = plans(chaos.Dropout(p), ROUNDS, CLIENTS, KEY)
    drop = got.kind == KIND[FaultKind.DROP]
    assert torch.all(drop | (got.kind == KIND[FaultKind.NONE]))
    assert close(drop.double().mean().item(), p)
    if p in (0.0, 1.0):
        assert bool(drop.all()) == (p == 1.0) and bool(drop.any()) == (p == 1.0)
    assert all(
        r == ("dropout" if d else "none")
        for row, ds in zip(got.reason, drop.tolist())
        for r, d in zip(row, ds)
    )
    # every round and every client is hit about equally often
    assert close(drop[:, :50].double().mean().item(), p, N // 2)
    assert close(drop[:40].double().mean().item(), p, N // 2)


def test_duplicate_rate():
    got = plans(chaos.Duplicate(0.2), ROUNDS, CLIENTS, KEY)
    twice = got.kind == KIND[FaultKind.DUPLICATE]
    assert close(twice.double().mean().item(), 0.2)
    assert torch.all(twice | (got.kind == KIND[FaultKind.NONE])) and torch.all(got.latency == 0)


@pytest.mark.parametrize("max_age", [1, 4])
def test_stale_rate_and_ages(max_age):
    got = plans(chaos.Stale(0.4, max_age=max_age), ROUNDS, CLIENTS, KEY)
    stale = got.kind == KIND[FaultKind.STALE]
    assert close(stale.double().mean().item(), 0.4)
    ages = got.detail[stale]
    assert int(ages.min()) == 1 and int(ages.max()) == max_age
    assert torch.all(got.detail[~stale] == 0)
    for age in range(1, max_age + 1):
        assert close((ages == age).double().mean().item(), 1 / max_age, ages.numel())


def test_corrupt_rate_and_variants_follow_the_engine_convention():
    got = plans(chaos.Corrupt(0.5), ROUNDS, CLIENTS, KEY)
    bad = got.kind == KIND[FaultKind.CORRUPT]
    assert close(bad.double().mean().item(), 0.5)
    variants = got.detail[bad]
    for i in range(len(CORRUPTIONS)):  # all six engine variants, uniformly
        assert close((variants == i).double().mean().item(), 1 / 6, variants.numel())
    for row, details, hits in zip(got.reason, got.detail.tolist(), bad.tolist()):
        for reason, detail, hit in zip(row, details, hits):
            assert reason == (f"corrupt:{CORRUPTIONS[detail]}" if hit else "none")


def test_corrupt_subset_of_variants_with_aliases():
    model = chaos.Corrupt(1.0, kinds=["nan", "truncate", "dtype"])
    assert model.kinds == ("nan", "truncated", "wrong_dtype")
    got = plans(model, range(1, 21), CLIENTS, KEY)
    assert torch.all(got.kind == KIND[FaultKind.CORRUPT])
    assert set(got.detail.unique().tolist()) == {0, 2, 3}
    assert {r for row in got.reason for r in row} == {
        "corrupt:nan",
        "corrupt:truncated",
        "corrupt:wrong_dtype",
    }


def test_stragglers_fraction_and_base_latency():
    got = plans(chaos.Stragglers(0.25, "uniform", scale=3.0, base=0.5), ROUNDS, CLIENTS, KEY)
    slow = got.kind == KIND[FaultKind.LATE]
    assert close(slow.double().mean().item(), 0.25)
    assert torch.all(got.kind[~slow] == KIND[FaultKind.NONE]) and torch.all(
        got.latency[~slow] == 0.5
    )
    extra = got.latency[slow] - 0.5
    assert float(extra.min()) >= 0 and float(extra.max()) < 3.0
    assert abs(float(extra.mean()) - 1.5) < 4 * 3.0 / math.sqrt(12 * extra.numel())


def _quantiles(x: torch.Tensor, qs=(0.1, 0.25, 0.5, 0.75, 0.9)) -> torch.Tensor:
    return torch.quantile(x, torch.tensor(qs, dtype=x.dtype))


def test_stragglers_lognormal_median_and_spread():
    got = plans(chaos.Stragglers(1.0, "lognormal", scale=2.0, shape=0.5), ROUNDS, CLIENTS, KEY)
    z = torch.log(got.latency.flatten() / 2.0) / 0.5  # standard normal if the law is right
    assert abs(float(z.mean())) < 4 / math.sqrt(N) and abs(float(z.std()) - 1) < 0.03
    normal = torch.special.ndtri(torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64))
    torch.testing.assert_close(_quantiles(z), normal, atol=0.05, rtol=0)


def test_stragglers_exponential_mean_and_quantiles():
    got = plans(chaos.Stragglers(1.0, "exponential", scale=3.0), ROUNDS, CLIENTS, KEY)
    lat = got.latency.flatten()
    assert float(lat.min()) >= 0 and abs(float(lat.mean()) - 3.0) < 4 * 3.0 / math.sqrt(N)
    qs = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    torch.testing.assert_close(_quantiles(lat), -3.0 * torch.log1p(-qs), atol=0.1, rtol=0.03)


def test_straggler_latency_kernel_exact_values():
    u = torch.tensor([0.0, 0.5, 0.75], dtype=torch.float64)
    torch.testing.assert_close(
        chaos.straggler_latency(u, "uniform", 4.0, 1.0),
        torch.tensor([0.0, 2.0, 3.0], dtype=torch.float64),
    )
    torch.testing.assert_close(
        chaos.straggler_latency(u[1:], "exponential", 2.0, 1.0),
        torch.tensor([2 * math.log(2), 2 * math.log(4)], dtype=torch.float64),
    )
    assert float(chaos.straggler_latency(u[1:2], "lognormal", 5.0, 2.0)) == pytest.approx(5.0)


@pytest.mark.parametrize("k", [1, 3])
def test_crash_outages_are_the_union_of_k_round_windows(k):
    p = 0.05
    starts = plans(chaos.Crash(p, rounds=1), ROUNDS, CLIENTS, KEY).kind == KIND[FaultKind.DROP]
    assert close(starts.double().mean().item(), p)
    down = plans(chaos.Crash(p, rounds=k), ROUNDS, CLIENTS, KEY).kind == KIND[FaultKind.DROP]
    # a crash at round r silences rounds r .. r+k-1 and nothing else
    expect = torch.zeros_like(starts)
    for shift in range(k):
        expect[shift:] |= starts[: len(ROUNDS) - shift]
    assert torch.equal(down, expect)
    steady = down[k:].double().mean().item()
    assert close(steady, 1 - (1 - p) ** k, N - k * len(CLIENTS))


def test_crash_isolated_outages_last_exactly_k_rounds():
    k = 3
    got = plans(chaos.Crash(0.04, rounds=k), ROUNDS, CLIENTS, KEY)
    down = (got.kind == KIND[FaultKind.DROP]).T.tolist()
    lengths = [
        length for client in down for first, length in runs(client) if first + length < len(ROUNDS)
    ]
    assert lengths and all(length >= k for length in lengths)
    assert sum(length == k for length in lengths) > 0.8 * len(lengths)  # merged outages are rare
    assert {r for row in got.reason for r in row} == {"crash", "none"}


def test_partition_explicit_group_in_exactly_the_window():
    group = [3, 7, 42, 99]
    got = plans(chaos.Partition(group=group, start=5, stop=9), ROUNDS, CLIENTS, KEY)
    cut = got.kind == KIND[FaultKind.DROP]
    expect = torch.zeros_like(cut)
    expect[4:8, group] = True  # rounds 5..8 are rows 4..7
    assert torch.equal(cut, expect)
    assert {r for row in got.reason for r in row} == {"partition", "none"}


def test_partition_fraction_is_one_group_for_the_whole_window():
    got = plans(chaos.Partition(fraction=0.3, start=5), range(1, 13), torch.arange(2000), KEY)
    cut = got.kind == KIND[FaultKind.DROP]
    assert not cut[:4].any()
    group = cut[4]
    assert torch.equal(cut[4:], group.expand_as(cut[4:]))
    assert close(group.double().mean().item(), 0.3, 2000)
    members = chaos.Partition(fraction=0.3).members(torch.arange(2000), KEY)
    assert torch.equal(members, group)


def test_server_crash_only_in_the_given_rounds():
    got = plans(chaos.ServerCrash([7, 3]), range(1, 11), CLIENTS, KEY)
    assert [r for r, c in zip(range(1, 11), got.server_crash) if c] == [3, 7]
    assert torch.all(got.kind == KIND[FaultKind.NONE])
    assert chaos.ServerCrash(4).at_round == (4,)


def test_compose_rates_follow_the_precedence():
    model = chaos.Compose(chaos.Dropout(0.2), chaos.Corrupt(0.5), chaos.Duplicate(0.5))
    got = plans(model, ROUNDS, CLIENTS, KEY)
    rate = {k: (got.kind == KIND[k]).double().mean().item() for k in FaultKind}
    assert close(rate[FaultKind.DROP], 0.2)
    assert close(rate[FaultKind.CORRUPT], 0.8 * 0.5)
    assert close(rate[FaultKind.DUPLICATE], 0.8 * 0.5 * 0.5)
    assert close(rate[FaultKind.NONE], 0.8 * 0.5 * 0.5)
