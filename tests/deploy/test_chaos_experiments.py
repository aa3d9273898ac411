"""chaostoolkit experiments against a real deployment, run through chaoslib: a SuperNode
killed mid-round, the SuperLink killed and resumed. Each experiment starts its own
deployment and tears it down in its rollbacks (``rollback-strategy: always``); the test
also stops it in a ``finally``.

The SuperLink experiment is in the default run (about 1.5 min on 2 busy cores). The
SuperNode experiment is marked ``chaos_deploy`` (``pytest -m chaos_deploy``): it passes
reliably but takes about 3 min on 2 busy cores, a minute of it spent waiting, by design,
for Flower to declare the killed node unavailable (heartbeat expiry) or the round deadline.
"""

import json
from pathlib import Path

import pytest
from conftest import needs_flower

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.slow,
    needs_flower,
    pytest.mark.timeout(1800),
]

EXPERIMENTS = Path(__file__).resolve().parents[2] / "chaos" / "experiments"


def run_experiment(name: str, run_dir: Path, **variables) -> dict:
    from chaoslib import merge_vars
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.experiment import run_experiment as chaos_run
    from chaoslib.loader import load_experiment

    from experiments import chaos_actions

    experiment = load_experiment(str(EXPERIMENTS / f"{name}.json"))
    ensure_experiment_is_valid(experiment)
    settings = {"runtime": {"rollbacks": {"strategy": "always"}}}
    try:
        return chaos_run(
            experiment,
            settings=settings,
            experiment_vars=merge_vars({"run_dir": str(run_dir), **variables}),
        )
    finally:
        chaos_actions.stop_deployment(experiment["configuration"]["name"])


def outputs(journal: dict) -> dict:
    return {r["activity"]["name"]: r.get("output") for r in journal["run"]}


@pytest.mark.chaos_deploy
def test_killed_supernode_round_completes_and_node_rejoins(tmp_path):
    journal = run_experiment("kill-supernode", tmp_path / "run")
    assert journal["status"] == "completed", journal["status"]
    assert not journal["deviated"]
    assert outputs(journal)["run-finished"] == "finished:completed"
    rounds = json.loads((tmp_path / "run" / "record.json").read_text())["metrics"]
    # round 2 was in flight when node 2 died: it completed with the two others
    assert (rounds[1]["accepted"], sum(rounds[1]["lost"].values())) == (2, 1)
    assert not any(m["quorum_missed"] for m in rounds)
    assert rounds[2]["accepted"] == 3  # the restarted node trained again in round 3


def test_killed_superlink_resumes_without_losing_a_round(tmp_path):
    # the experiment's 30 s resume goal is a benchmark figure (benchmarks/results/
    # deployment.md), not a test verdict on a shared machine: here only a hang fails it
    journal = run_experiment("kill-superlink", tmp_path / "run", resume_limit_s=600)
    assert journal["status"] == "completed", journal["status"]
    assert not journal["deviated"]
    out = outputs(journal)
    assert out["run-finished"] == "finished:completed"
    print(f"resume after SuperLink kill: {out['resume-breakdown']}")
