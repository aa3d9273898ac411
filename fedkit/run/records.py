"""Results records (one JSON document per run) and TensorBoard scalars.

Record format ``fedkit.run/1`` (read by the benchmark and paper pipelines)::

    {
      "format": "fedkit.run/1",
      "task":      {"name", "num_clients", "num_params", "meta"},
      "strategy":  nested config, every attrs value as {"_target_": "module.Class", fields...},
      "run":       {"rounds", "engine", "engine_used", "eval_every", "seed", "key",
                    "adversary", "faults", "checkpoint_every", "resumed_from", "stopped"},
      "versions":  {"python", "torch", "fedkit", "flwr", "numpy"},
      "metrics":   [per-round dicts, see below],
      "final":     {"round", "test_loss", "test_accuracy", "train_loss"},
      "timings":   {"total_s", "train_s", "aggregate_s", "eval_s", "rounds_per_s"},
      "counters":  {"expected", "received", "valid", "accepted", "rejected": {reason: n},
                    "lost": {reason: n}, "faults": {label: n}, "quorum_missed", "stragglers",
                    "byzantine_sampled", "server_crashes", "rounds_lost", "recovery_s"},
      "attack":    {"controlled": [client ids]},
      "events":    [{"event": "server_crash", "round", "restored_round", "rounds_lost",
                     "recovery_s"}, ...],
      "privacy_budget": {"accountant", "delta", "target_epsilon", "epsilon", "rounds",
                         "stopped"}            (only with a privacy accountant)
      "audit":     {"file", "entries", "head", "genesis"}
                                               (only with an audit log: its head,
                                                :mod:`fedkit.run.audit_log`)
    }

``run.stopped`` is ``null``, or ``{"reason": "privacy_budget", "after_round", "epsilon",
"next_round_epsilon", "target_epsilon"}`` when the accountant stopped the run early.

A per-round dict has ``round``, ``expected``, ``received``, ``valid``, ``accepted``,
``rejected``, ``lost``, ``faults``, ``clipped``, ``quorum_missed``, ``stragglers``,
``byzantine``, ``train_loss``, ``wall_time``, ``train_time``, ``aggregate_time`` and, on
evaluation rounds, ``test_loss`` and ``test_accuracy`` (plus whatever a task's own
``evaluate`` returns); with a privacy accountant, ``epsilon`` (spent after the round). Missing or non-finite numbers are ``null``.
"""

from __future__ import annotations

import enum
import json
import math
import os
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs
import torch

FORMAT = "fedkit.run/1"


def jsonable(x: Any) -> Any:
    """``x`` with tensors as numbers/lists, non-finite floats as ``None``, tuples as lists."""
    if isinstance(x, torch.Tensor):
        return jsonable(x.item() if x.numel() == 1 and x.ndim == 0 else x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, enum.Enum):
        return jsonable(x.value)
    if x is None or isinstance(x, bool | int | str):
        return x
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, Sequence):
        return [jsonable(v) for v in x]
    return repr(x)


def describe(obj: Any) -> Any:
    """A config tree of ``obj``: attrs values become ``{"_target_": path, field: ...}`` (the
    shape Hydra instantiates); tensors are summarised by shape and dtype unless tiny."""
    if attrs.has(type(obj)):
        out = {"_target_": f"{type(obj).__module__}.{type(obj).__qualname__}"}
        for f in attrs.fields(type(obj)):
            if f.init:
                out[f.name] = describe(getattr(obj, f.name))
        return out
    if isinstance(obj, torch.Tensor):
        if obj.numel() <= 16:
            return jsonable(obj)
        return {"tensor": list(obj.shape), "dtype": str(obj.dtype).removeprefix("torch.")}
    if isinstance(obj, list | tuple):
        return [describe(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): describe(v) for k, v in obj.items()}
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}.{obj.__qualname__}"
    return jsonable(obj)


