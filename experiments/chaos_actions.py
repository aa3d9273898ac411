"""chaostoolkit probes and actions against a local Flower deployment of an experiment config.

Experiments in ``chaos/experiments/`` call these through the ``python`` provider (module
``experiments.chaos_actions``; it composes experiment configs and the Flower App, so it
lives with them, above the chaos suite). A deployment lives in this process's registry under a name, so
an experiment starts it (``start_deployment``), hurts it (``kill_supernode``,
``kill_superlink`` + ``restart_superlink_and_resume``), checks it and always tears it down
in its rollbacks (``stop_deployment``; run them with ``--rollback-strategy always``).
Every function takes and returns plain JSON values.

The soak (``chaos/experiments/soak.json``, ``benchmarks/bench_soak.py``) starts a supervised
deployment instead (``start_supervised``: a :class:`~fedkit.flower.local.supervisor.
Supervisor` ticked by a background thread, which also probes the ServerApp's ``/healthz``
and ``/readyz`` every second), kills processes on a schedule and leaves every restart to
the supervisor (``kill_serverapp``, ``kill_supernode``, ``crash_superlink``);
``soak_report`` sums it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
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


# ---- the soak: a supervised deployment, killed on a schedule --------------------------------
def start_supervised(
    name: str,
    run_dir: str,
    nodes: int = 3,
    overrides: list[str] | None = None,
    run_config: dict | None = None,
    probe_every: float = 1.0,
) -> dict:
    """:func:`start_deployment` with a supervisor (default
    :class:`~fedkit.flower.local.supervisor.RestartPolicy`) and metrics; a background thread
    ticks the supervisor every 0.5 s and GETs ``/healthz`` and ``/readyz`` every
    ``probe_every`` s (each probe: time, path, HTTP status or ``None``)."""
    from fedkit.flower.local.supervisor import RestartPolicy

    nodes = int(nodes)
    out = Path(run_dir).resolve()
    ckpt.require_fresh(out / "checkpoints")
    deployment = LocalDeployment(
        out / "deployment", nodes=nodes, app=APP, metrics=True, restart=RestartPolicy()
    )
    extra = {k: _number(v) for k, v in (run_config or {}).items()}
    entry = {
        "deployment": deployment,
        "out": out,
        "experiment": resolve([str(o) for o in (overrides or ["task=digits"])], nodes),
        "run_config": {"min-nodes": nodes, "signed-replies": True, **extra},
        "runs": [],
        "events": [],
        "probes": [],
        "lock": threading.RLock(),
        "stop": threading.Event(),
        "errors": [],
    }
    _DEPLOYMENTS[name] = entry
    t0 = time.monotonic()
    deployment.start()
    entry["runs"].append(deployment.submit(_run_config(entry)))
    entry["started_at"] = time.time()
    url = f"http://127.0.0.1:{deployment.metrics_port}"
    thread = threading.Thread(target=_keep, args=(entry, url, float(probe_every)), daemon=True)
    thread.start()
    entry["thread"] = thread
    return {"run_id": entry["runs"][-1], "start_s": time.monotonic() - t0, "metrics": url}


def _keep(entry: dict[str, Any], url: str, every: float) -> None:
    """The soak's background thread: supervise and probe until ``stop``."""
    deployment, next_probe, last_tick = entry["deployment"], time.monotonic(), 0.0
    while not entry["stop"].is_set():
        if time.monotonic() - last_tick >= 0.5:
            last_tick = time.monotonic()
            try:
                with entry["lock"]:
                    deployment.supervisor.status(entry["runs"][0])
            except Exception as exc:  # recorded; the soak reports it
                entry["errors"].append({"at": time.time(), "error": f"{type(exc).__name__}: {exc}"})
        if time.monotonic() >= next_probe:
            next_probe += every
            _watch_node_logs(entry)
            for path in ("/healthz", "/readyz"):
                entry["probes"].append(
                    {"at": time.time(), "path": path, "code": _get_code(url + path)}
                )
        entry["stop"].wait(0.05)


def _get_code(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=0.9) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def kill_serverapp(name: str) -> dict:
    """``kill -9`` the ServerApp process(es) of the deployment (the SuperLink lives on)."""
    from fedkit.flower.local.processes import tagged_commands

    entry = _get(name)
    d = entry["deployment"]
    with entry.get("lock") or contextlib.nullcontext():
        pids = tagged_commands(d.token, d.run_dir / "superlink", "flwr-serverapp")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    entry["events"].append({"event": "kill_serverapp", "kind": "serverapp", "at": time.time()})
    return {"killed": pids}


def crash_superlink(name: str) -> dict:
    """``kill -9`` the SuperLink process alone, as a crash would (its ServerApp is left)."""
    entry = _get(name)
    with entry.get("lock") or contextlib.nullcontext():
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["deployment"].superlink.pid, signal.SIGKILL)
    entry["events"].append({"event": "crash_superlink", "kind": "superlink", "at": time.time()})
    return {"at": time.time()}


