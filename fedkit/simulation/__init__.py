"""In-process simulation: :func:`simulate`, its engines, checkpoints and results records."""

from fedkit.simulation.checkpoint import CheckpointError
from fedkit.simulation.history import History
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.simulation.sequential import SequentialEngine
from fedkit.simulation.simulate import pick_engine, simulate
from fedkit.simulation.vectorized import VectorizedEngine, vmap_blocker

__all__ = [
    "CheckpointError",
    "ClientJob",
    "History",
    "LocalResults",
    "SequentialEngine",
    "VectorizedEngine",
    "pick_engine",
    "simulate",
    "vmap_blocker",
]
