"""A round stops waiting for a node known to be gone. On Flower's in-memory LinkState
(:mod:`flower_harness`): a node that took its message and then restarted (deactivated and
activated again: what a killed and supervised SuperNode does) is online, so Flower never
answers for it; the transport sees the new activation and gives the message up as
``node_gone`` long before the round deadline. A node that merely never answers is still
waited for until the deadline (``late``). Then, on a real supervised deployment: a
SuperNode killed mid-round costs the round about one heartbeat timeout, not the round
deadline, and the supervisor brings it back for the next round."""

from __future__ import annotations

import time

import pytest
from conftest import needs_flower
from flower_harness import HEARTBEAT_INF, Federation
from flwr.app import Error, Message

import fedkit
from fedkit.flower import FlowerTransport, HonestClient, LoopConfig
from fedkit.flower.apps import answer
from fedkit.run.driver import run
from fedkit.tasks import digits


@pytest.fixture(scope="module")
def task():
    return digits(3, key=0)


def honest(task, i):
    runtime = lambda ctx, request: HonestClient.from_node_config(task, ctx.node_config)  # noqa: E731
    return lambda message, fed: [answer(message, fed.context(i), runtime)]


def restarted(message, fed):
    """Node 2 takes its message, then its process dies and comes back: no reply."""
    node = fed.node_ids[2]
    assert fed.state.deactivate_node(node)
    assert fed.state.activate_node(node, heartbeat_interval=HEARTBEAT_INF)
    return []


def silent(message, fed):
    return []


def upload_cut(message, fed):
    """Node 2 pushed its reply but died before the reply's objects: what Flower's grid
    returns once the object pull gives up (``MESSAGE_UNAVAILABLE``), then the node restarts."""
    restarted(message, fed)
    return [
        Message(Error(code=3, reason="Reply message objects are unavailable."), reply_to=message)
    ]


def lost_reply(message, fed):
    """The same error for a node that is still there (not restarted)."""
    return [Message(Error(code=4, reason="The reply message has expired."), reply_to=message)]


def one_round(tmp_path, task, node2, deadline: float):
    loop = LoopConfig(
        round_deadline=deadline,
        sample_timeout=5.0,
        min_nodes=3,
        poll_interval=0.01,
        node_check=0.2,
    )
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=32, lr=0.1))
    tmp_path.mkdir(parents=True, exist_ok=True)
    fed = Federation(tmp_path, 3).start([honest(task, 0), honest(task, 1), node2])
    try:
        t0 = time.monotonic()
        history = run(
            task, strategy, FlowerTransport(fed.grid, loop, fed.registry()), rounds=1, key=0
        )
        return history.metrics[0], time.monotonic() - t0
    finally:
        fed.close()


def test_a_restarted_node_is_given_up_as_gone_without_waiting_for_the_deadline(tmp_path, task):
    metrics, seconds = one_round(tmp_path, task, restarted, deadline=120.0)
    assert metrics["lost"] == {"node_gone": 1}
    assert metrics["accepted"] == 2
    assert seconds < 30.0, f"the round waited {seconds:.1f} s for a node known to be gone"


def test_a_node_that_is_there_but_silent_is_waited_for_until_the_deadline(tmp_path, task):
    metrics, seconds = one_round(tmp_path, task, silent, deadline=3.0)
    assert metrics["lost"] == {"late": 1}
    assert metrics["accepted"] == 2
    assert seconds >= 3.0


def test_a_reply_lost_with_its_node_is_node_gone_and_one_lost_otherwise_is_not(tmp_path, task):
    metrics, seconds = one_round(tmp_path / "cut", task, upload_cut, deadline=120.0)
    assert metrics["lost"] == {"node_gone": 1} and metrics["accepted"] == 2, metrics
    assert seconds < 30.0
    metrics, _ = one_round(tmp_path / "lost", task, lost_reply, deadline=120.0)
    assert metrics["lost"] == {"reply_unavailable": 1} and metrics["accepted"] == 2, metrics


@pytest.mark.parametrize(
    ("code", "left", "reason"),
    [
        (5, False, "node_unavailable"),
        (3, True, "node_gone"),
        (4, True, "node_gone"),
        (3, False, "reply_unavailable"),
        (2, True, "client_error"),
        (8, False, "client_error"),
    ],
)
def test_error_replies_are_lost_by_what_flower_says_happened(code, left, reason):
    from fedkit.flower.transport import error_reason

    assert error_reason(code, left) == reason


# ---- a real deployment -------------------------------------------------------------------
@pytest.mark.deploy
@pytest.mark.slow
@needs_flower
@pytest.mark.timeout(900)
def test_a_killed_supernode_costs_a_heartbeat_timeout_and_is_restarted(tmp_path):
    from deploy_helpers import experiment, record, run_config

    from experiments.flower_app import APP
    from fedkit.flower.local import LocalDeployment
    from fedkit.flower.local.supervisor import RestartPolicy, read_restarts
    from fedkit.run import checkpoint as ckpt

    cfg = experiment("task=digits", "num_clients=3", "rounds=3", "strategy.quorum=2")
    out = tmp_path / "run"
    d = LocalDeployment(tmp_path / "deployment", nodes=3, app=APP, restart=RestartPolicy())
    try:
        d.start()
        # deadline and sample timeout far past a heartbeat timeout (10 s interval: <= 20 s)
        run_id = d.submit(run_config(cfg, out, **{"min-nodes": 3}))
        end = time.monotonic() + 600
        while not ckpt.rounds_on_disk(out / "checkpoints"):
            assert d.supervisor.status(run_id) == "running" or time.monotonic() < end
            time.sleep(0.2)
        time.sleep(1.0)  # round 2 is in flight
        killed = time.time()
        d.kill_node(2)
        status = d.wait(run_id, timeout=600)
    finally:
        d.close()
    assert status == "finished:completed"
    rounds = record(out)["metrics"]
    lost = rounds[1]["lost"]
    assert rounds[1]["accepted"] == 2 and sum(lost.values()) == 1, lost
    assert set(lost) <= {"node_gone", "node_unavailable"}, lost
    assert rounds[2]["accepted"] == 3, "the restarted node did not train in round 3"
    restarts = [e for e in read_restarts(d.run_dir / "restarts.jsonl") if e["kind"] == "node2"]
    up = [e for e in restarts if e["event"] == "restarted"]
    assert up, restarts
    # without the heartbeat/node-gone wait the round would take its 300 s deadline
    assert rounds[1]["wall_time"] < 90.0, rounds[1]["wall_time"]
    print(
        f"node kill: round 2 took {rounds[1]['wall_time']:.1f} s (round 3: "
        f"{rounds[2]['wall_time']:.1f} s), lost {lost}; node restarted "
        f"{up[-1]['at'] - killed:.1f} s after the kill after {len(restarts)} restart events"
    )
