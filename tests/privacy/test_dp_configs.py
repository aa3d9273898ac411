"""The privacy group of the Hydra config tree: client DP-SGD and the privacy budget stop."""

from __future__ import annotations

import math

import pytest
from hydra import compose, initialize_config_module

from experiments.build import build
from experiments.run import run_experiment
from privacy.accounting import epsilon
from privacy.budget import CentralDPAccountant, DPSGDAccountant
from privacy.dpsgd import DPSGD

SMALL = ["num_clients=6", "f=1", "rounds=2", "tensorboard=false", "threads=1"]


def cfg_of(*overrides: str):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=[*SMALL, *overrides])


def test_dpsgd_option_puts_dp_sgd_into_the_client_and_an_accountant_on_the_strategy():
    exp = build(cfg_of("privacy=dpsgd", "privacy.noise_multiplier=1.3", "privacy.batch_size=8"))
    assert exp.strategy.client.dp_sgd == DPSGD(1.0, 1.3, 8)
    assert isinstance(exp.strategy.accountant, DPSGDAccountant)
    assert exp.strategy.accountant.target_epsilon is None
    sizes = [exp.task.client_size(c) for c in range(exp.task.num_clients)]
    worst = max(
        epsilon(
            noise_multiplier=1.3, sample_rate=min(1, 8 / n), steps=2 * math.ceil(n / 8), delta=1e-5
        )
        for n in sizes
    )
    assert exp.privacy.epsilon(2) == pytest.approx(worst)


def test_dpsgd_calibration_meets_the_target_for_the_worst_client():
    exp = build(cfg_of("privacy=dpsgd", "privacy.target_epsilon=5", "privacy.calibrate=true"))
    assert 4.9 <= exp.privacy.epsilon(2) <= 5.0
    assert exp.strategy.client.dp_sgd.noise_multiplier == exp.privacy.noise_multiplier


def test_central_target_without_calibration_stops_the_run_at_the_budget(tmp_path):
    z, q = 1.5, 0.5  # 3 of 6 clients per round
    eps = [epsilon(noise_multiplier=z, sample_rate=q, steps=r, delta=1e-5) for r in (1, 2, 3)]
    target = (eps[1] + eps[2]) / 2
    cfg = cfg_of(
        "privacy=central",
        f"privacy.noise_multiplier={z}",
        f"privacy.target_epsilon={target}",
        "privacy.calibrate=false",
        "strategy.clients_per_round=3",
        "rounds=6",
        "checkpoint=true",
    )
    exp = build(cfg)
    assert exp.privacy.noise_multiplier == z
    assert exp.strategy.accountant == CentralDPAccountant(z, 1e-5, target, "rdp")
    record = run_experiment(cfg, tmp_path, progress=False)
    assert record["run"]["stopped"]["reason"] == "privacy_budget"
    assert record["run"]["stopped"]["after_round"] == 2 and len(record["metrics"]) == 2
    assert [m["epsilon"] for m in record["metrics"]] == pytest.approx(eps[:2])
    assert record["privacy"]["epsilon"] == pytest.approx(eps[1])
    assert (tmp_path / "checkpoints" / "ckpt_000002.json").exists()
