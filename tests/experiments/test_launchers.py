"""Sweeps past one machine on existing engines (docs/sweeps.md): ``fedkit run -m`` with any
Hydra launcher (basic, joblib, submitit, Ray), Flower's simulation engine attached to a
running Ray cluster, and ``fedkit tables`` over the multiruns of every launcher.

The multiruns are real sweeps of a tiny digits config in subprocesses (4 jobs on submitit and
Ray, 2 on the basic launcher; the default joblib launcher's multirun is test_cli.py's), run
once per module (:class:`Sweeps`) and shared by the tests that read them. The Ray head is
started here with ``ray start --head`` in its own session and torn down by its process group
(never ``ray stop``, which stops every Ray process on the machine). SLURM cannot run here:
its example launcher config is only rendered into an sbatch script.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from fedkit.flower.env import FLOWER_ENV
from paper.records import load_runs, record_paths

ROOT = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")
ENV = {**os.environ, **FLOWER_ENV, "RAY_USAGE_STATS_ENABLED": "0", "HYDRA_FULL_ERROR": "1"}
SMALL = ["task=digits", "rounds=1", "num_clients=3", "tensorboard=false"]
LAUNCHERS = {  # name → (overrides, seeds); the Ray address is added when its head is up
    "basic": (["hydra/launcher=basic"], (0, 1)),
    # the default, fedkit_joblib (joblib, 2 jobs): its multirun and tables are
    # test_cli.py::test_tiny_multirun_then_tables; here only its config
    "submitit_local": (["hydra/launcher=submitit_local"], (0, 1, 2, 3)),
    "ray": (["hydra/launcher=ray_cluster"], (0, 1, 2, 3)),
}
TARGETS = {
    "basic": "hydra._internal.core_plugins.basic_launcher.BasicLauncher",
    "joblib": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher",
    "ray": "hydra_plugins.hydra_ray_launcher.ray_launcher.RayLauncher",
}


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


HAS_RAY = installed("ray") and installed("hydra_plugins.hydra_ray_launcher")
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="the ray extra (hydra-ray-launcher) is missing")

pytestmark = pytest.mark.timeout(900)


def run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout, check=False
    )


def hydra_cfg(*overrides: str):
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra


# --- the launcher configs -----------------------------------------------------------------


def test_default_launcher_is_joblib_with_two_jobs_and_any_launcher_composes():
    default = hydra_cfg()
    assert default.launcher._target_ == TARGETS["joblib"] and default.launcher.n_jobs == 2
    assert hydra_cfg("hydra.launcher.n_jobs=8").launcher.n_jobs == 8
    assert hydra_cfg("hydra/launcher=joblib").launcher.n_jobs == -1  # the plugin's own
    basic = hydra_cfg("hydra/launcher=basic").launcher
    assert basic._target_ == TARGETS["basic"] and "n_jobs" not in basic
    local = hydra_cfg("hydra/launcher=submitit_local").launcher
    assert local._target_ == TARGETS["submitit_local"] and "n_jobs" not in local
    # a Ray worker resolves a relative sweep dir against its own cwd: the default is absolute
    sweep = OmegaConf.to_container(default.sweep, resolve=False)
    assert sweep["dir"].startswith("${hydra.runtime.cwd}/")


@needs_ray
def test_ray_cluster_is_the_ray_launcher_without_a_memory_setting_of_its_own():
    ray = hydra_cfg("hydra/launcher=ray").launcher
    cluster = hydra_cfg("hydra/launcher=ray_cluster").launcher
    assert ray._target_ == cluster._target_ == TARGETS["ray"]
    assert cluster.ray.init == {"address": "auto", "object_store_memory": None}
    assert cluster.ray.remote == {"num_cpus": 1}


def test_slurm_example_renders_an_sbatch_script(monkeypatch, tmp_path):
    """No SLURM here: give submitit's SLURM executor the launcher's parameters (as
    ``SlurmLauncher.launch`` does) and render the sbatch script it would submit."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    launcher = OmegaConf.to_container(
        hydra_cfg(
            "hydra/launcher=slurm",
            "hydra.launcher.partition=cpu",
            f"hydra.sweep.dir={tmp_path}",
        ).launcher,
        resolve=False,
    )
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    params = {k: v for k, v in launcher.items() if k != "_target_"}
    params["name"] = "fedkit"  # ${hydra.job.name}: known only when Hydra runs
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=str(tmp_path / ".submitit/%j"),
        slurm_max_num_timeout=params.pop("max_num_timeout"),
    )
    params.pop("submitit_folder")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m x", "uid")
    for line in (
        "#SBATCH --partition=cpu",
        "#SBATCH --cpus-per-task=2",
        "#SBATCH --time=60",
        "#SBATCH --mem=8GB",
        "#SBATCH --job-name=fedkit",
        "export FLWR_TELEMETRY_ENABLED=0",
    ):
        assert line in script, script


