"""Stale-content replies (``chaos.StaleContent``): tagged with the current round, so they pass
validation, but carrying the client's update from ``age`` rounds earlier (zeros when the
engine's replay memory has none); counted under their own label; keyed and reproducible."""

from __future__ import annotations

import pytest
import torch
from chaos_helpers import KIND
from hypothesis import given, settings
from hypothesis import strategies as st

import chaos
import fedkit
import fedkit.tasks
from fedkit.aggregators import Mean
from fedkit.protocols import FaultKind, FaultPlan
from fedkit.replies import Reply, validate
from fedkit.simulation.delivery import ReplayMemory, deliver, replay_depth

D = 5


def update(round: int, client: int) -> torch.Tensor:
    """A recognisable update of ``client`` in ``round``."""
    return torch.full((D,), float(100 * round + client))


def replies(round: int, clients: list[int]) -> list[Reply]:
    return [Reply(client=c, round=round, update=update(round, c), num_examples=3) for c in clients]


def strike(m: int, ages: dict[int, int]) -> FaultPlan:
    """A plan striking position ``i`` with stale content of age ``ages[i]``."""
    kind = torch.zeros(m, dtype=torch.int64)
    detail = torch.zeros(m, dtype=torch.int64)
    for i, age in ages.items():
        kind[i], detail[i] = KIND[FaultKind.STALE_CONTENT], age
    reason = tuple("stale_content" if i in ages else "none" for i in range(m))
    return FaultPlan(
        kind=kind, latency=torch.zeros(m, dtype=torch.float64), detail=detail, reason=reason
    )


def test_the_reply_passes_validation_with_the_current_tag_and_an_old_update():
    memory = ReplayMemory(depth=3)
    clients = [4, 7, 9]
    for r in (1, 2, 3):
        memory = deliver(
            replies(r, clients), strike(3, {}), deadline=None, key=fedkit.key(0), memory=memory
        ).memory
    out = deliver(
        replies(4, clients),
        strike(3, {0: 1, 2: 3}),
        deadline=None,
        key=fedkit.key(0),
        memory=memory,
    )
    got = {r.client: r for r in out.replies}
    assert [r.round for r in out.replies] == [4, 4, 4]
    assert torch.equal(got[4].update, update(3, 4))  # one round old
    assert torch.equal(got[7].update, update(4, 7))  # not struck
    assert torch.equal(got[9].update, update(1, 9))  # three rounds old
    assert out.faults == {"stale_content": 2} and out.lost == {}
    check = validate(out.replies, round=4, d=D, dtype=torch.float32, expected=clients)
    assert len(check.accepted) == 3 and check.rejected == ()
    # the memory remembers what the clients computed, not the stale content they sent
    assert torch.equal(out.memory.recall(9, 5, 1), update(4, 9))


def test_without_an_old_update_the_client_sends_zeros_which_are_accepted():
    out = deliver(replies(1, [0, 1]), strike(2, {1: 1}), deadline=None, key=fedkit.key(0))
    assert torch.equal(out.replies[1].update, torch.zeros(D))
    assert out.replies[1].round == 1 and out.faults == {"stale_content": 1}
    check = validate(out.replies, round=1, d=D, dtype=torch.float32, expected=[0, 1])
    assert len(check.accepted) == 2
    # a memory shallower than the age has nothing either
    shallow = ReplayMemory(depth=1).remember(1, replies(1, [0, 1])).remember(2, replies(2, [0, 1]))
    assert shallow.recall(0, 3, 2) is None and torch.equal(shallow.recall(0, 3, 1), update(2, 0))


