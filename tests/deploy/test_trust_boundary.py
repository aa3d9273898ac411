"""The trust boundary of a deployment, on Flower's own LinkState and ``InMemoryGrid``
(:mod:`flower_harness`): a reply counts for the node it was asked of only if that node
signed it; a payload claiming another client is impersonation; nothing a client sends
changes who the server thinks it is. Flower accepts each forged reply below — fedkit must
refuse it."""

from __future__ import annotations

import pytest
import torch
from flower_harness import Federation
from flwr.app import ConfigRecord, Message

import fedkit
from fedkit.flower import FlowerTransport, HonestClient, LoopConfig
from fedkit.flower.apps import answer
from fedkit.flower.signing import SIGNATURE
from fedkit.flower.transport import FEDKIT
from fedkit.run.driver import run
from fedkit.tasks import digits

ROUNDS = 2
LOOP = LoopConfig(round_deadline=20.0, sample_timeout=5.0, min_nodes=3, poll_interval=0.01)


@pytest.fixture(scope="module")
def task():
    return digits(3, key=0)


@pytest.fixture(scope="module")
def strategy():
    return fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=32, lr=0.1))


@pytest.fixture(scope="module")
def expected(task, strategy):
    return fedkit.simulate(task, strategy, rounds=ROUNDS, key=0, engine="sequential").final_params


def runtime(task):
    return lambda ctx, request: HonestClient.from_node_config(task, ctx.node_config)


def honest(task, i):
    def behave(message, fed):
        return [answer(message, fed.context(i), runtime(task))]

    return behave


def transport(fed):
    return FlowerTransport(fed.grid, LOOP, fed.registry())


def deploy(tmp_path, task, strategy, behaviours):
    fed = Federation(tmp_path, 3).start(behaviours)
    try:
        return run(task, strategy, transport(fed), rounds=ROUNDS, key=0)
    finally:
        fed.close()


def test_signed_honest_replies_give_the_simulation(tmp_path, task, strategy, expected):
    h = deploy(tmp_path, task, strategy, [honest(task, i) for i in range(3)])
    assert [m["accepted"] for m in h.metrics] == [3, 3]
    assert float((h.final_params - expected).abs().max()) <= 1e-5


def test_a_reply_forged_by_another_authenticated_node_is_rejected(tmp_path, task, strategy):
    """Node 2 answers node 0's messages (Flower lets it) with a perfectly good update for
    client 0 — signed with its own key. Node 0 never gets to answer."""
    good = [honest(task, i) for i in range(3)]

    def node2(message, fed):
        out = good[2](message, fed)
        for stolen in fed.pending(0):
            ctx = fed.context(2, **{"partition-id": 0})  # node 2's key, client 0's data
            out.append(answer(stolen, ctx, runtime(task)))
        return out

    fed = Federation(tmp_path, 3)
    fed.start([None, good[1], node2])  # node 0 never gets to pull its messages
    try:
        h = run(task, strategy, transport(fed), rounds=ROUNDS, key=0)
    finally:
        fed.close()
    for m in h.metrics:
        assert m["rejected"] == {"bad_signature": 1}, m
        assert m["accepted"] == 2


def test_unsigned_and_replayed_replies_are_rejected(tmp_path, task, strategy):
    good = [honest(task, i) for i in range(3)]
    replayed: list[Message] = []

    def unsigned(message, fed):
        return [answer(message, fed.context(0, **{"signing-key": ""}), runtime(task))]

    def replayer(message, fed):
        """Round 1: an honest signed reply, kept; round 2: round 1's signed content sent
        again as the reply to the new message."""
        if not replayed:
            replayed.extend(good[1](message, fed))
            return list(replayed)
        content = replayed[0].content  # same arrays, metrics and signature
        book = dict(content.config_records[FEDKIT])
        book["round"] = int(message.content.config_records[FEDKIT]["round"])
        content[FEDKIT] = ConfigRecord(book)
        return [Message(content=content, reply_to=message)]

    fed = Federation(tmp_path, 3)
    fed.start([unsigned, replayer, good[2]])
    try:
        h = run(task, strategy, transport(fed), rounds=ROUNDS, key=0)
    finally:
        fed.close()
    assert h.metrics[0]["rejected"] == {"bad_signature": 1} and h.metrics[0]["accepted"] == 2
    assert h.metrics[1]["rejected"] == {"bad_signature": 2} and h.metrics[1]["accepted"] == 1


def test_a_signed_reply_claiming_another_client_is_impersonation(tmp_path, task, strategy):
    good = [honest(task, i) for i in range(3)]

    def liar(message, fed):
        return [answer(message, fed.context(1, impersonate=2), runtime(task))]

    h = deploy(tmp_path, task, strategy, [good[0], liar, good[2]])
    for m in h.metrics:
        assert m["rejected"] == {"impersonation": 1} and m["accepted"] == 2
        assert h.record["counters"]["rejected"] == {"impersonation": ROUNDS}


def test_the_signature_field_is_what_the_server_checks(tmp_path, task, strategy):
    """Sanity of the test itself: a node whose signature field is stripped is rejected."""
    good = [honest(task, i) for i in range(3)]

    def stripped(message, fed):
        (reply,) = good[0](message, fed)
        book = dict(reply.content.config_records[FEDKIT])
        del book[SIGNATURE]
        reply.content[FEDKIT] = ConfigRecord(book)
        return [reply]

    h = deploy(tmp_path, task, strategy, [stripped, good[1], good[2]])
    assert all(m["rejected"] == {"bad_signature": 1} for m in h.metrics)
    assert torch.isfinite(h.final_params).all()
