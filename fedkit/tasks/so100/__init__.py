"""The SO-100 task: a LeRobot policy (SmolVLA by default) trained federatedly on SO-100
robot-arm episodes, one client per set of episodes, task or arm. Needs the ``robot`` extra.

Importing this package is cheap: LeRobot, transformers and datasets are imported only when
a task or a fixture is built.
"""

from fedkit.tasks.so100.config import So100Config
from fedkit.tasks.so100.episodes import Episode, assign_clients, holdout
from fedkit.tasks.so100.task import So100Task, batch_order, eval_frames, so100

__all__ = [
    "Episode",
    "So100Config",
    "So100Task",
    "assign_clients",
    "batch_order",
    "eval_frames",
    "holdout",
    "so100",
]
