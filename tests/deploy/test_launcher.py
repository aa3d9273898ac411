"""The warm launcher really serves a deployment's messages: a 3-node deployment (TLS + node
auth, SuperNodes with ``--isolation process`` and short idle sleeps, one launcher per node)
trains 2 rounds to the same parameters as ``fedkit run`` in process; every message ran in a
child of its own (distinct pids, exit code 0, one per node and round, none of them a
``flwr-clientapp`` interpreter); the launchers stop cleanly with the deployment; a launcher
without the node's SuperExec auth secret is refused. Also: the SuperNode patch caps
Flower's sleeps and leaves everything else alone."""

import re
import subprocess
import time

import pytest
from conftest import needs_flower
from deploy_helpers import deployed_params, experiment, record, run_config, simulated_params

from experiments.flower_app import APP
from fedkit.flower.local import LocalDeployment, launcher
from fedkit.flower.local import supernode as fast_supernode
from fedkit.flower.local.deployment import script

pytestmark = [pytest.mark.deploy, pytest.mark.slow, needs_flower, pytest.mark.timeout(600)]

NODES, ROUNDS = 3, 2
TASK_LINE = re.compile(r"task (\d+): pid (\d+) (started|exited (-?\d+))")


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("warm")
    cfg = experiment("task=digits", f"num_clients={NODES}", f"rounds={ROUNDS}")
    out = run_dir / "out"
    d = LocalDeployment(run_dir / "deployment", nodes=NODES, app=APP, warm=True)
    with d:
        d.start()
        run_id = d.submit(run_config(cfg, out, **{"min-nodes": NODES, "poll-interval": 0.05}))
        status = d.wait(run_id, timeout=300, poll=0.2)
        commands = [" ".join(node.proc.args) for node in d.node_list]
        node = d.node_list[0]  # a launcher without the node's SuperExec auth secret
        intruder = subprocess.run(
            [*script(launcher), "--appio-api-address", f"127.0.0.1:{node.port}", "--preload"],
            env=d.node_env(node),
            capture_output=True,
            text=True,
            timeout=120,
        )
    logs = [(d.run_dir / f"node{i}-launcher.log").read_text() for i in range(NODES)]
    codes = [node.launcher.returncode for node in d.node_list]
    return {
        "cfg": cfg,
        "out": out,
        "status": status,
        "logs": logs,
        "codes": codes,
        "cmd": commands,
        "intruder": intruder,
    }


def test_warm_deployment_equals_fedkit_run(warm_run, tmp_path):
    assert warm_run["status"] == "finished:completed"
    assert all(m["accepted"] == NODES for m in record(warm_run["out"])["metrics"])
    got = deployed_params(warm_run["out"])
    expected = simulated_params(warm_run["cfg"], tmp_path)
    assert float((got - expected).abs().max()) <= 1e-5


def test_every_message_ran_in_a_child_of_its_own(warm_run):
    assert all("--isolation process" in c for c in warm_run["cmd"])  # no SuperExec of Flower's
    started, exited = {}, {}
    for log in warm_run["logs"]:
        tasks = [m.groups() for m in TASK_LINE.finditer(log)]
        node_started = {t: int(pid) for t, pid, what, _ in tasks if what == "started"}
        assert len(node_started) == ROUNDS, log[-3000:]  # one train message per round
        started.update(node_started)
        exited.update({t: (int(pid), int(code)) for t, pid, _, code in tasks if code})
    pids = list(started.values())
    assert len(set(pids)) == len(pids) == NODES * ROUNDS
    assert exited == {t: (pid, 0) for t, pid in started.items()}


def test_launchers_stop_cleanly_with_the_deployment(warm_run):
    assert warm_run["codes"] == [0] * NODES
    assert all(f"stopped after {ROUNDS} tasks" in log for log in warm_run["logs"])


def test_only_the_nodes_own_launcher_may_take_its_tasks(warm_run):
    intruder = warm_run["intruder"]
    assert intruder.returncode == 1, intruder.stderr[-2000:]
    assert "401 Unauthorized" in intruder.stderr and "stopped after 0 tasks" in intruder.stderr


def test_the_supernode_patch_only_caps_sleeps(monkeypatch):
    import flwr.supernode.start_client_internal as loop
    from flwr.supercore.inflatable import inflatable_utils

    monkeypatch.setattr(loop, "time", loop.time)
    monkeypatch.setattr(loop, "pull_objects", loop.pull_objects)
    fast_supernode.patch(0.02)
    t0 = time.monotonic()
    loop.time.sleep(3)  # the fleet loop's idle sleep
    assert time.monotonic() - t0 < 0.5
    assert loop.time.monotonic is time.monotonic and loop.time.time is time.time
    assert loop.pull_objects.func is inflatable_utils.pull_objects
    assert loop.pull_objects.keywords == {"initial_backoff": 0.02, "backoff_cap": 0.2}
