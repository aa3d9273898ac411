"""The environment every Flower process fedkit starts gets.

:data:`FLOWER_ENV` keeps Flower (and Ray) from phoning home or installing packages at run
time, polls for ClientApp tasks every 0.1 s instead of 1 s, and keeps each process to one
torch thread; :data:`OFFLINE_ENV` keeps the Hugging Face hub and datasets offline.
:func:`apply` puts both into ``os.environ`` (test fixtures, launchers) so nobody has to
remember them.
"""

from __future__ import annotations

import os

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def apply(offline: bool = True) -> None:
    """Set :data:`FLOWER_ENV` (and, unless already set, :data:`OFFLINE_ENV`) in this
    process's environment, which every child it starts inherits."""
    os.environ.update(FLOWER_ENV)
    if offline:
        for k, v in OFFLINE_ENV.items():
            os.environ.setdefault(k, v)
