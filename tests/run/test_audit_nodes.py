"""A Flower deployment's nodes in the audit trail (in-process Flower federation,
:mod:`flower_harness`): each node is reported once, registered with its client or refused
when no client id is left, and every verdict names the node its reply came from."""

from __future__ import annotations

import json
import os

import pytest
from flower_harness import Federation
from helpers import tiny_task

import fedkit
from fedkit.flower import FlowerTransport, HonestClient, LoopConfig
from fedkit.flower.apps import answer
from fedkit.flower.env import FLOWER_ENV
from fedkit.flower.registry import NodeRegistry
from fedkit.run.audit_log import AuditLog, Head, verify
from fedkit.run.driver import run

os.environ.update(FLOWER_ENV)
LOOP = LoopConfig(round_deadline=20.0, sample_timeout=5.0, min_nodes=3, poll_interval=0.01)


def honest(task, i):
    def behave(message, fed):
        def runtime(ctx, request):
            return HonestClient.from_node_config(task, ctx.node_config, partition=request.client)

        return [answer(message, fed.context(i), runtime)]

    return behave


def test_nodes_are_registered_or_refused_once_and_verdicts_name_them(tmp_path):
    task = tiny_task(sizes=(7, 12))  # two clients for three nodes: one node is refused
    strat = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=4, lr=0.1))
    fed = Federation(tmp_path / "fed", 3).start([honest(task, i) for i in range(3)])
    registry = NodeRegistry()
    log = tmp_path / "audit.jsonl"
    try:
        h = run(
            task,
            strat,
            FlowerTransport(fed.grid, LOOP, registry),
            rounds=2,
            key=0,
            callbacks=[AuditLog(log)],
        )
    finally:
        fed.close()
    assert verify(log, Head.from_record(h.record)).ok
    trail = [json.loads(x) for x in log.read_text().splitlines()]
    low, mid, high = sorted(fed.node_ids)
    registered = [e["data"] for e in trail if e["event"] == "node_registered"]
    refused = [e["data"] for e in trail if e["event"] == "node_refused"]
    assert registered == [
        {"node": low, "client": 0, "new": True},
        {"node": mid, "client": 1, "new": True},
    ]
    assert refused == [{"node": high, "reason": "no_free_client_id", "num_clients": 2}]
    events = [e["event"] for e in trail]
    assert events.index("node_refused") < events.index("replies")  # seen before round 1's verdicts
    for judged in (e["data"] for e in trail if e["event"] == "replies"):
        assert sorted(judged["verdicts"], key=lambda v: v["client"]) == [
            {"client": c, "node": registry.node_of(c), "reason": None, "status": "accepted"}
            for c in (0, 1)
        ]
    assert not [e for e in h.events if e["event"].startswith("node_")]  # not in the record


@pytest.fixture
def task2():
    return tiny_task(sizes=(7, 12))


def test_a_node_that_never_answers_is_lost_late_with_its_node(tmp_path, task2):
    strat = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=4, lr=0.1))
    fed = Federation(tmp_path / "fed", 2)
    fed.start([honest(task2, 0), None])  # node 1 never pulls its messages
    registry = fed.registry()
    loop = LoopConfig(round_deadline=0.5, sample_timeout=2.0, min_nodes=2, poll_interval=0.01)
    log = tmp_path / "audit.jsonl"
    try:
        h = run(
            task2,
            strat,
            FlowerTransport(fed.grid, loop, registry),
            rounds=1,
            key=0,
            callbacks=[AuditLog(log)],
        )
    finally:
        fed.close()
    assert h.metrics[0]["lost"] == {"late": 1}
    (judged,) = [json.loads(x)["data"] for x in log.read_text().splitlines() if '"replies"' in x]
    assert judged["verdicts"] == [
        {"client": 1, "node": fed.node_ids[1], "reason": "late", "status": "lost"},
        {"client": 0, "node": fed.node_ids[0], "reason": None, "status": "accepted"},
    ]
    registered = [json.loads(x)["data"] for x in log.read_text().splitlines() if "node_reg" in x]
    assert [r["new"] for r in registered] == [False, False]  # provisioned before the run
