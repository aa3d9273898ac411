"""Deployment tests start real Flower processes; every one of them gets the environment that
keeps Flower offline (no telemetry, no update check, no run-time dependency installation)."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from fedkit.flower.env import FLOWER_ENV

os.environ.update(FLOWER_ENV)


def flower_installed() -> bool:
    return (Path(sys.executable).parent / "flower-superlink").exists() or bool(
        shutil.which("flower-superlink")
    )


needs_flower = pytest.mark.skipif(
    not flower_installed(), reason="flower-superlink is not installed next to this Python"
)
