"""What every run shares, whatever moves its messages: results records, checkpoints and the
:class:`History` a run returns."""

from fedkit.run.checkpoint import CheckpointError
from fedkit.run.history import History

__all__ = ["CheckpointError", "History"]
