"""Strategy: keyed sampling, straggler plans, the pure round with quorum and rejections."""

from __future__ import annotations

import attrs
import pytest
import torch
from helpers import Mean
from hypothesis import given
from hypothesis import strategies as st

import fedkit
from fedkit.replies import Reply


def strat(**kw):
    return fedkit.Strategy(client=fedkit.ClientConfig(epochs=5), server=Mean(), **kw)


@given(k=st.integers(1, 30), m=st.integers(1, 30), seed=st.integers(0, 2**30))
def test_sampling_is_sorted_distinct_and_keyed(k, m, seed):
    m = min(m, k)
    s = strat(clients_per_round=m)
    state = s.init(torch.zeros(3))
    picked = s.sample(state, k, fedkit.key(seed))
    assert picked.dtype == torch.int64 and picked.numel() == m
    assert (
        torch.equal(picked, torch.unique(picked))
        and int(picked.min()) >= 0
        and int(picked.max()) < k
    )
    assert torch.equal(picked, s.sample(state, k, fedkit.key(seed)))


def test_sampling_varies_with_the_key_and_fraction_rounds():
    s = strat(clients_per_round=5)
    state = s.init(torch.zeros(3))
    draws = {tuple(s.sample(state, 50, fedkit.key(i)).tolist()) for i in range(10)}
    assert len(draws) == 10
    assert strat(fraction=0.25).num_sampled(10) == 2
    assert strat(fraction=0.01).num_sampled(10) == 1
    assert strat().num_sampled(7) == 7
    with pytest.raises(ValueError, match="exceeds the 4 clients"):
        s.num_sampled(4)
    with pytest.raises(ValueError, match="not both"):
        strat(clients_per_round=2, fraction=0.5)


def test_straggler_plans():
    clients = torch.arange(10)
    work, straggler = strat(stragglers=fedkit.PartialWork(0.9, "partial")).plan_work(
        clients, fedkit.key(0)
    )
    assert int(straggler.sum()) == 9
    assert bool((work[~straggler] == 5).all()) and bool(((work >= 1) & (work <= 5)).all())
    assert len(set(work[straggler].tolist())) > 1
    work, straggler = strat(stragglers=fedkit.PartialWork(0.3, "drop")).plan_work(
        clients, fedkit.key(0)
    )
    assert int(straggler.sum()) == 3 and torch.equal(work == 0, straggler)
    work, straggler = strat().plan_work(clients, fedkit.key(0))
    assert bool((work == 5).all()) and not bool(straggler.any())


def reply(client, update, n, round=1):
    return Reply(
        client=client,
        round=round,
        update=torch.as_tensor(update, dtype=torch.float32),
        num_examples=n,
    )


def test_round_takes_the_weighted_mean_step_and_is_pure():
    s = strat()
    state = s.init(torch.tensor([1.0, 1.0]))
    replies = [reply(4, [3.0, 0.0], 1), reply(2, [0.0, 3.0], 2)]
    new, info = s.round(state, replies, fedkit.key(0), clients=torch.tensor([2, 4, 7]))
    torch.testing.assert_close(new.params, torch.tensor([2.0, 3.0]))
    assert new.round == 1 and state.round == 0 and torch.equal(state.params, torch.ones(2))
    assert (info.expected, info.received, info.valid, info.accepted) == (3, 2, 2, 2)
    assert info.accepted_clients == (2, 4) and not info.quorum_missed


def test_rejected_replies_are_counted_and_the_round_goes_on():
    s = strat()
    state = s.init(torch.zeros(2))
    replies = [
        reply(0, [1.0, 1.0], 1),
        reply(1, [float("nan"), 0.0], 1),
        reply(0, [5.0, 5.0], 1),
        reply(2, [1.0, 1.0], 1, round=0),
        reply(9, [1.0, 1.0], 1),
    ]
    new, info = s.round(state, replies, fedkit.key(0), clients=torch.tensor([0, 1, 2]))
    torch.testing.assert_close(new.params, torch.ones(2))
    assert info.rejected == {"non_finite": 1, "duplicate": 1, "stale": 1, "unexpected": 1}
    assert (info.received, info.valid, info.accepted) == (5, 1, 1)


def test_missed_quorum_skips_the_update_but_advances_the_round():
    s = strat(quorum=2)
    state = s.init(torch.zeros(2))
    new, info = s.round(
        state, [reply(0, [1.0, 1.0], 3)], fedkit.key(0), clients=torch.tensor([0, 1])
    )
    assert info.quorum_missed and info.accepted == 0 and new.round == 1
    assert torch.equal(new.params, state.params) and new.chain_state is state.chain_state
    new, info = s.round(state, [], fedkit.key(0), clients=torch.tensor([0, 1]))
    assert info.quorum_missed and info.received == 0


def _drop_first(updates, weights, *, key=None):
    w = weights.clone()
    w[0] = 0.0
    return updates, w


@attrs.frozen
class DropFirst(fedkit.KernelFilter):
    kernel = staticmethod(_drop_first)
    reason = "drop_first"


def test_chain_filter_rejections_are_counted():
    s = fedkit.Strategy(server=fedkit.chain(DropFirst(), Mean()))
    state = s.init(torch.zeros(1))
    new, info = s.round(
        state,
        [reply(0, [10.0], 1), reply(1, [2.0], 1)],
        fedkit.key(0),
        clients=torch.tensor([0, 1]),
    )
    torch.testing.assert_close(new.params, torch.tensor([2.0]))
    assert info.valid == 2 and info.accepted == 1 and info.rejected == {"drop_first": 1}
    assert info.accepted_clients == (1,)


def test_a_lone_component_is_wrapped_in_a_chain():
    assert isinstance(strat().server, fedkit.Chain)
    with pytest.raises(TypeError, match="Chain or component"):
        fedkit.Strategy(server="mean")


@given(
    claimed=st.integers(1, 10**6),
    honest=st.lists(st.integers(1, 100), min_size=1, max_size=8),
)
def test_uniform_weighting_gives_a_client_no_weight_for_claiming_examples(claimed, honest):
    # an attacker (client 0) pushes +1 on coordinate 0 and claims `claimed` examples
    replies = [reply(0, [1.0, 0.0], claimed)] + [
        reply(c, [0.0, 1.0], n) for c, n in enumerate(honest, start=1)
    ]
    clients = torch.arange(len(replies))
    state = strat().init(torch.zeros(2))
    by_examples, _ = strat().round(state, replies, fedkit.key(0), clients=clients)
    uniform, _ = strat(weighting="uniform").round(state, replies, fedkit.key(0), clients=clients)
    n = len(replies)
    torch.testing.assert_close(uniform.params, torch.tensor([1 / n, (n - 1) / n]))
    share = claimed / (claimed + sum(honest))
    torch.testing.assert_close(by_examples.params, torch.tensor([share, 1 - share]))
    with pytest.raises(ValueError, match="weighting must be one of"):
        strat(weighting="votes")
