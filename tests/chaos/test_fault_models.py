"""Fault models: purity (same key, same plan; a client's fate does not depend on the other
sampled clients), plan shapes, Compose's precedence and key split, Hydra round trips and
argument checks."""

from __future__ import annotations

import attrs
import hydra.utils
import pytest
import torch
from chaos_helpers import KIND
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import chaos
import fedkit
from fedkit.protocols import FAULT_KINDS, FaultKind, FaultModel, FaultPlan, NoFaults
from fedkit.run.records import describe

MODELS = [
    chaos.Dropout(0.3),
    chaos.Stragglers(0.4, "lognormal", scale=2.0, shape=0.7, base=0.1),
    chaos.Stragglers(0.4, "exponential", scale=1.0),
    chaos.Crash(0.2, rounds=3),
    chaos.Corrupt(0.5),
    chaos.Stale(0.5, max_age=3),
    chaos.Duplicate(0.5),
    chaos.Partition(group=[2, 5, 11], start=2, stop=6),
    chaos.Partition(fraction=0.4),
    chaos.ServerCrash([2, 4]),
    chaos.Compose(
        chaos.Partition(fraction=0.2),
        chaos.Crash(0.1, 2),
        chaos.Corrupt(0.3),
        chaos.Stragglers(0.3),
    ),
]
IDS = [type(m).__name__ for m in MODELS]


def same(a: FaultPlan, b: FaultPlan) -> bool:
    return (
        torch.equal(a.kind, b.kind)
        and torch.equal(a.latency, b.latency)
        and torch.equal(a.detail, b.detail)
        and a.server_crash == b.server_crash
        and a.reason == b.reason
    )


def rows(plan: FaultPlan, index: torch.Tensor) -> FaultPlan:
    return FaultPlan(
        kind=plan.kind[index],
        latency=plan.latency[index],
        detail=plan.detail[index],
        server_crash=plan.server_crash,
        reason=tuple(plan.reason[i] for i in index.tolist()),
    )


ids = st.lists(st.integers(0, 10_000), min_size=0, max_size=12, unique=True)


@pytest.mark.parametrize("model", MODELS, ids=IDS)
@given(key=keys, round=st.integers(1, 40), clients=ids, data=st.data())
def test_a_clients_fate_depends_only_on_round_client_and_key(model, key, round, clients, data):
    clients = torch.tensor(clients, dtype=torch.int64)
    plan = model.plan(round, clients, key)
    assert isinstance(model, FaultModel)
    m = clients.numel()
    assert plan.kind.dtype == torch.int64 and plan.kind.shape == (m,)
    assert plan.detail.dtype == torch.int64 and plan.detail.shape == (m,)
    assert plan.latency.dtype == torch.float64 and plan.latency.shape == (m,)
    assert len(plan.reason) == m and bool((plan.latency >= 0).all())
    assert bool(((plan.kind >= 0) & (plan.kind < len(FAULT_KINDS))).all())
    assert same(plan, model.plan(round, clients.clone(), key))  # same key, same plan
    order = torch.as_tensor(data.draw(st.permutations(range(m))), dtype=torch.int64)
    keep = torch.as_tensor(
        data.draw(st.lists(st.booleans(), min_size=m, max_size=m)), dtype=torch.bool
    )
    subset = order[keep[order]]  # some clients, in another order
    assert same(model.plan(round, clients[subset], key), rows(plan, subset))


RANDOM = [
    m for m in MODELS if not isinstance(m, chaos.ServerCrash) and getattr(m, "group", None) is None
]


@pytest.mark.parametrize("model", RANDOM, ids=[type(m).__name__ for m in RANDOM])
def test_another_key_gives_other_decisions(model):
    clients = torch.arange(200)
    a, b = (model.plan(3, clients, fedkit.key(s)) for s in (0, 1))
    assert not same(a, b)


def test_plans_on_no_clients_are_empty():
    for model in MODELS:
        plan = model.plan(1, torch.zeros(0, dtype=torch.int64), fedkit.key(0))
        assert plan.kind.shape == (0,) and plan.reason == ()


def test_reasons_label_every_struck_client():
    labels = {
        chaos.Dropout(1.0): "dropout",
        chaos.Stragglers(1.0): "straggler",
        chaos.Crash(1.0): "crash",
        chaos.Stale(1.0): "stale",
        chaos.Duplicate(1.0): "duplicate",
        chaos.Partition(group=[0, 1, 2]): "partition",
        chaos.Corrupt(1.0, kinds="nan"): "corrupt:nan",
    }
    for model, label in labels.items():
        plan = model.plan(1, torch.arange(3), fedkit.key(0))
        assert plan.reason == (label,) * 3 and bool((plan.kind != KIND[FaultKind.NONE]).all())


