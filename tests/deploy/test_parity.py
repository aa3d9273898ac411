"""Same config and seed, same final parameters: ``fedkit deploy local`` against ``fedkit run``
for a robust chain under attack (clip + Krum, 1 of 5 nodes flipping signs: the adversary's
node runs the attack itself) and for central DP with keyed noise (the accountant and its
ε travel with the driver)."""

import json

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


def test_central_dp_with_keyed_noise_equals_the_simulation_reports_epsilon_and_stops(tmp_path):
    # z = 0.5, every client every round: ε is 10.7 after round 1, 16.5 after 2, past 20 after 3
    overrides = (
        "task=digits",
        "privacy=central",
        "num_clients=3",
        "rounds=4",
        "privacy.target_epsilon=20",
        "privacy.calibrate=false",
    )
    out = deploy(tmp_path, 3, overrides)
    rec = record(out)
    sim_dir = tmp_path / "simulated"
    expected = simulated_params(experiment(*overrides), sim_dir)
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5
    sim = record(sim_dir)
    assert rec["privacy_budget"]["epsilon"] == pytest.approx(sim["privacy_budget"]["epsilon"])
    assert [m["epsilon"] for m in rec["metrics"]] == [m["epsilon"] for m in sim["metrics"]]
    assert rec["privacy"]["mechanism"] == "central" and rec["privacy"]["status"] == "sound"
    # the deployment stops cleanly before the round that would exceed the budget
    stopped = rec["run"]["stopped"]
    assert stopped["reason"] == "privacy_budget" and stopped["after_round"] == 2
    assert stopped["next_round_epsilon"] > 20 >= rec["privacy_budget"]["epsilon"]
    assert [m["budget_fraction"] for m in rec["metrics"]] == pytest.approx(
        [m["epsilon"] / 20 for m in rec["metrics"]]
    )
    alerts = [e for e in rec["events"] if e["event"] == "budget_alert"]
    assert [(a["fraction"], a["round"]) for a in alerts] == [(0.5, 1), (0.8, 2), (1.0, 2)]
    # the deployment's audit log: intact, anchored in the record, with node registrations,
    # every reply's verdict, the DP spend, the alerts and the stop
    from fedkit.run.audit_log import Head, verify

    check = verify(out / "audit.jsonl", head=Head.from_record(rec))
    assert check.ok, str(check)
    entries = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in entries]
    assert kinds.count("node_registered") == 3 and kinds.count("round_open") == 2
    verdicts = [v for e in entries if e["event"] == "replies" for v in e["data"]["verdicts"]]
    assert len(verdicts) == 6 and all(v["status"] == "accepted" and v["node"] for v in verdicts)
    assert kinds.count("budget_alert") == 3 and "stop" in kinds


def test_poisson_sampled_rounds_with_an_empty_one_equal_the_simulation(tmp_path):
    # q = 1/3: with seed 0 round 4 samples nobody; it still releases noise in both transports
    overrides = (
        "task=digits",
        "privacy=central",
        "num_clients=3",
        "rounds=4",
        "strategy.clients_per_round=1",
        "privacy.target_epsilon=null",
        "seed=0",
    )
    out = deploy(tmp_path, 3, overrides)
    rec = record(out)
    sim_dir = tmp_path / "simulated"
    expected = simulated_params(experiment(*overrides), sim_dir)
    assert [m["expected"] for m in rec["metrics"]] == [
        m["expected"] for m in record(sim_dir)["metrics"]
    ]
    assert rec["metrics"][3]["expected"] == 0
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5


def test_worker_momentum_kept_by_the_nodes_and_fltrust_root_data_equal_the_simulation(tmp_path):
    """Nodes keep their own worker momentum in Flower's per-node state (the simulation
    keeps every client's in the driver); the ServerApp trains its own root data for
    FLTrust; the adversary node replays every client's momentum to compute ALIE on
    momenta, and the detections agree."""
    overrides = (
        "task=digits",
        "defense=fltrust",
        "attack=alie",
        "attack.clients=[1]",
        "attack.fraction=null",
        "client.worker_momentum=0.9",
        "num_clients=4",
        "strategy.clients_per_round=4",
        "rounds=3",
    )
    out = deploy(tmp_path, 4, overrides)
    rec = record(out)
    assert rec["strategy"]["root_examples"] == 100
    assert rec["strategy"]["client"]["worker_momentum"] == 0.9
    assert rec["counters"]["detection"]["tp"] + rec["counters"]["detection"]["fn"] == 3
    sim_dir = tmp_path / "simulated"
    expected = simulated_params(experiment(*overrides), sim_dir)
    assert record(sim_dir)["counters"]["detection"] == rec["counters"]["detection"]
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5


def test_a_nodes_momentum_persists_across_rounds_it_sits_out(tmp_path):
    overrides = (
        "task=digits",
        "client.worker_momentum=0.9",
        "num_clients=4",
        "strategy.clients_per_round=2",
        "rounds=3",
    )
    out = deploy(tmp_path, 4, overrides)
    sampled = [m["expected"] for m in record(out)["metrics"]]
    assert sampled == [2, 2, 2]
    expected = simulated_params(experiment(*overrides), tmp_path / "simulated")
    assert float((deployed_params(out) - expected).abs().max()) <= 1e-5
