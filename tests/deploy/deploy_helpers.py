"""Experiment configs for deployment tests: composed as ``fedkit run`` composes them, sent to
the ServerApp as data, and simulated in process for comparison."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from experiments.flower_app import compose
from experiments.run import run_experiment


def experiment(*overrides: str) -> dict[str, Any]:
    """The resolved config of ``fedkit run OVERRIDES``."""
    return compose(list(overrides))


def run_config(cfg: dict[str, Any], out: Path, **extra: Any) -> dict[str, Any]:
    """The Flower run config deploying ``cfg`` with its outputs in ``out``."""
    return {
        "experiment": json.dumps(cfg),
        "out-dir": str(out),
        "round-deadline": 300.0,
        "sample-timeout": 300.0,
        **extra,
    }


def simulated_params(cfg: dict[str, Any], out: Path) -> torch.Tensor:
    """Final parameters of ``fedkit run`` on ``cfg`` (sequential engine), in process."""
    run_experiment({**cfg, "engine": {"name": "sequential"}}, out, progress=False)
    return load_file(str(out / "record.safetensors"))["params"]


def deployed_params(out: Path) -> torch.Tensor:
    return load_file(str(out / "record.safetensors"))["params"]


def record(out: Path) -> dict[str, Any]:
    return json.loads((out / "record.json").read_text())
