"""Same config and seed, same final parameters: ``fedkit deploy local`` against ``fedkit run``
for a robust chain under attack (clip + Krum, 1 of 5 nodes flipping signs: the adversary's
node runs the attack itself) and for central DP with keyed noise (the accountant and its
ε travel with the driver)."""

import pytest
from conftest import needs_flower
from deploy_helpers import deployed_params, experiment, record, simulated_params

from experiments.deploy_cli import main

pytestmark = [pytest.mark.deploy, pytest.mark.slow, needs_flower, pytest.mark.timeout(1800)]

KRUM = ("task=digits", "server=[clip,krum]", "f=1", "attack=sign_flip", "byzantine_fraction=0.2")


def deploy(tmp_path, nodes: int, overrides: tuple[str, ...]):
    out = tmp_path / "deployed"
    assert main(["local", "--nodes", str(nodes), *overrides, f"out_dir={out}"]) == 0
    return out


def test_krum_under_sign_flip_with_an_adversary_node_equals_the_simulation(tmp_path):
    overrides = (*KRUM, "num_clients=5", "rounds=2")
    out = deploy(tmp_path, 5, overrides)
    rec = record(out)
    assert rec["attack"]["controlled"] == [1]
    assert all(m["byzantine"] == 1 and m["received"] == 5 for m in rec["metrics"])
    got = deployed_params(out)
    expected = simulated_params(experiment(*overrides), tmp_path / "attacked")
    assert float((got - expected).abs().max()) <= 1e-5
    # that the node's reply is the simulation's poisoned row, not its honest update, is
    # checked without a deployment in tests/experiments/test_adversary_node.py


def test_central_dp_with_keyed_noise_equals_the_simulation_and_reports_epsilon(tmp_path):
    overrides = ("task=digits", "privacy=central", "num_clients=3", "rounds=2")
    out = deploy(tmp_path, 3, overrides)
    rec = record(out)
    sim_dir = tmp_path / "simulated"
    expected = simulated_params(experiment(*overrides), sim_dir)
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5
    sim = record(sim_dir)
    assert rec["privacy_budget"]["epsilon"] == pytest.approx(sim["privacy_budget"]["epsilon"])
    assert [m["epsilon"] for m in rec["metrics"]] == [m["epsilon"] for m in sim["metrics"]]
    assert rec["privacy"]["mechanism"] == "central"
