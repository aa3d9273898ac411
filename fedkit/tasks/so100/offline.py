"""The SO-100 task of the offline fixture, by its directory: what an experiment config
names to run SmolVLA with no hub access (``task=so100 so100@task=fixture
task.directory=DIR``), in process or deployed.

The fixture in ``DIR`` is written once beforehand by ``python -m fedkit.tasks.so100.fixture
DIR``. Server and clients build the same task from the same config: ``num_clients``
clients, every random choice drawn from ``key``; tiny SmolVLA, episodes 9–11 held out (one
per task), batches of 8, frames cached (the task ``tests/robot/test_so100_simulate.py``
runs in process).
"""

from __future__ import annotations

from pathlib import Path

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


def so100_fixture(directory: str | Path, num_clients: int = 3, key: int = 0) -> So100Task:
    """The fixture's SO-100 task (module doc); ``FileNotFoundError`` naming the command that
    writes the fixture when ``directory`` holds none."""
    vlm, data = fixture_paths(directory)
    return so100(
        repo_id=FIXTURE_REPO_ID,
        root=data,
        vlm_model_name=vlm,
        num_clients=int(num_clients),
        holdout_episodes=FIXTURE_HOLDOUT,
        batch_size=FIXTURE_BATCH,
        key=key,
        policy_overrides=tiny_smolvla_overrides(),
        cache_frames=True,
        max_eval_frames=None,
    )
