"""What fedkit hands the Flower processes it starts: the environment
(``fedkit.flower.env.apply``: no telemetry, no installs, offline) and ports no two of them
race for (``fedkit.flower.local.processes.free_port``)."""

from __future__ import annotations

import os
from typing import ClassVar

import pytest

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


class _Socket:
    """A stand-in socket whose kernel hands out the ports of ``given`` in turn."""

    given: ClassVar[list[int]] = []

    def __init__(self, *args):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def bind(self, address):
        self.port = _Socket.given.pop(0)

    def getsockname(self):
        return ("127.0.0.1", self.port)


def test_free_port_never_hands_out_a_port_already_taken(monkeypatch):
    import fedkit.flower.local.processes as processes

    monkeypatch.setattr(processes.socket, "socket", _Socket)
    _Socket.given = [5000, 5000, 5001]  # the kernel reuses a just-released port
    assert processes.free_port(avoid={5000}) == 5001
    _Socket.given = [5000] * 1000
    with pytest.raises(processes.DeployError, match="no free TCP port"):
        processes.free_port(avoid={5000})
