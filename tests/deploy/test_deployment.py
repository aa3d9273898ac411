"""A real local deployment (TLS + SuperNode authentication) running experiment configs.

One deployment of seven SuperNodes serves most tests: nodes 0–2 are honest, node 3 sends NaN
updates, node 4 trains honestly but claims to be client 0 (impersonation), node 5 holds a
privacy floor (DP-SGD with noise ≥ 1.0) and so refuses plain FedAvg, node 6's ClientApp
raises. A FedAvg run over
clients 0–2 equals ``fedkit run`` of the same config; a run over all six counts each kind of
misbehaviour and goes on. Unregistered keys and clients without the CA are refused. Every
process is torn down whatever happens."""

import subprocess
import time

import pytest
import torch
from conftest import needs_flower
from deploy_helpers import (
    deployed_params,
    experiment,
    record,
    run_config,
    simulated_params,
)

from experiments.flower_app import APP
from fedkit.flower.local import LocalDeployment, Node, free_port, stop_group
from fedkit.flower.pki import make_node_key, make_server_pki
from fedkit.run import checkpoint as ckpt

pytestmark = [pytest.mark.deploy, pytest.mark.slow, needs_flower, pytest.mark.timeout(1800)]

ROUNDS = 2
FLOOR = '{"min_noise_multiplier": 1.0}'
NODES = [
    {},
    {},
    {},
    {"corrupt": "nan"},
    {"impersonate": 0},
    {"privacy-floor": FLOOR},
    {"corrupt": "crash"},
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("deploy")
    d = LocalDeployment(run_dir, nodes=len(NODES), node_configs=NODES, app=APP)
    try:
        d.start()
        yield d
    finally:
        d.close()


def run(deployment, name: str, cfg: dict) -> dict:
    out = deployment.run_dir / name
    run_id = deployment.submit(run_config(cfg, out, **{"min-nodes": len(NODES)}))
    status = deployment.wait(run_id, timeout=1200)
    return {"status": status, "out": out, "cfg": cfg}


@pytest.fixture(scope="module")
def honest_run(deployment):
    """Clients 0..2 (nodes 3..6 hold no client of this task)."""
    cfg = experiment("task=digits", "num_clients=3", f"rounds={ROUNDS}")
    return run(deployment, "honest", cfg)


@pytest.fixture(scope="module")
def hostile_run(deployment):
    """Clients 0..6: NaN updates, an impersonator, a refusal, a crash."""
    cfg = experiment("task=digits", "num_clients=7", f"rounds={ROUNDS}")
    return run(deployment, "hostile", cfg)


def test_deployment_equals_fedkit_run_of_the_same_config(honest_run, tmp_path):
    assert honest_run["status"] == "finished:completed"
    got = deployed_params(honest_run["out"])
    expected = simulated_params(honest_run["cfg"], tmp_path)
    assert float((got - expected).abs().max()) <= 1e-5
    final = ckpt.load_latest(honest_run["out"] / "checkpoints")
    assert final.round == ROUNDS and torch.equal(final.tree["state"].params, got)


def test_every_round_is_recorded_checkpointed_and_logged(honest_run):
    rec = record(honest_run["out"])
    assert rec["format"] == "fedkit.run/1" and rec["run"]["engine_used"] == "flower-deployment"
    assert rec["labels"]["task"] == "digits" and rec["config"]["num_clients"] == 3
    assert [m["round"] for m in rec["metrics"]] == list(range(1, ROUNDS + 1))
    assert all(m["accepted"] == 3 and m["lost"] == {} for m in rec["metrics"])
    assert rec["final"]["test_accuracy"] is not None
    assert sorted(ckpt.rounds_on_disk(honest_run["out"] / "checkpoints")) == [1, 2]
    assert list(honest_run["out"].glob("events.out.tfevents.*"))
    assert (honest_run["out"] / "events.jsonl").exists()


def test_nan_impersonation_refusal_and_crash_are_counted_and_the_run_goes_on(hostile_run):
    assert hostile_run["status"] == "finished:completed"
    rec = record(hostile_run["out"])
    assert len(rec["metrics"]) == ROUNDS
    for m in rec["metrics"]:
        assert m["rejected"] == {"non_finite": 1, "impersonation": 1}, m
        assert m["lost"] == {"refused": 1, "client_error": 1}, m
        assert m["refusals"] == {"no_dp_sgd": 1}
        assert m["accepted"] == 3
    assert rec["counters"]["rejected"] == {"non_finite": ROUNDS, "impersonation": ROUNDS}


def test_a_second_run_into_a_used_out_dir_is_refused_unless_it_resumes(deployment, honest_run):
    again = deployment.submit(run_config(honest_run["cfg"], honest_run["out"]))
    assert deployment.wait(again, timeout=600) == "finished:failed"
    resumed = deployment.submit(
        run_config(honest_run["cfg"], honest_run["out"], resume=True, **{"min-nodes": 3})
    )
    assert deployment.wait(resumed, timeout=600) == "finished:completed"
    assert record(honest_run["out"])["run"]["resumed_from"] == ROUNDS


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
    node.port = free_port()
    proc = deployment._spawn(deployment.node_cmd(node), deployment.env(node.home), "intruder.log")
    try:
        code = wait_exit(proc, 300)
    finally:
        stop_group(proc)
    assert code is not None and code != 0, "an unregistered SuperNode must be refused"
    log = (deployment.run_dir / "intruder.log").read_text(errors="replace")
    assert "SuperNode ID:" not in log
    assert "Exit Code: 305" in log  # Flower's "node not authenticated"


def test_a_client_without_the_ca_cannot_connect(deployment, tmp_path):
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
