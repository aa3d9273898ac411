"""chaostoolkit probes and actions against a local Flower deployment of an experiment config.

Experiments in ``chaos/experiments/`` call these through the ``python`` provider (module
``experiments.chaos_actions``; it composes experiment configs and the Flower App, so it
lives with them, above the chaos suite). A deployment lives in this process's registry under a name, so
an experiment starts it (``start_deployment``), hurts it (``kill_supernode``,
``kill_superlink`` + ``restart_superlink_and_resume``), checks it and always tears it down
in its rollbacks (``stop_deployment``; run them with ``--rollback-strategy always``).
Every function takes and returns plain JSON values.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from experiments.deploy_cli import resolve
from experiments.flower_app import APP
from fedkit.flower.local import LocalDeployment
from fedkit.run import checkpoint as ckpt

_DEPLOYMENTS: dict[str, dict[str, Any]] = {}


def _get(name: str) -> dict[str, Any]:
    if name not in _DEPLOYMENTS:
        raise RuntimeError(f"no deployment named {name!r} is running")
    return _DEPLOYMENTS[name]


def _number(value: Any) -> Any:
    """Experiment variables arrive as strings when substituted into nested values."""
    if not isinstance(value, str):
        return value
    for parse in (int, float):
        try:
            return parse(value)
        except ValueError:
            continue
    return value


def _run_config(entry: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The Flower run config of the experiment (its outputs in the run directory)."""
    return {
        "experiment": json.dumps(entry["experiment"]),
        "out-dir": str(entry["out"]),
        **entry["run_config"],
        **extra,
    }


# ---- actions -------------------------------------------------------------------------------
def start_deployment(
    name: str,
    run_dir: str,
    nodes: int = 3,
    overrides: list[str] | None = None,
    run_config: dict | None = None,
    insecure: bool = False,
) -> dict:
    """Start a SuperLink (TLS + node auth unless ``insecure``) and ``nodes`` SuperNodes, and
    submit the experiment config of ``fedkit run OVERRIDES`` (default ``task=digits``;
    ``num_clients`` defaults to ``nodes``) with ``run_config`` (the transport's waiting
    rules; ``min-nodes`` defaults to ``nodes``). The run writes into ``run_dir``; the
    deployment's own files go to ``run_dir/deployment``."""
    nodes = int(nodes)
    out = Path(run_dir).resolve()
    ckpt.require_fresh(out / "checkpoints")  # else the run would resume an old one
    deployment = LocalDeployment(out / "deployment", nodes=nodes, insecure=insecure, app=APP)
    extra = {k: _number(v) for k, v in (run_config or {}).items()}
    entry = {
        "deployment": deployment,
        "out": out,
        "experiment": resolve([str(o) for o in (overrides or ["task=digits"])], nodes),
        "run_config": {"min-nodes": nodes, "signed-replies": not insecure, **extra},
        "runs": [],
        "events": [],
    }
    _DEPLOYMENTS[name] = entry
    t0 = time.monotonic()
    deployment.start()
    entry["runs"].append(deployment.submit(_run_config(entry)))
    entry["started_at"] = time.time()
    return {"run_id": entry["runs"][-1], "start_s": time.monotonic() - t0}


def kill_supernode(name: str, index: int) -> dict:
    """``kill -9`` SuperNode ``index`` (and its ClientApps)."""
    entry = _get(name)
    index = int(index)
    entry["deployment"].kill_node(index)
    entry["events"].append({"event": "kill_supernode", "index": index, "at": time.time()})
    return {"killed": index, "at": time.time()}


def restart_supernode(name: str, index: int) -> dict:
    """Start SuperNode ``index`` again with the same key, home and port."""
    _get(name)["deployment"].start_node(int(index))
    return {"restarted": index, "at": time.time()}


def kill_superlink(name: str) -> dict:
    """``kill -9`` the SuperLink with its superexec and ServerApp."""
    entry = _get(name)
    entry["deployment"].kill_superlink()
    entry["killed_at"] = time.time()
    done = ckpt.rounds_on_disk(entry["out"] / "checkpoints")
    entry["killed_round"] = done[0] if done else 0
    return {"killed_at": entry["killed_at"], "killed_round": entry["killed_round"]}


def restart_superlink_and_resume(name: str) -> dict:
    """Restart the SuperLink on the same database and submit the run again; it resumes
    from the newest checkpoint. Returns the new run id and the seconds the restart took."""
    entry = _get(name)
    deployment = entry["deployment"]
    up = deployment.start_superlink()
    t1 = time.monotonic()
    entry["runs"].append(deployment.submit(_run_config(entry, resume=True)))
    entry["resubmitted_at"] = time.time()
    return {"run_id": entry["runs"][-1], "superlink_up_s": up, "submit_s": time.monotonic() - t1}


def stop_deployment(name: str) -> dict:
    """Tear the deployment down (every process group it started)."""
    entry = _DEPLOYMENTS.pop(name, None)
    if entry is not None:
        entry["deployment"].close()
    return {"stopped": entry is not None}


