"""The offline SO-100 fixture as an experiment config names it (``so100@task=fixture``):
composed like any task, built by a client from the closed set of tasks, and a missing
fixture is a clear error naming the command that writes it. (The task itself, built this
way, runs deployed in ``test_so100_deploy.py``.)"""

from __future__ import annotations

import pytest

from experiments.flower_app import compose
from fedkit.tasks.registry import build_task
from fedkit.tasks.so100.offline import fixture_paths

pytestmark = pytest.mark.robot


def test_the_fixture_task_composes_from_the_config_tree():
    cfg = compose(["task=so100", "so100@task=fixture", "task.directory=/data/so100", "seed=3"])
    assert cfg["task"] == {
        "_target_": "fedkit.tasks.so100.offline.so100_fixture",
        "directory": "/data/so100",
        "num_clients": cfg["num_clients"],
        "key": 3,
    }


def test_a_missing_fixture_names_the_command_that_writes_it(tmp_path):
    task = {"_target_": "fedkit.tasks.so100.offline.so100_fixture", "directory": str(tmp_path)}
    with pytest.raises(FileNotFoundError, match=r"python -m fedkit\.tasks\.so100\.fixture"):
        build_task(task)
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"info\.json"):
        fixture_paths(tmp_path)
    (tmp_path / "data" / "meta").mkdir(parents=True)
    (tmp_path / "data" / "meta" / "info.json").write_text("{}")
    assert fixture_paths(tmp_path) == (tmp_path / "vlm", tmp_path / "data")