# --- a Ray head on this machine -------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def group_alive(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group ``pgid``."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            alive.append(int(entry.name))
    return alive


class RayHead:
    """``ray start --head`` on 127.0.0.1 (every port its own, so other heads on this machine
    are untouched), in its own session: the head's processes are one process group."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.temp = Path(tempfile.mkdtemp(prefix="fkhead-"))  # short: Ray's socket paths
        port, client, dash, agent, agent_grpc, metrics, env_agent = free_ports(7)
        self.address = f"127.0.0.1:{port}"
        cmd = [
            str(RAY), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
            "--temp-dir", str(self.temp), "--include-dashboard=false", "--num-cpus=2",
            f"--ray-client-server-port={client}", f"--dashboard-port={dash}",
            f"--dashboard-agent-listen-port={agent}", f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={env_agent}",
            "--disable-usage-stats",
        ]  # fmt: skip
        started = time.monotonic()
        self.proc = subprocess.Popen(
            cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )  # fmt: skip
        out, _ = self.proc.communicate(timeout=180)
        self.start_seconds = time.monotonic() - started
        if self.proc.returncode != 0:
            self.stop()
            pytest.fail(f"ray start failed:\n{out[-3000:]}")

    def state(self) -> dict:
        """The cluster's job and actor tables (from its GCS, no dashboard needed)."""
        code = (
            "import json, ray\n"
            f"ray.init(address={self.address!r}, logging_level='ERROR', log_to_driver=False)\n"
            "from ray._private import state\n"
            "print(json.dumps({'jobs': state.jobs(), 'actors': list(state.actors().values())},"
            " default=str))\n"
        )
        done = run([sys.executable, "-c", code], cwd=self.cwd, timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        pgid = self.proc.pid
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not group_alive(pgid):
                break
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    if not HAS_RAY:
        pytest.skip("the ray extra (hydra-ray-launcher) is missing")
    head = RayHead(tmp_path_factory.mktemp("ray_head_cwd"))
    yield head
    head.stop()


# --- the multiruns ------------------------------------------------------------------------


class Sweeps:
    """One multirun per launcher, each run once per module and then shared."""

    def __init__(self, root: Path, request: pytest.FixtureRequest) -> None:
        self.root, self.request = root, request
        self.done: dict[str, tuple[Path, subprocess.CompletedProcess, float]] = {}

    def get(self, name: str) -> tuple[Path, subprocess.CompletedProcess]:
        if name not in self.done:
            launcher, seeds = LAUNCHERS[name]
            overrides = [*launcher, *SMALL, "seed=" + ",".join(map(str, seeds))]
            if name == "ray":
                # from a cwd of its own and with the default (absolute) sweep dir: the head's
                # workers run in another cwd
                head = self.request.getfixturevalue("ray_head")
                overrides.append(f"hydra.launcher.ray.init.address={head.address}")
                cwd = self.root / "ray_driver"
                cwd.mkdir()
            else:
                cwd = ROOT
                overrides.append(f"hydra.sweep.dir={self.root / name}")
            started = time.monotonic()
            done = run([sys.executable, "-m", "experiments", "run", "-m", *overrides], cwd)
            seconds = time.monotonic() - started
            assert done.returncode == 0, done.stderr[-4000:]
            if name == "ray":
                (sweep,) = (cwd / "runs" / "multirun").glob("*/*")
            else:
                sweep = self.root / name
            self.done[name] = (sweep, done, seconds)
            line = f"{len(seeds)} jobs in {seconds:.1f} s: fedkit run -m {' '.join(overrides)}"
            print(f"\n{name}: {line}")
        sweep, done, _ = self.done[name]
        return sweep, done


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, request):
    return Sweeps(tmp_path_factory.mktemp("sweeps"), request)


def check_records(sweep: Path, launcher: str) -> list[dict]:
    """One record per seed in ``<sweep>/<job num>/``, by the launcher asked for."""
    multirun = OmegaConf.load(sweep / "multirun.yaml")
    assert multirun.hydra.launcher._target_ == TARGETS[launcher]
    seeds = LAUNCHERS[launcher][1]
    records = [json.loads((sweep / f"{i}/record.json").read_text()) for i in range(len(seeds))]
    assert [r["labels"]["seed"] for r in records] == list(seeds)
    assert all(r["final"]["round"] == 1 and r["labels"]["defense"] == "mean" for r in records)
    return records


