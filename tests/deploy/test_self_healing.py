"""A supervised deployment heals itself: the ServerApp process killed mid-round, later the
SuperLink killed mid-round, and nobody but the supervisor acts. Each time the run is
resubmitted with ``resume``, continues from its checkpoint and completes with the same final
parameters as ``fedkit run`` of the same config; every restart is in ``restarts.jsonl``.
The supervisor's backoff and budget, and the launcher's patience with failing status
polls, are checked without processes."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import needs_flower

from fedkit.flower.local.deployment import follow
from fedkit.flower.local.processes import DeployError
from fedkit.flower.local.supervisor import Backoff, RestartPolicy, SupervisorError


def test_backoff_doubles_up_to_its_cap_and_the_budget_bounds_restarts():
    policy = RestartPolicy(initial=1.0, factor=2.0, cap=5.0, budget=4, window=100.0, stable=10.0)
    b = Backoff(policy, started=0.0)
    delays = []
    for t in (1.0, 2.0, 3.0, 4.0):
        delays.append(b.crashed(t))
        b.restarted(t)
    assert delays == [1.0, 2.0, 4.0, 5.0]
    assert b.crashed(5.0) is None  # 4 restarts within the window: budget spent
    late = Backoff(policy, started=0.0, restarts=[1.0, 2.0, 3.0, 4.0])
    assert late.crashed(200.0) == 1.0  # the window moved on and the process had been stable


def test_follow_survives_transient_status_failures_and_names_a_lasting_one(capsys):
    answers = iter([RuntimeError("connection reset"), TimeoutError("deadline"), False, True])

    def flaky():
        a = next(answers)
        if isinstance(a, Exception):
            raise a
        return a

    follow(_nowhere(), flaky, every=0.01, patience=5.0)
    assert "status check failed (RuntimeError)" in capsys.readouterr().out

    def broken():
        raise ConnectionError("SuperLink unreachable")

    t0 = time.monotonic()
    with pytest.raises(DeployError, match="ConnectionError: SuperLink unreachable"):
        follow(_nowhere(), broken, every=0.05, patience=0.5)
    assert time.monotonic() - t0 < 5.0

    def fatal():
        raise SupervisorError("superlink crashed more than 3 times")

    with pytest.raises(SupervisorError):  # not retried
        follow(_nowhere(), fatal, every=0.01, patience=60.0)


def _nowhere():
    from pathlib import Path

    return Path("/nonexistent/checkpoints")


@pytest.mark.deploy
@pytest.mark.slow
@needs_flower
@pytest.mark.timeout(1500)
def test_killed_serverapp_and_superlink_are_restarted_and_the_run_ends_as_uninterrupted(tmp_path):
    from deploy_helpers import deployed_params, experiment, record, run_config, simulated_params

    from experiments.flower_app import APP
    from fedkit.flower.local import LocalDeployment
    from fedkit.flower.local.processes import tagged_commands
    from fedkit.flower.local.supervisor import read_restarts
    from fedkit.run import checkpoint as ckpt

    cfg = experiment("task=digits", "num_clients=3", "rounds=4")
    out = tmp_path / "run"
    d = LocalDeployment(tmp_path / "deployment", nodes=3, app=APP, restart=RestartPolicy())

    def wait_round(run_id: int, r: int) -> None:
        end = time.monotonic() + 600
        while True:
            done = ckpt.rounds_on_disk(out / "checkpoints")
            if done and done[0] >= r:
                return
            assert time.monotonic() < end, f"round {r} not checkpointed in 600 s"
            d.supervisor.status(run_id)  # ticks the supervisor
            time.sleep(0.3)

    kills = {}
    try:
        d.start()
        run_id = d.submit(run_config(cfg, out, **{"min-nodes": 3}))
        wait_round(run_id, 1)
        time.sleep(1.0)  # round 2 in flight
        apps = tagged_commands(d.token, d.run_dir / "superlink", "flwr-serverapp")
        assert apps, "no ServerApp process found"
        for pid in apps:
            os.kill(pid, signal.SIGKILL)
        kills["serverapp"] = time.time()
        wait_round(run_id, 3)
        time.sleep(1.0)  # round 4 in flight
        os.kill(d.superlink.pid, signal.SIGKILL)
        kills["superlink"] = time.time()
        status = d.wait(run_id, timeout=900)
    finally:
        d.close()
    assert status == "finished:completed"
    expected = simulated_params(cfg, tmp_path / "simulated")
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5
    rec = record(out)
    assert [m["round"] for m in rec["metrics"]] == [1, 2, 3, 4]
    restarts = read_restarts(d.run_dir / "restarts.jsonl")
    kinds = [e["kind"] for e in restarts if e["event"] == "restarted"]
    assert "serverapp" in kinds and "superlink" in kinds, restarts
    resumes = [e for e in rec["events"] if e.get("event") == "resume"]
    assert [e["restored_round"] for e in resumes][-2:] == [1, 3], resumes
    recovery = {
        kind: min(float(e["at"]) for e in resumes if float(e["at"]) > at) - at
        for kind, at in kills.items()
    }
    print(f"kill -> resumed ServerApp restored its checkpoint: {recovery}")