@settings(max_examples=60, deadline=None)
@given(
    depth=st.integers(1, 4),
    rounds=st.lists(st.sets(st.integers(0, 5), min_size=1), min_size=1, max_size=8),
    data=st.data(),
)
def test_stale_content_is_the_newest_update_at_least_age_rounds_old_within_depth(
    depth, rounds, data
):
    memory = ReplayMemory(depth=depth)
    history: dict[int, dict[int, torch.Tensor]] = {}  # round -> client -> update
    for r, sampled in enumerate(rounds, start=1):
        clients = sorted(sampled)
        ages = data.draw(
            st.dictionaries(st.sampled_from(range(len(clients))), st.integers(1, depth))
        )
        out = deliver(
            replies(r, clients),
            strike(len(clients), ages),
            deadline=None,
            key=fedkit.key(r),
            memory=memory,
        )
        memory = out.memory
        assert len(memory.rounds) <= depth  # bounded: depth rounds of replies
        got = {x.client: x.update for x in out.replies}
        for i, c in enumerate(clients):
            if i not in ages:
                assert torch.equal(got[c], update(r, c))
                continue
            window = [t for t in range(r - depth, r - ages[i] + 1) if c in history.get(t, {})]
            want = history[max(window)][c] if window else torch.zeros(D)
            assert torch.equal(got[c], want)
        assert out.faults == ({"stale_content": len(ages)} if ages else {})
        history[r] = {c: update(r, c) for c in clients}


def test_the_fault_model_is_keyed_and_declares_its_memory_depth():
    model = chaos.StaleContent(0.5, max_age=3)
    clients = torch.arange(40)
    a = model.plan(2, clients, fedkit.key(1))
    b = model.plan(2, clients.clone(), fedkit.key(1))
    assert torch.equal(a.kind, b.kind) and torch.equal(a.detail, b.detail)
    hit = a.kind == KIND[FaultKind.STALE_CONTENT]
    assert 0 < int(hit.sum()) < 40 and bool((a.kind[~hit] == KIND[FaultKind.NONE]).all())
    assert set(a.detail[hit].tolist()) <= {1, 2, 3} and set(a.reason) == {"stale_content", "none"}
    assert replay_depth(model) == 3 and replay_depth(chaos.Dropout(0.1)) == 0
    assert (
        replay_depth(chaos.Compose(chaos.Dropout(0.1), model, chaos.StaleContent(max_age=2))) == 3
    )
    with pytest.raises(ValueError, match="max_age must be an int >= 1"):
        chaos.StaleContent(0.1, max_age=0)
    with pytest.raises(ValueError, match="depth must be an int >= 0"):
        ReplayMemory(depth=-1)


def test_the_config_instantiates_the_fault_and_the_record_describes_it():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from experiments import CONFIG_DIR
    from fedkit.run.records import describe

    model = instantiate(OmegaConf.load(CONFIG_DIR / "chaos" / "stale_content.yaml"))
    assert model == chaos.StaleContent(p=0.1, max_age=1)
    assert instantiate(OmegaConf.create(describe(model))) == model


# ----------------------------------------------------------------------- through the engine


@pytest.fixture(scope="module")
def task():
    return fedkit.tasks.digits(8, hidden=(16,), key=0)


def run(task, faults=None, rounds=2):
    strat = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, batch_size=64, lr=0.1), server=Mean()
    )
    return fedkit.simulate(
        task, strat, rounds=rounds, key=5, engine="vectorized", progress=False, faults=faults
    )


def test_every_client_one_round_late_reaches_the_aggregator_one_round_late(task):
    """All clients struck with age 1: round 1 falls back to zeros (the model stays), round 2
    carries the round-1 updates, so two stale rounds equal one clean round, bit for bit."""
    clean = run(task, rounds=1)
    stale = run(task, chaos.StaleContent(1.0, max_age=1), rounds=2)
    assert torch.equal(stale.final_params, clean.final_params)
    for m in stale.metrics:
        assert m["valid"] == m["accepted"] == 8 and m["rejected"] == {}
        assert m["faults"] == {"stale_content": 8}


def test_the_same_seed_gives_the_same_bits(task):
    faults = chaos.Compose(chaos.Dropout(0.2), chaos.StaleContent(0.5, max_age=2))
    a, b = run(task, faults, rounds=3), run(task, faults, rounds=3)
    assert torch.equal(a.final_params, b.final_params)
    assert [m["faults"] for m in a.metrics] == [m["faults"] for m in b.metrics]
    assert sum(m["faults"].get("stale_content", 0) for m in a.metrics) > 0
    assert not torch.equal(a.final_params, run(task, chaos.Dropout(0.2), rounds=3).final_params)
