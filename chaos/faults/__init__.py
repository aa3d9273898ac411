"""Fault models for simulation (the :class:`fedkit.protocols.FaultModel` protocol).

Every decision is a pure function of (round, client id, key): see :mod:`chaos.faults._draws`.
Compose several with :class:`Compose`.
"""

from chaos.faults.compose import Compose, combine
from chaos.faults.corrupt import Corrupt
from chaos.faults.crash import Crash, crash_starts
from chaos.faults.dropout import Dropout
from chaos.faults.duplicate import Duplicate
from chaos.faults.partition import Partition
from chaos.faults.server_crash import ServerCrash
from chaos.faults.stale import Stale
from chaos.faults.stale_content import StaleContent
from chaos.faults.stragglers import DISTRIBUTIONS, Stragglers, straggler_latency

__all__ = [
    "DISTRIBUTIONS",
    "Compose",
    "Corrupt",
    "Crash",
    "Dropout",
    "Duplicate",
    "Partition",
    "ServerCrash",
    "Stale",
    "StaleContent",
    "Stragglers",
    "combine",
    "crash_starts",
    "straggler_latency",
]
