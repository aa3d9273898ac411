"""The Flower App of an experiment config: the ServerApp and ClientApp build the same
experiment whether the run config carries it resolved (``fedkit deploy``) or as overrides
(``flwr run``), and refuse a run config that names none."""

from __future__ import annotations

import json

import pytest

from experiments.flower_app import (
    ExperimentConfigError,
    client_runtime,
    compose,
    server_setup,
)
from fedkit.client import ClientConfig
from fedkit.core.keys import key
from fedkit.flower import HonestClient
from fedkit.flower.requests import TrainRequest
from fedkit.run.fingerprint import fingerprint

OVERRIDES = "task=digits num_clients=4 defense=krum f=0 rounds=2"


def test_overrides_and_the_resolved_config_give_the_same_experiment(tmp_path):
    by_overrides = server_setup({"overrides": OVERRIDES, "out-dir": str(tmp_path)})
    resolved = compose(OVERRIDES.split())
    by_json = server_setup({"experiment": json.dumps(resolved), "out-dir": str(tmp_path)})
    assert fingerprint(by_overrides.config) == fingerprint(by_json.config)
    assert by_overrides.rounds == 2 and by_overrides.task.num_clients == 4
    assert type(by_overrides.strategy.server.components[0]).__name__ == "Krum"
    assert by_overrides.loop.signed_replies  # secure by default


def test_a_client_builds_only_its_task_and_answers_honestly():
    request = TrainRequest(1, 2, 1, key(0), ClientConfig())
    node = client_runtime({"overrides": OVERRIDES}, {"partition-id": 2}, request)
    assert isinstance(node, HonestClient)
    assert node.partition == 2 and node.task.num_clients == 4


def test_a_run_config_without_an_experiment_is_refused():
    with pytest.raises(ExperimentConfigError, match="names no experiment"):
        server_setup({})
    with pytest.raises(ExperimentConfigError, match="not JSON"):
        server_setup({"experiment": "{task: digits"})
