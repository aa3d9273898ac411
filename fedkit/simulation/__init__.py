"""In-process simulation: :func:`simulate`, its engines and the in-process transport."""

from fedkit.run.checkpoint import CheckpointError
from fedkit.run.history import History
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.simulation.sequential import SequentialEngine
from fedkit.simulation.simulate import pick_engine, simulate
from fedkit.simulation.transport import InProcessTransport
from fedkit.simulation.vectorized import VectorizedEngine, vmap_blocker

__all__ = [
    "CheckpointError",
    "ClientJob",
    "History",
    "InProcessTransport",
    "LocalResults",
    "SequentialEngine",
    "VectorizedEngine",
    "pick_engine",
    "simulate",
    "vmap_blocker",
]
