"""A real local deployment (TLS + SuperNode authentication): equivalence with the in-process
simulation, malformed updates rejected and counted, unregistered keys and clients without
the CA refused. One deployment (4 SuperNodes, node 3 sends NaN updates) serves every test
in this module; it is torn down (every process group) whatever happens."""

import subprocess
import time

import pytest
import torch
from conftest import needs_flower

from fedkit.flower.local import LocalDeployment, Node
from fedkit.flower.pki import make_node_key, make_server_pki
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.run import checkpoint as ckpt
from fedkit.simulation import simulate

pytestmark = [pytest.mark.deploy, pytest.mark.slow, needs_flower, pytest.mark.timeout(1800)]

ROUNDS = 2
BASE = {"rounds": ROUNDS, "seed": 0, "min-nodes": 4, "round-deadline": 300.0}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("deploy")
    d = LocalDeployment(run_dir, nodes=4, node_configs=[{}, {}, {}, {"corrupt": "nan"}])
    try:
        d.start()
        yield d
    finally:
        d.close()


def run(deployment, name: str, **config) -> dict:
    out = deployment.run_dir / name
    run_config = {
        **BASE,
        **config,
        "checkpoint-dir": str(out / "checkpoints"),
        "log-dir": str(out / "logs"),
    }
    run_id = deployment.submit(run_config)
    status = deployment.wait(run_id, timeout=1200)
    return {"status": status, "dir": out, "config": run_config}


@pytest.fixture(scope="module")
def honest_run(deployment):
    """Clients 0..2 (node 3 holds no client of this task)."""
    return run(deployment, "honest", **{"task-clients": 3})


@pytest.fixture(scope="module")
def malicious_run(deployment):
    """Clients 0..3; client 3's node sends NaN updates."""
    return run(deployment, "malicious", **{"task-clients": 4})


def record(result) -> dict:
    import json

    return json.loads((result["dir"] / "logs" / "record.json").read_text())


def test_deployment_final_parameters_equal_the_simulation(honest_run):
    assert honest_run["status"] == "finished:completed"
    settings = Settings.from_run_config(honest_run["config"])
    task, strategy = build_task(settings), build_strategy(settings)
    expected = simulate(task, strategy, rounds=ROUNDS, key=0, engine="sequential")
    final = ckpt.load_latest(honest_run["dir"] / "checkpoints")
    assert final.round == ROUNDS
    got = final.tree["state"].params
    torch.testing.assert_close(got, expected.final_params, rtol=1e-5, atol=1e-6)


def test_every_round_is_recorded_checkpointed_and_logged(honest_run):
    rec = record(honest_run)
    assert rec["format"] == "fedkit.run/1"
    assert [m["round"] for m in rec["metrics"]] == list(range(1, ROUNDS + 1))
    assert all(m["accepted"] == 3 and m["lost"] == {} for m in rec["metrics"])
    assert rec["final"]["test_accuracy"] is not None
    assert sorted(ckpt.rounds_on_disk(honest_run["dir"] / "checkpoints")) == [1, 2]
    assert list((honest_run["dir"] / "logs").glob("events.out.tfevents.*"))


def test_nan_updates_are_rejected_counted_and_the_run_goes_on(malicious_run):
    assert malicious_run["status"] == "finished:completed"
    rec = record(malicious_run)
    assert len(rec["metrics"]) == ROUNDS
    for m in rec["metrics"]:
        assert m["rejected"] == {"non_finite": 1}
        assert m["accepted"] == 3
    assert rec["counters"]["rejected"] == {"non_finite": ROUNDS}


def extra_node(deployment, name: str) -> Node:
    key, pub = make_node_key(deployment.run_dir / "pki", name)
    return Node(99, deployment.run_dir / name, 0, key, pub, {"partition-id": 0})


def wait_exit(proc: subprocess.Popen, timeout: float) -> int | None:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


def test_a_node_with_an_unregistered_key_is_refused(deployment):
    node = extra_node(deployment, "intruder")
    from fedkit.flower.local import free_port

    node.port = free_port()
    proc = deployment._spawn(deployment.node_cmd(node), deployment.env(node.home), "intruder.log")
    try:
        code = wait_exit(proc, 300)
    finally:
        from fedkit.flower.local import stop_group

        stop_group(proc)
    assert code is not None and code != 0, "an unregistered SuperNode must be refused"
    log = (deployment.run_dir / "intruder.log").read_text(errors="replace")
    assert "SuperNode ID:" not in log
    assert "Exit Code: 305" in log  # Flower's "node not authenticated"


def test_a_client_without_the_ca_cannot_connect(deployment, tmp_path):
    from fedkit.flower.local import free_port, stop_group

    other_ca = make_server_pki(tmp_path / "other").ca
    node = deployment.node_list[0]
    cmd = deployment.node_cmd(node)
    cmd[cmd.index("--root-certificates") + 1] = str(other_ca)
    cmd[cmd.index("--port") + 1] = str(free_port())
    cmd[cmd.index("--max-retries") + 1] = "2"
    cmd[cmd.index("--max-wait-time") + 1] = "30"
    start = time.monotonic()
    proc = deployment._spawn(cmd, deployment.env(tmp_path / "home"), "no-ca.log")
    try:
        code = wait_exit(proc, 300)
    finally:
        stop_group(proc)
    log = (deployment.run_dir / "no-ca.log").read_text(errors="replace")
    assert "SuperNode ID:" not in log, f"connected without the CA after {time.monotonic() - start}"
    assert code is not None and code != 0
    assert "CERTIFICATE_VERIFY_FAILED" in log