def versions() -> dict[str, str | None]:
    """Versions of Python and the packages a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("fedkit", "flwr", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _add(into: dict[str, int], more: Mapping[str, int] | None) -> None:
    for k, v in (more or {}).items():
        into[k] = into.get(k, 0) + int(v)


def totals(metrics: Sequence[Mapping[str, Any]], events: Sequence[Mapping[str, Any]]) -> dict:
    """Run-wide counters summed over the per-round metrics and events."""
    out: dict[str, Any] = {
        "expected": 0,
        "received": 0,
        "valid": 0,
        "accepted": 0,
        "rejected": {},
        "lost": {},
        "faults": {},
        "quorum_missed": 0,
        "stragglers": 0,
        "byzantine_sampled": 0,
    }
    for m in metrics:
        for k in ("expected", "received", "valid", "accepted", "stragglers"):
            out[k] += int(m.get(k) or 0)
        out["byzantine_sampled"] += int(m.get("byzantine") or 0)
        out["quorum_missed"] += int(bool(m.get("quorum_missed")))
        for k in ("rejected", "lost", "faults"):
            _add(out[k], m.get(k))
        if m.get("detection"):
            _add(out.setdefault("detection", {"tp": 0, "fp": 0, "tn": 0, "fn": 0}), m["detection"])
    if "detection" in out:
        out["detection"].update(rates(out["detection"]))
    crashes = [e for e in events if e.get("event") == "server_crash"]
    out["server_crashes"] = len(crashes)
    out["rounds_lost"] = sum(int(e["rounds_lost"]) for e in crashes)
    out["recovery_s"] = sum(float(e["recovery_s"]) for e in crashes)
    return out


def rates(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Detection rates from ``{tp, fp, tn, fn}``: ``tpr`` (poisoned replies rejected / all
    poisoned replies that reached the server), ``fpr`` (honest replies rejected / honest
    replies), ``None`` where the denominator is 0."""
    tp, fp, tn, fn = (int(counts.get(k, 0)) for k in ("tp", "fp", "tn", "fn"))
    return {
        "tpr": tp / (tp + fn) if tp + fn else None,
        "fpr": fp / (fp + tn) if fp + tn else None,
    }


def final_metrics(metrics: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The last round's number, its train loss and the latest test metrics."""
    out: dict[str, Any] = {"round": metrics[-1]["round"] if metrics else 0}
    for name in ("train_loss", "test_loss", "test_accuracy"):
        out[name] = next((m[name] for m in reversed(metrics) if m.get(name) is not None), None)
    return out


def timings(metrics: Sequence[Mapping[str, Any]], total: float, rounds_run: int) -> dict:
    """The record's ``timings``: wall time of the run, the per-phase sums over its rounds and
    the rounds run per second (``rounds_run`` = rounds this process ran, not resumed ones)."""
    return {
        "total_s": total,
        "train_s": sum(m["train_time"] for m in metrics),
        "aggregate_s": sum(m["aggregate_time"] for m in metrics),
        "eval_s": sum(m["eval_time"] for m in metrics),
        "rounds_per_s": rounds_run / total if total > 0 else None,
    }


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(jsonable(data), indent=1, allow_nan=False))
    os.replace(tmp, path)
    return path


class TensorBoardLog:
    """Scalars of every round under ``log_dir``: ``train/loss``, ``test/accuracy``,
    ``test/loss``, ``replies/<counter>``, ``rejected/<reason>``, ``lost/<reason>``,
    ``faults/<label>``, ``time/round_s``, ``privacy/epsilon``, ``privacy/budget_fraction``.
    ``purge_step`` drops events of rounds a resumed run replays."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, metrics: Mapping[str, Any]) -> None:
        step = int(metrics["round"])
        scalars = {
            "train/loss": metrics.get("train_loss"),
            "test/loss": metrics.get("test_loss"),
            "test/accuracy": metrics.get("test_accuracy"),
            "time/round_s": metrics.get("wall_time"),
            "privacy/epsilon": metrics.get("epsilon"),
            "privacy/budget_fraction": metrics.get("budget_fraction"),
        }
        for k in ("expected", "received", "valid", "accepted", "stragglers", "byzantine"):
            scalars[f"replies/{k}"] = metrics.get(k)
        scalars["replies/quorum_missed"] = int(bool(metrics.get("quorum_missed")))
        for group in ("rejected", "lost", "faults"):
            for k, v in (metrics.get(group) or {}).items():
                scalars[f"{group}/{k}"] = v
        for tag, value in scalars.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