def kill_supernode_supervised(name: str, index: int) -> dict:
    """:func:`kill_supernode` under the soak's lock (the supervisor restarts it)."""
    entry = _get(name)
    with entry.get("lock") or contextlib.nullcontext():
        out = kill_supernode(name, index)
    entry["events"][-1]["kind"] = "supernode"
    return out


def soak_report(name: str) -> dict:
    """The soak's figures: rounds completed (distinct, replays counted once) against rounds
    scheduled (soak time over the median round time before the first kill), the fraction of
    probes answered (any HTTP status) and ok (200) per endpoint, and recovery times per kind
    of kill (SuperNode: until its node logs a new node id; ServerApp and SuperLink: until the
    resubmitted ServerApp restored its checkpoint, the record's ``resume`` event)."""
    import statistics

    from fedkit.flower.local.supervisor import read_restarts

    entry = _get(name)
    now = time.time()
    rec = json.loads((entry["out"] / "record.json").read_text())
    metrics = rec.get("metrics", [])
    kills = [e for e in entry["events"] if "kind" in e]
    first_kill = min((k["at"] for k in kills), default=now)
    before = [m["wall_time"] for m in metrics if m.get("wall_time")][: max(1, len(metrics))]
    resumes = sorted(float(e["at"]) for e in rec.get("events", []) if e.get("event") == "resume")
    baseline_rounds = [m["wall_time"] for m in metrics[:5] if m.get("wall_time")]
    per_round = statistics.median(baseline_rounds or before or [float("nan")])
    soak_s = now - entry["started_at"]
    recovery: dict[str, list[float]] = {}
    for i, k in enumerate(kills):
        nxt = kills[i + 1]["at"] if i + 1 < len(kills) else now
        if k["kind"] == "supernode":
            got = _node_back(entry, k, nxt)
        else:
            got = next((r - k["at"] for r in resumes if k["at"] < r <= nxt), None)
        recovery.setdefault(k["kind"], []).append(got)
    probes = {}
    for path in ("/healthz", "/readyz"):
        codes = [p["code"] for p in entry["probes"] if p["path"] == path]
        probes[path] = {
            "probes": len(codes),
            "answered": sum(c is not None for c in codes) / max(len(codes), 1),
            "ok": sum(c == 200 for c in codes) / max(len(codes), 1),
        }
    done = sorted({int(m["round"]) for m in metrics})
    restarts = read_restarts(entry["deployment"].run_dir / "restarts.jsonl")
    return {
        "soak_s": soak_s,
        "first_kill_after_s": first_kill - entry["started_at"],
        "median_round_s_before_kills": per_round,
        "rounds_scheduled": soak_s / per_round if per_round == per_round else None,
        "rounds_completed": len(done),
        "rounds_fraction": len(done) / (soak_s / per_round) if per_round == per_round else None,
        "probes": probes,
        "recovery_s": {
            kind: {
                "n": len(v),
                "recovered": sum(x is not None for x in v),
                "p50": statistics.median([x for x in v if x is not None] or [float("nan")]),
                "max": max([x for x in v if x is not None] or [float("nan")]),
                "all": v,
            }
            for kind, v in recovery.items()
        },
        "kills": kills,
        "restarts": {
            e: sum(r["event"] == e for r in restarts)
            for e in ("crashed", "restarted", "restart_failed", "gave_up", "resubmitted")
        },
        "supervisor_errors": entry.get("errors", []),
    }


def _node_back(entry: dict[str, Any], kill: dict[str, Any], until: float) -> float | None:
    """Seconds from a node kill to the node's next activation (a new ``SuperNode ID:`` line
    in its log, seen by the background thread) before ``until``."""
    for up in entry.get("node_up", []):
        if up["index"] == kill["index"] and kill["at"] < up["at"] <= until:
            return up["at"] - kill["at"]
    return None


def _watch_node_logs(entry: dict[str, Any]) -> None:
    """Note the time of every new ``SuperNode ID:`` line in the node logs (reads new bytes)."""
    offsets = entry.setdefault("log_offsets", {})
    for node in entry["deployment"].node_list:
        log = entry["deployment"].run_dir / f"node{node.index}.log"
        try:
            with open(log, "rb") as f:
                f.seek(offsets.get(node.index, 0))
                new = f.read()
        except OSError:
            continue
        cut = new.rfind(b"\n") + 1
        offsets[node.index] = offsets.get(node.index, 0) + cut
        for _ in range(new[:cut].count(b"SuperNode ID:")):
            entry.setdefault("node_up", []).append({"index": node.index, "at": time.time()})


def soak_available(name: str, target: float = 0.999) -> bool:
    """The ServerApp's ``/healthz`` answered at least ``target`` of the soak's probes (true
    while no soak runs)."""
    entry = _DEPLOYMENTS.get(name)
    if entry is None or not entry.get("probes"):
        return True
    return soak_report(name)["probes"]["/healthz"]["answered"] >= float(target)


def stop_supervised(name: str) -> dict:
    """Stop the soak's background thread, then tear the deployment down."""
    entry = _DEPLOYMENTS.get(name)
    if entry is not None and "stop" in entry:
        entry["stop"].set()
        if "thread" in entry:  # absent when start_supervised failed before starting it
            entry["thread"].join(timeout=30)
    return stop_deployment(name)
