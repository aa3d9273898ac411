"""``engine=flower-sim``: the same apps under Flower's simulation engine (Ray) give the
in-process simulation's parameters."""

import importlib.util
import json

import pytest
import torch

from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.run import checkpoint as ckpt
from fedkit.simulation import simulate

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="flwr[simulation] (Ray) not installed"
    ),
]


def test_flower_simulation_matches_in_process_simulation(tmp_path):
    from fedkit.flower.sim import run_flower_simulation

    config = {"task-clients": 3, "rounds": 2, "seed": 0, "round-deadline": 600.0}
    record = run_flower_simulation(tmp_path / "run", config)
    assert [m["accepted"] for m in record["metrics"]] == [3, 3]
    settings = Settings.from_run_config(config)
    expected = simulate(
        build_task(settings), build_strategy(settings), rounds=2, key=0, engine="sequential"
    )
    got = ckpt.load_latest(tmp_path / "run" / "checkpoints").tree["state"].params
    torch.testing.assert_close(got, expected.final_params, rtol=1e-5, atol=1e-6)


def test_deploy_sim_command_runs_the_app_on_flowers_simulation(tmp_path, capsys):
    from experiments.deploy_cli import main

    run_dir = str(tmp_path / "run")
    deadline = "round-deadline=600.0"
    code = main(["sim", "--clients", "2", "--rounds", "1", "--run-dir", run_dir, "-c", deadline])
    assert code == 0
    record = json.loads((tmp_path / "run" / "logs" / "record.json").read_text())
    assert [m["accepted"] for m in record["metrics"]] == [2]
    assert "1 of 1 rounds" in capsys.readouterr().out


def test_only_rays_node_start_timeout_is_retried():
    from fedkit.flower.sim import _ray_start_timed_out

    def chained(inner: Exception) -> RuntimeError:
        try:
            try:
                raise inner
            except Exception as exc:
                raise RuntimeError("Simulation Runtime crashed.") from exc
        except RuntimeError as outer:
            return outer

    assert _ray_start_timed_out(chained(Exception("The current node timed out during startup.")))
    assert not _ray_start_timed_out(chained(ValueError("a real error in the app")))
