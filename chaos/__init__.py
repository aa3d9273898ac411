"""chaos suite (docs/architecture.md): fault models for simulation — dropout, stragglers against the
deadline, client crashes, corrupted / stale / duplicate replies, partitions, server crashes —
and their composition. Each implements :class:`fedkit.protocols.FaultModel`."""

from chaos.faults import *  # noqa: F403
from chaos.faults import __all__ as _faults_all

__all__ = [*_faults_all]
