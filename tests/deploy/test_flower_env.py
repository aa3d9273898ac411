"""``fedkit.flower.env.apply``: what a launcher or fixture calls so that every Flower process
it starts inherits the no-telemetry, no-install, offline environment."""

from __future__ import annotations

import os

from fedkit.flower import env


def test_apply_sets_every_flower_variable_and_keeps_a_chosen_offline_setting(monkeypatch):
    for name in (*env.FLOWER_ENV, *env.OFFLINE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "1")  # a caller's wish to phone home loses
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # an explicit hub setting is the caller's
    env.apply()
    assert {k: os.environ[k] for k in env.FLOWER_ENV} == env.FLOWER_ENV
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"


def test_apply_without_offline_leaves_the_hub_settings_alone(monkeypatch):
    for name in env.OFFLINE_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in env.FLOWER_ENV:
        monkeypatch.delenv(name, raising=False)
    env.apply(offline=False)
    assert not set(env.OFFLINE_ENV) & set(os.environ)
    assert os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
