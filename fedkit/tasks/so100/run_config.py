"""The SO-100 task as a Flower run config names it (``task = "so100"``).

Server and clients build the task from the same run config, hence the same task: the
offline fixture in ``task-dir`` (written once beforehand by ``python -m
fedkit.tasks.so100.fixture DIR``), ``task-clients`` clients, every random choice drawn
from ``seed``. The task is the one ``tests/robot/test_so100_simulate.py`` runs in process:
tiny SmolVLA, episodes 9–11 held out (one per task), batches of 8, frames cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedkit.tasks.so100.fixture import FIXTURE_REPO_ID, tiny_smolvla_overrides
from fedkit.tasks.so100.task import So100Task, so100

FIXTURE_HOLDOUT = (9, 10, 11)
FIXTURE_BATCH = 8


def fixture_paths(directory: str | Path) -> tuple[Path, Path]:
    """``(vlm, data)`` of the offline fixture in ``directory``; ``FileNotFoundError`` naming
    the command that writes it when a part is missing."""
    base = Path(directory)
    vlm, data = base / "vlm", base / "data"
    missing = [str(p) for p in (vlm / "config.json", data / "meta" / "info.json") if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"no SO-100 offline fixture in {base} (missing {', '.join(missing)}); write it "
            f"with `python -m fedkit.tasks.so100.fixture {base}`"
        )
    return vlm, data


def so100_from_settings(settings: Any) -> So100Task:
    """The fixture's SO-100 task for a :class:`fedkit.flower.Settings` (keys ``task-dir``,
    ``task-clients``, ``seed``)."""
    directory = settings.path("task-dir")
    if directory is None:
        raise ValueError(
            "task 'so100' needs 'task-dir': the directory of the offline fixture "
            "(`python -m fedkit.tasks.so100.fixture DIR`)"
        )
    vlm, data = fixture_paths(directory)
    return so100(
        repo_id=FIXTURE_REPO_ID,
        root=data,
        vlm_model_name=vlm,
        num_clients=int(settings["task-clients"]),
        holdout_episodes=FIXTURE_HOLDOUT,
        batch_size=FIXTURE_BATCH,
        key=settings.seed,
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
    )
