"""The ``fedkit`` console script end to end: a tiny Hydra multirun (joblib launcher) and
``fedkit tables`` in subprocesses, ``fedkit bench --quick``, and the bench's resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.bench import Point, Sweep, bench
from experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]


def fedkit(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """``fedkit ARGS`` as the console script runs it (``python -m experiments``)."""
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_usage_and_unknown_command(capsys):
    assert main([]) == 0
    assert "fedkit run" in capsys.readouterr().out
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_sweep_points_and_names():
    sweep = Sweep(defenses=["a", "b"], attacks=["none"], chaos=["none", "x"], seeds=[0, 1])
    points = sweep.points()
    assert len(points) == 8 and len({p.name for p in points}) == 8
    assert Point("krum", "alie", "none", 2).overrides(["rounds=1"]) == [
        "rounds=1", "defense=krum", "attack=alie", "chaos=none", "seed=2",
    ]  # fmt: skip


@pytest.mark.slow
def test_bench_in_process_writes_records_and_resumes(tmp_path):
    sweep = Sweep(
        defenses=["fedavg"],
        attacks=["none", "sign_flip"],
        chaos=["none"],
        seeds=[0],
        overrides=["num_clients=5", "f=1", "rounds=1", "tensorboard=false"],
        jobs=1,
    )
    first = bench(sweep, tmp_path, progress=False, figures=False)
    assert not first["failed"] and len(first["runs"]) == 2
    record = json.loads((tmp_path / "runs/fedavg__sign_flip__none__seed0/record.json").read_text())
    assert record["labels"] == {
        "task": None, "defense": "fedavg", "attack": "sign_flip", "chaos": "none",
        "privacy": "none", "seed": 0,
    }  # fmt: skip
    assert record["config"]["num_clients"] == 5 and len(record["attack"]["controlled"]) == 1
    second = bench(sweep, tmp_path, progress=False, figures=False)
    assert [r["seconds"] for r in second["runs"]] == [0.0, 0.0]  # both reused
    table = second["report"].main_table()
    assert [c.title for c in table.columns] == ["Defense", "none", "sign_flip"]


@pytest.mark.slow
def test_tiny_multirun_then_tables(tmp_path):
    sweep_dir = tmp_path / "multirun"
    done = fedkit(
        "run", "-m", "seed=0,1", "rounds=2", "num_clients=6", "f=1", "attack=alie",
        "server=trimmed_mean", f"hydra.sweep.dir={sweep_dir}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JoblibLauncher" in done.stdout + done.stderr or "Joblib" in done.stdout + done.stderr
    records = sorted(sweep_dir.glob("*/record.json"))
    assert len(records) == 2
    for seed, path in enumerate(records):
        rec = json.loads(path.read_text())
        assert rec["labels"]["seed"] == seed and rec["labels"]["attack"] == "alie"
        assert rec["labels"]["defense"] == "trimmed_mean" and rec["final"]["round"] == 2
        assert list(path.parent.glob("events.out.tfevents.*"))
    out = tmp_path / "tables"
    done = fedkit("tables", str(sweep_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 records" in done.stdout
    md = (out / "attack_defense.md").read_text()
    assert "| trimmed_mean |" in md and "over 2 seeds" in md
    assert (out / "figures" / "heatmap_digits_none.png").is_file()


@pytest.mark.slow
def test_bench_quick_end_to_end(tmp_path):
    out = tmp_path / "bench"
    done = fedkit("bench", "--quick", "--out", str(out), "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Final test accuracy (%) on digits with faults: none" in done.stdout
    assert "8 runs (0 failed)" in done.stdout
    assert len(list((out / "runs").glob("*/record.json"))) == 8
    assert len(list((out / "runs").glob("*/events.out.tfevents.*"))) == 8
    for kind in ("attack_defense", "utility_vs_epsilon", "fault_survival"):
        for ext in ("tex", "md", "csv"):
            assert (out / "tables" / f"{kind}.{ext}").stat().st_size > 0
    eps = (out / "tables" / "utility_vs_epsilon.md").read_text()
    assert "dp_trimmed_mean" in eps
    figures = {p.name for p in (out / "tables" / "figures").iterdir()}
    assert {"heatmap_digits_none.pdf", "accuracy_rounds_digits_unreliable.png"} <= figures
    assert "epsilon_accuracy.pdf" in figures
