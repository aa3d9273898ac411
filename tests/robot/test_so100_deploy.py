"""The SO-100 task through a real Flower deployment: a SuperLink and 3 SuperNodes (TLS +
SuperNode authentication, as ``fedkit deploy local`` starts them) running the experiment
config ``task=so100 so100@task=fixture task.directory=DIR`` (the offline fixture written
once here), 3 clients, FedAvg for 2 rounds. ``fedkit run`` of the same config in process
gives the same losses and parameters.

Every Flower process gets HF_HUB_OFFLINE=1 (this module's environment, inherited, and
:data:`fedkit.flower.env.OFFLINE_ENV`). The run's results record (``record.json``) holds
the held-out action loss after each round.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from experiments.flower_app import APP, compose
from experiments.run import run_experiment
from fedkit.core.keys import key, split
from fedkit.flower.env import FLOWER_ENV
from fedkit.flower.local import DeployError, LocalDeployment, flower_bin
from fedkit.tasks.registry import build_task
from fedkit.tasks.so100.fixture import make_offline_fixture

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[_name] = "1"
os.environ.update(FLOWER_ENV)


def _flower_installed() -> bool:
    try:
        flower_bin("flower-superlink")
    except DeployError:
        return False
    return True


pytestmark = [
    pytest.mark.robot,
    pytest.mark.deploy,
    pytest.mark.slow,
    pytest.mark.skipif(not _flower_installed(), reason="flower-superlink is not installed"),
    pytest.mark.timeout(900),
]

ROUNDS = 2
CLIENTS = 3


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One deployment run: its final status, results record and experiment config."""
    base = tmp_path_factory.mktemp("so100_deploy")
    make_offline_fixture(base / "fixture")
    out = base / "run"
    cfg = compose(
        [
            "task=so100",
            "so100@task=fixture",
            f"task.directory={base / 'fixture'}",
            f"num_clients={CLIENTS}",
            f"rounds={ROUNDS}",
            "client.lr=0.01",
            "seed=0",
        ]
    )
    run_config = {
        "experiment": json.dumps(cfg),
        "out-dir": str(out),
        "min-nodes": CLIENTS,
        "round-deadline": 600.0,
        "sample-timeout": 300.0,
    }
    with LocalDeployment(base / "deployment", nodes=CLIENTS, app=APP) as deployment:
        deployment.start()
        status = deployment.wait(deployment.submit(run_config), timeout=800, poll=5.0)
    record_path = out / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    return {"status": status, "record": record, "cfg": cfg, "dir": out, "base": base}


def test_the_deployment_lowers_the_held_out_action_loss(deployed):
    assert deployed["status"] == "finished:completed", deployed["record"]
    record = deployed["record"]
    assert record["run"]["engine_used"] == "flower-deployment"
    assert record["task"]["num_clients"] == CLIENTS
    metrics = record["metrics"]
    assert [m["round"] for m in metrics] == list(range(1, ROUNDS + 1))
    assert all(m["accepted"] == CLIENTS and m["lost"] == {} for m in metrics), metrics
    losses = [m["test_loss"] for m in metrics]
    # The initial held-out loss: the same task at the server's initial parameters,
    # ``init(k_init)`` with ``k_init = split(key(seed), 4)[0]``.
    task = build_task(deployed["cfg"]["task"])
    initial = task.evaluate(task.init(split(key(0), 4)[0]))["test_loss"]
    assert losses[-1] < initial, (initial, losses)
    assert losses[-1] < losses[0], losses

    # fedkit run of the same config in process (sequential engine; one torch thread, as the
    # ClientApps run: config threads=1): same losses, same final parameters.
    local = deployed["base"] / "in_process"
    expected = run_experiment(
        {**deployed["cfg"], "engine": {"name": "sequential"}}, local, progress=False
    )
    assert losses == pytest.approx([m["test_loss"] for m in expected["metrics"]], rel=1e-5)
    got = load_file(str(deployed["dir"] / "record.safetensors"))["params"]
    want = load_file(str(local / "record.safetensors"))["params"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
