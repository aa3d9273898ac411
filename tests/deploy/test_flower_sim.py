"""``fedkit deploy sim``: the experiment app under Flower's simulation engine (Ray) gives the
in-process simulation's parameters."""

import importlib.util

import pytest
from deploy_helpers import deployed_params, experiment, record, simulated_params

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None, reason="flwr[simulation] (Ray) not installed"
    ),
]


def test_deploy_sim_runs_the_experiment_app_on_flowers_simulation(tmp_path, capsys):
    """``fedkit deploy sim`` of a config equals ``fedkit run`` of it."""
    from experiments.deploy_cli import main

    out = tmp_path / "run"
    overrides = ["task=digits", "rounds=2", f"out_dir={out}"]
    assert main(["sim", "--nodes", "3", *overrides]) == 0
    assert "2 of 2 rounds" in capsys.readouterr().out
    rec = record(out)
    assert [m["accepted"] for m in rec["metrics"]] == [3, 3]
    assert rec["run"]["engine_used"] == "flower-simulation"
    expected = simulated_params(experiment("task=digits", "num_clients=3", "rounds=2"), tmp_path)
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5


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
