"""Run records (``fedkit.run/1`` JSON, :mod:`fedkit.run.records`) as flat rows.

A :class:`Run` holds what the tables and figures group by (task, defense, attack, fault
setting, privacy, seed) and what they show (final test accuracy, ε, rounds completed,
updates lost, the accuracy curve, the backdoor success rate of a backdoor attack). The labels come from the record's ``labels`` section
(written by ``fedkit run`` / ``fedkit bench``); a record without one (written by
``fedkit.simulate`` directly) gets labels derived from its ``_target_`` entries, e.g.
``clip+trimmed_mean``, ``alie``, ``dropout+corrupt``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

FORMAT_PREFIX = "fedkit.run/"

# Validation reasons (fedkit.replies.REASONS) for which the update never reaches the server;
# a rejected duplicate is a second copy of an update that did arrive.
LOST_ON_VALIDATION = (
    "unexpected",
    "stale",
    "wrong_round",
    "oversized",
    "malformed",
    "wrong_dtype",
    "wrong_shape",
    "non_finite",
    "bad_num_examples",
)

_NO_ATTACK = {"NoAdversary"}
_NO_FAULTS = {"NoFaults"}


@attrs.frozen
class Run:
    """One run record, flattened."""

    path: str
    task: str
    defense: str
    attack: str
    chaos: str
    privacy: str
    seed: int | None
    accuracy: float | None
    epsilon: float | None
    noise_multiplier: float | None
    rounds: int
    rounds_completed: int
    expected: int
    lost: int
    curve: tuple[tuple[int, float], ...]
    backdoor: float | None = None
    privacy_status: str = "none"  # none | sound | nominal | unknown (a record before statuses)
    tpr: float | None = None  # poisoned replies the server rejected / those that reached it
    fpr: float | None = None  # honest replies rejected / honest replies that reached it

    @property
    def lost_fraction(self) -> float | None:
        """Updates lost over updates expected (``None`` when none was expected)."""
        return self.lost / self.expected if self.expected else None


def snake(name: str) -> str:
    """``SignFlip`` → ``sign_flip``, ``ALIE`` → ``alie``, ``MinMax`` → ``min_max``."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _class(node: Any) -> str | None:
    if isinstance(node, Mapping) and isinstance(node.get("_target_"), str):
        return node["_target_"].rsplit(".", 1)[-1]
    return None


def defense_of(strategy: Mapping[str, Any]) -> str:
    """The chain's components as ``clip+trimmed_mean`` (from the record's strategy)."""
    server = strategy.get("server", {}) if isinstance(strategy, Mapping) else {}
    components = server.get("components", []) if isinstance(server, Mapping) else []
    names = [snake(c) for c in (_class(node) for node in components) if c]
    return "+".join(names) or "unknown"


def attack_of(adversary: Any) -> str:
    """``none`` or the attack's (or data poison's) name, e.g. ``alie``, ``label_flip``."""
    name = _class(adversary)
    if name is None or name in _NO_ATTACK:
        return "none"
    parts = [_class(adversary.get(k)) for k in ("poison", "attack")]
    parts = [snake(p) for p in parts if p]
    return "+".join(parts) or snake(name)


def chaos_of(faults: Any) -> str:
    """``none`` or the fault models' names, e.g. ``dropout+stragglers+corrupt``."""
    name = _class(faults)
    if name is None or name in _NO_FAULTS:
        return "none"
    if name == "Compose":
        members = [chaos_of(f) for f in faults.get("faults", [])]
        return "+".join(m for m in members if m != "none") or "none"
    return snake(name)


def _rounds_completed(metrics: Iterable[Mapping[str, Any]]) -> int:
    return sum(1 for m in metrics if not m.get("quorum_missed"))


def _lost(counters: Mapping[str, Any]) -> int:
    lost = sum(int(v) for v in (counters.get("lost") or {}).values())
    rejected = counters.get("rejected") or {}
    return lost + sum(int(rejected.get(r, 0)) for r in LOST_ON_VALIDATION)


def _curve(metrics: Iterable[Mapping[str, Any]]) -> tuple[tuple[int, float], ...]:
    return tuple(
        (int(m["round"]), float(m["test_accuracy"]))
        for m in metrics
        if m.get("test_accuracy") is not None
    )


def to_run(record: Mapping[str, Any], path: str = "") -> Run:
    """Flatten one record."""
    labels = dict(record.get("labels") or {})
    run = record.get("run") or {}
    privacy = record.get("privacy") or {}
    metrics = record.get("metrics") or []
    seed = labels.get("seed", run.get("seed"))
    return Run(
        path=path,
        task=str(labels.get("task") or (record.get("task") or {}).get("name") or "unknown"),
        defense=str(labels.get("defense") or defense_of(record.get("strategy") or {})),
        attack=str(labels.get("attack") or attack_of(run.get("adversary"))),
        chaos=str(labels.get("chaos") or chaos_of(run.get("faults"))),
        privacy=str(labels.get("privacy") or privacy.get("mechanism") or "none"),
        seed=None if seed is None else int(seed),
        accuracy=(record.get("final") or {}).get("test_accuracy"),
        epsilon=privacy.get("epsilon"),
        noise_multiplier=privacy.get("noise_multiplier"),
        rounds=int((record.get("final") or {}).get("round") or 0),
        rounds_completed=_rounds_completed(metrics),
        expected=int((record.get("counters") or {}).get("expected") or 0),
        lost=_lost(record.get("counters") or {}),
        curve=_curve(metrics),
        backdoor=(record.get("final") or {}).get("backdoor_success"),
        tpr=((record.get("counters") or {}).get("detection") or {}).get("tpr"),
        fpr=((record.get("counters") or {}).get("detection") or {}).get("fpr"),
        privacy_status=str(
            privacy.get("status") or ("unknown" if privacy.get("epsilon") is not None else "none")
        ),
    )


def is_record(data: Any) -> bool:
    return isinstance(data, Mapping) and str(data.get("format", "")).startswith(FORMAT_PREFIX)


# Directories a sweep leaves beside its records that never hold one: Hydra's per-job config
# copies and submitit's pickles and logs (``<sweep dir>/.submitit/<job id>``).
SKIP_DIRS = frozenset({".hydra", ".submitit"})


def record_paths(results_dir: str | Path) -> list[Path]:
    """The ``*.json`` files under ``results_dir`` that may be run records, in path order:
    a multirun of any Hydra launcher (``<sweep dir>/<job num>/record.json`` of basic, joblib,
    submitit or Ray jobs), a ``fedkit bench`` tree, ``fedkit deploy`` out dirs. Not entered:
    :data:`SKIP_DIRS`, Ray temporary directories (the ``session_*`` trees of logs and sockets
    beside ``session_latest``, which change while Ray runs) and symbolic links to
    directories; a directory removed while it is read is passed over."""
    found: list[Path] = []
    for current, dirs, files in os.walk(results_dir):
        if "session_latest" in dirs:  # a Ray temporary directory
            dirs[:] = []
            continue
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        found.extend(Path(current) / f for f in files if f.endswith(".json"))
    return sorted(found)


def load_runs(results_dir: str | Path) -> list[Run]:
    """Every run record (``*.json`` with a ``fedkit.run/…`` format) under ``results_dir``
    (:func:`record_paths`), in path order; other JSON files, and files still being written,
    are skipped."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {root} does not exist")
    runs = []
    for path in record_paths(root):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if is_record(data):
            runs.append(to_run(data, str(path.relative_to(root))))
    return runs
