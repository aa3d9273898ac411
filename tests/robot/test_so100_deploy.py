"""The SO-100 task through a real Flower deployment: a SuperLink and 3 SuperNodes (TLS +
SuperNode authentication, as ``fedkit deploy local`` starts them), the fedkit ServerApp and
ClientApp building the task from the run config (``task = "so100"``, ``task-dir`` = the
offline fixture written once here), 3 clients, FedAvg for 2 rounds. The very same task and
strategy in process (:func:`fedkit.simulate`) give the same losses and parameters.

Every Flower process gets HF_HUB_OFFLINE=1 (this module's environment, inherited, and
:data:`fedkit.flower.env.OFFLINE_ENV`). The run's results record (``record.json``) holds
the held-out action loss after each round.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from fedkit.core.keys import key, split
from fedkit.flower.env import FLOWER_ENV
from fedkit.flower.local import DeployError, LocalDeployment, flower_bin
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.run import checkpoint as ckpt
from fedkit.simulation import simulate
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
    """One deployment run: its final status, results record and run config."""
    base = tmp_path_factory.mktemp("so100_deploy")
    make_offline_fixture(base / "fixture")
    out = base / "run"
    config = {
        "task": "so100",
        "task-dir": str(base / "fixture"),
        "task-clients": CLIENTS,
        "seed": 0,
        "rounds": ROUNDS,
        "lr": 0.01,
        "local-epochs": 1,
        "min-nodes": CLIENTS,
        "round-deadline": 600.0,
        "sample-timeout": 300.0,
        "checkpoint-dir": str(out / "checkpoints"),
        "log-dir": str(out / "logs"),
    }
    with LocalDeployment(base / "deployment", nodes=CLIENTS) as deployment:
        deployment.start()
        # Each status poll is a `flwr` CLI process (~1 s of CPU): poll rarely on 2 cores.
        status = deployment.wait(deployment.submit(config), timeout=800, poll=5.0)
    record_path = out / "logs" / "record.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else None
    return {"status": status, "record": record, "config": config, "dir": out}


def test_the_deployment_lowers_the_held_out_action_loss(deployed):
    assert deployed["status"] == "finished:completed", deployed["record"]
    record = deployed["record"]
    assert record["run"]["engine_used"] == "flower-deployment"
    assert record["task"]["num_clients"] == CLIENTS
    metrics = record["metrics"]
    assert [m["round"] for m in metrics] == list(range(1, ROUNDS + 1))
    assert all(m["accepted"] == CLIENTS and m["lost"] == {} for m in metrics), metrics
    losses = [m["test_loss"] for m in metrics]
    # The initial held-out loss: the same task (same run config) at the server's initial
    # parameters, ``init(k_init)`` with ``k_init = split(key(seed), 3)[0]``.
    settings = Settings.from_run_config(deployed["config"])
    task = build_task(settings)
    initial = task.evaluate(task.init(split(key(0), 3)[0]))["test_loss"]
    assert losses[-1] < initial, (initial, losses)
    assert losses[-1] < losses[0], losses

    # The same task and strategy in process: same losses, same final parameters. The
    # ClientApps run with one torch thread (OMP_NUM_THREADS=1); so does this simulation, or
    # the order of float reductions differs (2.6e-5 on 35 of 45760 parameters, seen here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = simulate(
            task,
            build_strategy(settings),
            rounds=ROUNDS,
            key=0,
            engine="sequential",
            progress=False,
        )
    finally:
        torch.set_num_threads(threads)
    assert losses == pytest.approx([m["test_loss"] for m in expected.metrics], rel=1e-5)
    final = ckpt.load_latest(deployed["dir"] / "checkpoints")
    assert final.round == ROUNDS
    torch.testing.assert_close(
        final.tree["state"].params, expected.final_params, rtol=1e-5, atol=1e-6
    )