# ---- probes --------------------------------------------------------------------------------
def checkpoints_consistent(run_dir: str) -> bool:
    """Every checkpoint on disk loads and verifies and the rounds have no gap (true when
    there is none yet)."""
    directory = Path(run_dir) / "checkpoints"
    rounds = sorted(ckpt.rounds_on_disk(directory))
    try:
        for r in rounds:
            ckpt.load(directory, r)
    except ckpt.CheckpointError:
        return False
    return not rounds or rounds == list(range(rounds[0], rounds[-1] + 1))


def wait_for_round(name: str, round: int, timeout: float = 600.0) -> float:
    """Seconds until round ``round`` has been checkpointed (raises after ``timeout``)."""
    round, timeout = int(round), float(timeout)
    directory = _get(name)["out"] / "checkpoints"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        done = ckpt.rounds_on_disk(directory)
        if done and done[0] >= round:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise TimeoutError(f"round {round} not checkpointed within {timeout} s")


def wait_for_run(name: str, timeout: float = 900.0) -> str:
    """The final status of the latest run (``finished:completed`` on success)."""
    entry = _get(name)
    return entry["deployment"].wait(entry["runs"][-1], timeout=timeout)


def record(name: str) -> dict:
    """The latest results record (``record.json`` in the run directory)."""
    path = _get(name)["out"] / "record.json"
    return json.loads(path.read_text())


def rounds_lost(name: str) -> int:
    """Rounds completed (checkpointed) before the SuperLink kill that the resumed run did not
    restore: the newest checkpoint at the kill minus the round the new run resumed from."""
    entry = _get(name)
    events = [e for e in record(name).get("events", []) if e.get("event") == "resume"]
    if "killed_round" not in entry:
        return 0
    restored = int(events[-1]["restored_round"]) if events else 0
    return max(0, int(entry["killed_round"]) - restored)


def resume_seconds(name: str) -> float:
    """Seconds from the SuperLink kill to the resumed ServerApp restoring its checkpoint."""
    return resume_breakdown(name)["total_s"]


def resume_breakdown(name: str) -> dict:
    """Where the resume time went: ``kill_to_resubmit_s`` (SuperLink restart on the same
    database, answering, run submitted), ``serverapp_s`` (the SuperExec starting the
    ServerApp process, its imports and the checkpoint restore) and ``total_s``."""
    entry = _get(name)
    events = [e for e in record(name).get("events", []) if e.get("event") == "resume"]
    if not events or "killed_at" not in entry:
        raise RuntimeError("no resume recorded after a SuperLink kill")
    resumed, killed = float(events[-1]["at"]), float(entry["killed_at"])
    resubmitted = float(entry.get("resubmitted_at", killed))
    return {
        "kill_to_resubmit_s": resubmitted - killed,
        "serverapp_s": resumed - resubmitted,
        "total_s": resumed - killed,
    }


def round_completed_with(name: str, round: int) -> dict:
    """Accepted replies and lost counters of round ``round``."""
    for m in record(name)["metrics"]:
        if m["round"] == round:
            return {"accepted": m["accepted"], "lost": m["lost"], "expected": m["expected"]}
    raise RuntimeError(f"round {round} is not in the record")


# ---- steady-state probes (true before the method too: then nothing has run yet) -----------
def run_completed(name: str) -> bool:
    """The latest run finished ``completed`` (true while no deployment is running)."""
    entry = _DEPLOYMENTS.get(name)
    return entry is None or entry.get("final_status") == "finished:completed"


def no_round_lost(name: str) -> bool:
    """No round completed before a SuperLink kill was lost (true without a deployment)."""
    return name not in _DEPLOYMENTS or rounds_lost(name) == 0


def resumed_within(name: str, seconds: float) -> bool:
    """A killed SuperLink's run resumed within ``seconds`` (true when nothing was killed)."""
    entry = _DEPLOYMENTS.get(name)
    if entry is None or "killed_at" not in entry:
        return True
    return resume_seconds(name) <= float(seconds)


def survived_node_kill(name: str) -> bool:
    """After a SuperNode kill, the round in flight completed with the other nodes (no
    quorum miss) and the restarted node came back with the same node id (true when no node
    was killed)."""
    entry = _DEPLOYMENTS.get(name)
    kills = [] if entry is None else [e for e in entry["events"] if e["event"] == "kill_supernode"]
    if not kills:
        return True
    metrics = record(name)["metrics"]
    if any(m["quorum_missed"] for m in metrics) or not metrics:
        return False
    return all(len(set(node_ids(name, k["index"]))) == 1 for k in kills)


def node_ids(name: str, index: int) -> list[int]:
    """Node ids SuperNode ``index`` reported at each (re)start, from its log."""
    log = _get(name)["deployment"].run_dir / f"node{index}.log"
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "SuperNode ID:" in line:
            out.append(int(line.rsplit(":", 1)[1].strip()))
    return out


def wait_for_completion(name: str, timeout: float = 900.0) -> str:
    """Wait for the latest run to finish; remembers and returns its final status."""
    entry = _get(name)
    entry["final_status"] = wait_for_run(name, float(timeout))
    return entry["final_status"]
