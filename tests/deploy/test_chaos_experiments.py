"""chaostoolkit experiments against a real deployment, run through chaoslib: a SuperNode
killed mid-round, the SuperLink killed and resumed. Each experiment starts its own
deployment and tears it down in its rollbacks (``rollback-strategy: always``); the test
also stops it in a ``finally``."""

from pathlib import Path

import pytest
from conftest import needs_flower

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.chaos_deploy,
    pytest.mark.slow,
    needs_flower,
    pytest.mark.timeout(1800),
]

EXPERIMENTS = Path(__file__).resolve().parents[2] / "chaos" / "experiments"


def run_experiment(name: str, run_dir: Path) -> dict:
    from chaoslib import merge_vars
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.experiment import run_experiment as chaos_run
    from chaoslib.loader import load_experiment

    from chaos import deploy_actions

    experiment = load_experiment(str(EXPERIMENTS / f"{name}.json"))
    ensure_experiment_is_valid(experiment)
    settings = {"runtime": {"rollbacks": {"strategy": "always"}}}
    try:
        return chaos_run(
            experiment,
            settings=settings,
            experiment_vars=merge_vars({"run_dir": str(run_dir)}),
        )
    finally:
        deploy_actions.stop_deployment(experiment["configuration"]["name"])


def outputs(journal: dict) -> dict:
    return {r["activity"]["name"]: r.get("output") for r in journal["run"]}


def test_killed_supernode_round_completes_and_node_rejoins(tmp_path):
    journal = run_experiment("kill-supernode", tmp_path / "run")
    assert journal["status"] == "completed", journal["status"]
    assert not journal["deviated"]
    assert outputs(journal)["run-finished"] == "finished:completed"


def test_killed_superlink_resumes_without_losing_a_round(tmp_path):
    journal = run_experiment("kill-superlink", tmp_path / "run")
    assert journal["status"] == "completed", journal["status"]
    assert not journal["deviated"]
    out = outputs(journal)
    assert out["run-finished"] == "finished:completed"
    print(f"resume after SuperLink kill: {out['resume-seconds']:.1f} s")
