"""Per-reply verdicts: the strategy's agree with its round counters (validation, chain
filters, quorum), and a round's verdicts account for every sampled client."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import fedkit
from fedkit.aggregators import Mean
from fedkit.core.keys import key
from fedkit.filters import KrumSelect
from fedkit.replies import Reply, Verdict
from fedkit.run.plan import RunKeys, plan_round
from fedkit.run.transport import Exchange
from fedkit.run.verdicts import round_verdicts, tally

D = 5
KINDS = ("valid", "nan", "stale", "unexpected", "bad_examples", "duplicate")


def make_reply(kind: str, client: int, r: int, g: torch.Generator) -> Reply:
    update = torch.randn(D, generator=g)
    if kind == "nan":
        update[0] = float("nan")
    return Reply(
        client=99 if kind == "unexpected" else client,
        round=r - 1 if kind == "stale" else r,
        update=update,
        num_examples=0 if kind == "bad_examples" else 3,
    )


@example(kinds=["valid", "valid", "nan", "valid", "duplicate"], krum=True, quorum=1, seed=0)
@given(
    kinds=st.lists(st.sampled_from(KINDS), min_size=0, max_size=6),
    krum=st.booleans(),
    quorum=st.integers(1, 3),  # quorum 0 needs a reducer for empty rounds (DP)
    seed=st.integers(0, 2**16),
)
def test_strategy_verdicts_agree_with_the_round_counters(kinds, krum, quorum, seed):
    g = torch.Generator().manual_seed(seed)
    server = fedkit.chain(KrumSelect(f=0, m=1), Mean()) if krum else Mean()
    strat = fedkit.Strategy(
        server=server, quorum=max(quorum, 3) if krum else quorum
    )  # Krum: n >= 3
    state = strat.init(torch.zeros(D))
    clients = torch.arange(6)
    replies = []
    for i, kind in enumerate(kinds):
        if kind == "duplicate":
            replies.append(make_reply("valid", i, 1, g))
        replies.append(make_reply(kind, i, 1, g))
    _, info = strat.round(state, replies, key(seed), clients=clients)
    verdicts = info.verdicts
    assert len(verdicts) == len(replies)
    by = Counter((v.status, v.reason) for v in verdicts)
    accepted = [v.client for v in verdicts if v.status == "accepted"]
    assert sorted(accepted) == sorted(info.accepted_clients) and len(accepted) == info.accepted
    rejected = Counter({r: n for (s, r), n in by.items() if s == "rejected"})
    if info.quorum_missed:
        assert rejected.pop("quorum_missed", 0) == info.valid
    assert dict(rejected) == info.rejected
    assert info.metrics()["rejected"] == info.rejected  # what records hold is unchanged


def test_a_round_accounts_for_every_sampled_client():
    strat = fedkit.Strategy(
        server=Mean(),
        clients_per_round=5,
        stragglers=fedkit.PartialWork(fraction=0.2, policy="drop"),
    )
    state = strat.init(torch.zeros(D))
    plan = plan_round(strat, state, 8, torch.tensor([], dtype=torch.int64), RunKeys.of(key(3)))
    sampled = plan.clients.tolist()
    asked = list(plan.asked)
    straggler = next(c for c in sampled if c not in asked)
    g = torch.Generator().manual_seed(0)
    # the transport: asked[0] answered (from node 10), asked[1] forged (node 11), asked[2]
    # answered with NaN, asked[3] lost for reasons the transport did not attribute
    replies = [make_reply("valid", asked[0], 1, g), make_reply("nan", asked[2], 1, g)]
    exchange = Exchange(
        replies=replies,
        lost={"straggler": 1, "late": 1},
        rejected={"bad_signature": 1},
        verdicts=(Verdict(asked[1], "rejected", "bad_signature", node=11),),
        nodes={asked[0]: 10, asked[2]: 12},
    )
    _, info = strat.round(state, replies, plan.keys.server, clients=plan.clients)
    verdicts = round_verdicts(plan, exchange, info)
    fate = {v.client: (v.status, v.reason, v.node) for v in verdicts}
    assert sorted(fate) == sorted(sampled) and len(verdicts) == len(sampled)
    assert fate[asked[0]] == ("accepted", None, 10)
    assert fate[asked[1]] == ("rejected", "bad_signature", 11)
    assert fate[asked[2]] == ("rejected", "non_finite", 12)
    assert fate[asked[3]] == ("lost", "late", None)  # the one reason left
    assert fate[straggler] == ("lost", "straggler", None)
    assert tally(verdicts) == {
        "accepted": {"-": 1},
        "rejected": {"bad_signature": 1, "non_finite": 1},
        "lost": {"late": 1, "straggler": 1},
    }
    # two reasons left for two unexplained clients: nobody can say whose is whose
    vague = Exchange(replies=replies, lost={"straggler": 1, "late": 1, "dropped": 1})
    fates = {v.client: v.reason for v in round_verdicts(plan, vague, info) if v.status == "lost"}
    assert fates[asked[1]] == fates[asked[3]] == "unattributed"


@pytest.mark.parametrize(
    ("status", "reason"), [("accepted", "late"), ("lost", None), ("maybe", "x")]
)
def test_a_verdict_refuses_an_inconsistent_status(status, reason):
    with pytest.raises(ValueError, match=r"Verdict\.(status|reason)"):
        Verdict(1, status, reason)