@pytest.mark.slow
def test_basic_launcher(sweeps):
    sweep, done = sweeps.get("basic")
    assert "Launching 2 jobs locally" in done.stdout + done.stderr
    check_records(sweep, "basic")


@pytest.mark.slow
def test_submitit_local_launcher(sweeps):
    sweep, _ = sweeps.get("submitit_local")
    check_records(sweep, "submitit_local")
    jobs = {p.parent for p in (sweep / ".submitit").glob("*/*_result.pkl")}
    assert len(jobs) == 4  # one submitit job (a process of its own) per run
    for job in jobs:
        assert "-> " in next(job.glob("*_log.out")).read_text()  # the run's own line


@needs_ray
@pytest.mark.slow
def test_ray_launcher_on_a_running_head(sweeps, ray_head):
    sweep, done = sweeps.get("ray")
    check_records(sweep, "ray")
    assert sweep.is_relative_to(sweeps.root / "ray_driver")  # where the driver ran
    assert not (ray_head.cwd / "runs").exists()  # not where the head's workers run
    assert "Connected to Ray cluster" in done.stderr
    assert "(_run_job pid=" in done.stdout + done.stderr  # the jobs' lines, from Ray workers
    (job,) = [
        j for j in ray_head.state()["jobs"] if "hydra/launcher=ray_cluster" in j["Entrypoint"]
    ]
    assert job["IsDead"]  # the sweep's driver came and went


@needs_ray
@pytest.mark.slow
def test_flower_simulation_attaches_to_the_ray_head(ray_head, tmp_path):
    out = tmp_path / "sim"
    cmd = [
        sys.executable, "-m", "experiments", "deploy", "sim", "--nodes", "3",
        "--ray-address", ray_head.address, "task=digits", "rounds=2", f"out_dir={out}",
    ]  # fmt: skip
    started = time.monotonic()
    done = run(cmd, ROOT)
    print(f"\nflower-sim on the head: 3 nodes x 2 rounds in {time.monotonic() - started:.1f} s")
    assert done.returncode == 0, done.stderr[-4000:]
    assert "2 of 2 rounds" in done.stdout
    record = json.loads((out / "record.json").read_text())
    assert record["run"]["engine_used"] == "flower-simulation"
    assert [m["accepted"] for m in record["metrics"]] == [3, 3]
    assert not (out / "simulation" / "ray").exists()  # no Ray of its own
    state = ray_head.state()
    (job,) = [j for j in state["jobs"] if f"out_dir={out}" in j["Entrypoint"]]
    assert job["IsDead"]
    actors = [a for a in state["actors"] if a["JobID"] == job["JobID"]]
    assert actors and all("ClientAppActor" in a["ActorClassName"] for a in actors)
    assert len(actors) == 2  # the head's 2 CPUs, 1 per client


@pytest.mark.slow
def test_tables_read_the_multiruns_of_every_launcher(sweeps, tmp_path):
    names = ["basic", "submitit_local"] + (["ray"] if HAS_RAY else [])
    sweep_dirs = {name: sweeps.get(name)[0] for name in names}
    accuracy: dict[int, set[float]] = {}
    for name, sweep in sweep_dirs.items():
        runs = load_runs(sweep)
        assert [r.seed for r in runs] == list(LAUNCHERS[name][1]), name
        for r in runs:
            accuracy.setdefault(r.seed, set()).add(r.accuracy)
    # the same config and seed give the same run, whatever launched it
    assert all(len(a) == 1 for a in accuracy.values()), accuracy
    out = tmp_path / "tables"
    done = run(
        [sys.executable, "-m", "experiments", "tables", str(sweeps.root), "--out", str(out),
         "--no-figures"], ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{sum(len(LAUNCHERS[n][1]) for n in names)} records" in done.stdout
    assert "| mean |" in (out / "attack_defense.md").read_text()


def test_record_paths_pass_over_hydra_submitit_and_ray_directories(tmp_path):
    record = json.dumps({"format": "fedkit.run/1", "labels": {"seed": 0}, "final": {}})
    for rel in (
        "sweep/0/record.json",
        "sweep/0/.hydra/record.json",
        "sweep/.submitit/123/record.json",
        "sim/simulation/ray/session_2026/logs/record.json",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(record)
    (tmp_path / "sim/simulation/ray/session_latest").symlink_to("session_2026")
    (tmp_path / "link").symlink_to(tmp_path / "sweep")  # not followed: no second copy
    assert record_paths(tmp_path) == [tmp_path / "sweep/0/record.json"]
    assert [r.path for r in load_runs(tmp_path)] == ["sweep/0/record.json"]