def test_compose_first_strike_wins_latency_max_crash_or():
    clients = torch.arange(6)
    model = chaos.Compose(
        chaos.Partition(group=[0, 1]),
        chaos.Stale(1.0, max_age=1),
        chaos.Stragglers(1.0, "uniform", scale=5.0, base=1.0),
        chaos.ServerCrash(2),
    )
    key = fedkit.key(7)
    plan = model.plan(2, clients, key)
    assert plan.kind.tolist() == [KIND[FaultKind.DROP]] * 2 + [KIND[FaultKind.STALE]] * 4
    assert plan.reason == ("partition",) * 2 + ("stale",) * 4
    assert plan.detail.tolist() == [0, 0, 1, 1, 1, 1]
    late = chaos.Stragglers(1.0, "uniform", scale=5.0, base=1.0).plan(
        2, clients, fedkit.fold_in(key, 2)
    )
    assert torch.equal(plan.latency, late.latency) and bool((plan.latency >= 1.0).all())
    assert plan.server_crash and not model.plan(3, clients, key).server_crash


def test_compose_members_use_folded_keys_and_appending_changes_nothing_else():
    clients = torch.arange(300)
    key = fedkit.key(3)
    first, second = chaos.Dropout(0.3), chaos.Corrupt(0.4)
    one = chaos.Compose(first).plan(5, clients, key)
    two = chaos.Compose(first, second).plan(5, clients, key)
    assert same(one, first.plan(5, clients, fedkit.fold_in(key, 0)))
    hit = one.kind != KIND[FaultKind.NONE]
    assert torch.equal(two.kind[hit], one.kind[hit])
    alone = second.plan(5, clients, fedkit.fold_in(key, 1))
    assert torch.equal(two.kind[~hit], alone.kind[~hit]) and torch.equal(
        two.detail[~hit], alone.detail[~hit]
    )
    assert same(chaos.Compose(first, NoFaults()).plan(5, clients, key), one)


def test_combine_of_nothing_is_clean():
    assert same(chaos.combine([], 3), FaultPlan.clean(3))
    assert same(chaos.Compose().plan(1, torch.arange(3), fedkit.key(0)), FaultPlan.clean(3))


@pytest.mark.parametrize("model", MODELS, ids=IDS)
def test_hydra_instantiates_the_described_config(model):
    config = describe(model)
    assert config["_target_"].startswith("chaos.faults.")
    assert hydra.utils.instantiate(config, _convert_="all") == model
    assert attrs.evolve(model) == model


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: chaos.Dropout(1.5), "Dropout.p must lie in"),
        (lambda: chaos.Duplicate(-0.1), "Duplicate.p must lie in"),
        (lambda: chaos.Stale(0.1, max_age=0), "max_age must be an int >= 1"),
        (lambda: chaos.Crash(0.1, rounds=0), "rounds must be an int >= 1"),
        (lambda: chaos.Corrupt(0.1, kinds=["nan", "bitflip"]), "Corrupt.kinds must be"),
        (lambda: chaos.Corrupt(0.1, kinds=[]), "Corrupt.kinds must be"),
        (lambda: chaos.Stragglers(0.1, latency="normal"), "latency"),
        (lambda: chaos.Stragglers(0.1, scale=-1.0), "scale must be a finite number"),
        (lambda: chaos.Partition(), "exactly one of group"),
        (lambda: chaos.Partition(group=[1], fraction=0.5), "exactly one of group"),
        (lambda: chaos.Partition(group=[1], start=3, stop=3), "start < stop"),
        (lambda: chaos.Partition(group=[-1]), "client ids"),
        (lambda: chaos.Partition(fraction=2.0), "fraction must lie in"),
        (lambda: chaos.ServerCrash(0), "at_round must be"),
        (lambda: chaos.ServerCrash([]), "at_round must be"),
    ],
)
def test_bad_arguments_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_calls_are_refused():
    model = chaos.Dropout(0.5)
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        model.plan(1, torch.arange(3.0), fedkit.key(0))
    with pytest.raises(ValueError, match="1-D int64 tensor"):
        model.plan(1, torch.zeros(2, 2, dtype=torch.int64), fedkit.key(0))
    with pytest.raises(TypeError, match="fedkit Key"):
        model.plan(1, torch.arange(3), 0)
    with pytest.raises(TypeError, match="round must be an int"):
        model.plan(1.0, torch.arange(3), fedkit.key(0))
    with pytest.raises(TypeError, match="fault models"):
        chaos.Compose(chaos.Dropout(0.1), object())
