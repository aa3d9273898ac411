"""A deployed round is one trace: the server's spans (``D/trace.jsonl``) and every node's
``client.train`` spans (``D/trace-node<i>.jsonl``, written by the ClientApps) share the trace id,
and each node's span is a child of the server's ``send`` span of its round, which the train
message carried as a W3C traceparent. Fast: the same over Flower's in-memory grid; slow: a
real SuperLink and 3 SuperNodes through ``fedkit deploy local --trace``."""

from __future__ import annotations

import pytest
from conftest import needs_flower
from deploy_helpers import record
from flower_harness import Federation

import fedkit
from experiments.deploy_cli import main
from fedkit.flower import FlowerTransport, HonestClient, LoopConfig
from fedkit.flower.apps import answer
from fedkit.run.callbacks import Checkpoints
from fedkit.run.driver import run
from fedkit.run.tracing import Tracing, load
from fedkit.tasks import digits

NODES, ROUNDS = 3, 2


def check_joined(server: list[dict], nodes: list[list[dict]], rounds: int) -> None:
    """The server's tree of each round, and every node's client.train span of that round a
    child of the round's send span, in the server's trace, within the round."""
    (root,) = [s for s in server if s["parent_id"] is None]
    assert root["name"] == "run" and root["resource"]["service.name"] == "fedkit-server"
    trace_id = root["trace_id"]
    assert {s["trace_id"] for s in server} == {trace_id}
    by_id = {s["span_id"]: s for s in server}
    rounds_ = sorted(
        (s for s in server if s["parent_id"] == root["span_id"]),
        key=lambda s: s["attributes"]["fedkit.round"],
    )
    assert [r["attributes"]["fedkit.round"] for r in rounds_] == list(range(1, rounds + 1))
    node_ids = set()
    for r in rounds_:
        phases = {s["name"]: s for s in server if s["parent_id"] == r["span_id"]}
        assert set(phases) == {"send", "collect", "aggregate", "evaluate", "checkpoint"}
        send = phases["send"]
        assert send["attributes"]["fedkit.messages"] == len(nodes)
        for i, spans in enumerate(nodes):
            (mine,) = [
                s
                for s in spans
                if s["attributes"]["fedkit.round"] == r["attributes"]["fedkit.round"]
            ]
            assert mine["name"] == "client.train"
            assert mine["trace_id"] == trace_id
            assert mine["parent_id"] == send["span_id"]
            assert mine["parent_id"] in by_id
            assert mine["attributes"]["fedkit.client"] == i
            assert mine["attributes"]["fedkit.outcome"] == "trained"
            assert mine["resource"]["service.name"] == "fedkit-client"
            assert mine["resource"]["fedkit.partition"] == i
            node_ids.add(mine["resource"]["fedkit.node.id"])
            # one clock on loopback: the node trained after the send began and before the
            # server had collected its reply
            assert send["start"] <= mine["start"] <= mine["end"] <= phases["collect"]["end"]
    assert len(node_ids) == len(nodes)
    for spans in nodes:
        assert len(spans) == rounds


def test_client_spans_join_the_servers_trace_over_flowers_grid(tmp_path):
    task = digits(NODES, key=0)
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=32, lr=0.1))
    files = [tmp_path / f"node{i}.jsonl" for i in range(NODES)]

    def node(i):
        def behave(message, fed):
            ctx = fed.context(i, **{"trace-file": str(files[i])})
            return [
                answer(
                    message, ctx, lambda c, r: HonestClient.from_node_config(task, c.node_config)
                )
            ]

        return behave

    fed = Federation(tmp_path, NODES).start([node(i) for i in range(NODES)])
    loop = LoopConfig(round_deadline=20.0, sample_timeout=5.0, min_nodes=NODES, poll_interval=0.01)
    try:
        h = run(
            task,
            strategy,
            FlowerTransport(fed.grid, loop, fed.registry()),
            rounds=ROUNDS,
            key=0,
            checkpoints=Checkpoints(tmp_path / "checkpoints"),  # as fedkit.flower.serve has
            callbacks=[Tracing(tmp_path / "trace.jsonl")],
        )
    finally:
        fed.close()
    assert [m["accepted"] for m in h.metrics] == [NODES] * ROUNDS
    check_joined(load(tmp_path / "trace.jsonl"), [load(f) for f in files], ROUNDS)


@pytest.mark.deploy
@pytest.mark.slow
@needs_flower
@pytest.mark.timeout(900)
def test_deploy_local_trace_joins_every_nodes_spans_to_the_servers_send(tmp_path):
    out = tmp_path / "out"
    args = ["local", "--nodes", str(NODES), "--trace", "task=digits", f"num_clients={NODES}"]
    assert main([*args, f"rounds={ROUNDS}", f"out_dir={out}"]) == 0
    rec = record(out)
    assert len(rec["metrics"]) == ROUNDS
    server = load(out / "trace.jsonl")
    assert rec["trace"]["trace_id"] == server[0]["trace_id"]
    root = next(s for s in server if s["name"] == "run")
    assert root["resource"]["fedkit.run.fingerprint"] == rec["run"]["fingerprint"]
    nodes = [load(out / f"trace-node{i}.jsonl") for i in range(NODES)]
    check_joined(server, nodes, ROUNDS)
