"""A small hand-made set of run records (``fedkit.run/1``) with known table contents."""

from __future__ import annotations

import json
from pathlib import Path


def record(
    defense: str,
    attack: str,
    chaos: str,
    seed: int,
    accuracy: float,
    *,
    epsilon: float | None = None,
    z: float | None = None,
    missed: tuple[bool, ...] = (False, False, False),
    lost: dict | None = None,
    rejected: dict | None = None,
    status: str | None = None,
) -> dict:
    curve = [accuracy - 0.1 * (len(missed) - 1 - i) for i in range(len(missed))]
    return {
        "format": "fedkit.run/1",
        "task": {"name": "digits", "num_clients": 10, "num_params": 10, "meta": {}},
        "run": {"rounds": len(missed), "seed": seed},
        "metrics": [
            {"round": i + 1, "quorum_missed": m, "test_accuracy": a}
            for i, (m, a) in enumerate(zip(missed, curve, strict=True))
        ],
        "final": {"round": len(missed), "test_accuracy": accuracy},
        "counters": {
            "expected": 10 * len(missed),
            "lost": lost or {},
            "rejected": rejected or {},
        },
        "labels": {
            "task": "digits",
            "defense": defense,
            "attack": attack,
            "chaos": chaos,
            "privacy": "none" if epsilon is None else "central",
            "seed": seed,
        },
        "privacy": {"mechanism": "none", "epsilon": None}
        if epsilon is None
        else {"mechanism": "central", "epsilon": epsilon, "noise_multiplier": z}
        | ({} if status is None else {"status": status}),
    }


RECORDS = [
    record("fedavg", "none", "none", 0, 0.90),
    record("fedavg", "none", "none", 1, 0.92),
    record("fedavg", "alie", "none", 0, 0.50),
    record("fedavg", "alie", "none", 1, 0.60),
    record("krum", "none", "none", 0, 0.80),
    record("krum", "none", "none", 1, 0.84),
    record("krum", "alie", "none", 0, 0.78),
    record("krum", "alie", "none", 1, 0.80),
    record("dp_tm", "none", "none", 0, 0.70, epsilon=8.0, z=0.5, status="nominal"),
    record("dp_tm", "none", "none", 0, 0.60, epsilon=2.0, z=1.0),  # no status: an old record
    record(
        "fedavg",
        "none",
        "dropout",
        0,
        0.85,
        missed=(False, True, False),
        lost={"dropped": 2},
        rejected={"non_finite": 1},
    ),
    record("fedavg", "none", "dropout", 1, 0.91, lost={"dropped": 4, "late": 2}),
    record("krum", "none", "dropout", 0, 0.80, rejected={"krum": 5, "duplicate": 2}),
]


def write_records(root: Path) -> Path:
    """The records as ``root/<i>/record.json`` plus a JSON file that is not a record."""
    for i, rec in enumerate(RECORDS):
        path = root / f"run{i:02d}" / "record.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
    (root / "notes.json").write_text(json.dumps({"not": "a record"}))
    return root
