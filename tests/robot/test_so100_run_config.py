"""The run-config hook that lets the Flower apps build the SO-100 task (``task = "so100"``):
the key is declared where Flower checks overrides, and a missing fixture is a clear error
naming the command that writes it. (The task itself, built this way, runs in
``test_so100_deploy.py``.)"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedkit.flower.settings import DEFAULTS, Settings, build_task
from fedkit.tasks.so100.run_config import fixture_paths

pytestmark = pytest.mark.robot

REPO = Path(__file__).resolve().parents[2]


def test_task_dir_is_a_flower_run_config_key():
    """Flower refuses ``--run-config`` keys the App does not declare."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert declared["config"]["task-dir"] == DEFAULTS["task-dir"] == ""
    settings = Settings.from_run_config({"task": "so100", "task-dir": "/data/so100"})
    assert settings.path("task-dir") == "/data/so100"
    assert "_unknown" not in settings.values


def test_so100_without_task_dir_is_refused():
    with pytest.raises(ValueError, match="task-dir"):
        build_task(Settings.from_run_config({"task": "so100"}))


def test_a_missing_fixture_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m fedkit\.tasks\.so100\.fixture"):
        build_task(Settings.from_run_config({"task": "so100", "task-dir": str(tmp_path)}))
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"info\.json"):
        fixture_paths(tmp_path)
    (tmp_path / "data" / "meta").mkdir(parents=True)
    (tmp_path / "data" / "meta" / "info.json").write_text("{}")
    assert fixture_paths(tmp_path) == (tmp_path / "vlm", tmp_path / "data")
