"""``fedkit deploy local``: a whole Flower federation on this machine, torn down afterwards.

:class:`LocalDeployment` makes a CA, a server certificate (localhost, 127.0.0.1, ::1) and
one OpenSSH key per node (:mod:`fedkit.flower.pki`); starts ``flower-superlink`` with TLS,
``--enable-supernode-auth`` and a ``--database``; registers the node keys (``flwr
supernode register``); starts the SuperNodes, each with its own ``FLWR_HOME``, runtime port
and ``partition-id``; submits the app (``flwr run``) and follows the run with ``flwr ls
--run-id ID --format json`` (``flwr run --stream`` exits 0 even when a run fails) until
``finished:*``. TLS + node authentication is the default; ``insecure=True`` (no TLS, hence
no node auth) or ``auth=False`` must be asked for.

Two costs dominate a deployment on a small machine and are avoided here: ``flwr run``
walks every file under the app directory before filtering (the repository with its
``.venv`` is ~60k files: a minute per submission), so the app is first staged into
``run_dir/app`` (``pyproject.toml`` plus the ``fab-include`` files, :func:`stage_app`); and
each ``flwr`` CLI call starts a Python that imports Flower and torch (seconds of CPU), so
run status and SuperLink readiness are asked in-process through Flower's Control API
client (:class:`ControlClient`) whenever this process can reach the SuperLink, and
through the CLI, polled slowly, only when it cannot (a SuperLink inside a namespace).

Every process runs in its own session (process group): SuperLink → superexec →
serverapp, SuperNode → superexec → clientapp; :meth:`LocalDeployment.close` (also on
``with`` exit) sends SIGTERM to each group, then SIGKILL. Every Flower process gets
:data:`FLOWER_ENV` (no telemetry, no update check, no run-time dependency installation)
and, unless the caller's environment says otherwise, :data:`OFFLINE_ENV` (the Hugging Face
hub and datasets offline: nothing is downloaded at run time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from fedkit.flower.pki import ServerPKI, make_node_key, make_server_pki
from fedkit.simulation import checkpoint as ckpt

FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.1",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
FEDERATION = "fedkit-local"
MARKER = "FEDKIT_DEPLOYMENT"  # env var tagging every process of one deployment
REPO = Path(__file__).resolve().parents[2]


class DeployError(RuntimeError):
    """A step of the deployment failed (the message names it and the log to read)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def flower_bin(name: str) -> str:
    """Path of a Flower console script next to this interpreter (else on PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeployError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def toml_value(value: Any) -> str:
    """A Python scalar as a TOML value (for ``flwr run --run-config``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of ``proc`` (its own session), SIGKILL after ``grace`` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the leader is gone; its group may linger (superexec, apps)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break


def stage_app(src: Path, dest: Path) -> Path:
    """Copy the Flower App in ``src`` (its ``pyproject.toml`` and the files its
    ``[tool.flwr.app] fab-include`` patterns match, default ``**/*.py`` outside ``.venv``)
    into ``dest``, so that ``flwr run dest`` walks only those files; returns ``dest``."""
    src, dest = Path(src).resolve(), Path(dest)
    config = tomllib.loads((src / "pyproject.toml").read_text())
    patterns = config.get("tool", {}).get("flwr", {}).get("app", {}).get("fab-include")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(src / "pyproject.toml", dest / "pyproject.toml")
    for pattern in patterns or ["**/*.py"]:
        for path in src.glob(pattern.lstrip("/")):
            rel = path.relative_to(src)
            if path.is_file() and rel.parts[0] not in {".venv", ".git"}:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dest / rel)
    return dest


class ControlClient:
    """Flower's Control API client (what ``flwr ls`` uses), in this process: a status
    query costs milliseconds instead of a Python start importing Flower and torch."""

    def __init__(self, cli_home: Path, federation: str = FEDERATION):
        from flwr.cli.flower_config import read_superlink_connection
        from flwr.cli.utils import init_http_client_from_connection

        saved = os.environ.get("FLWR_HOME")
        os.environ["FLWR_HOME"] = str(cli_home)  # where the federation's config.toml is
        try:
            with contextlib.redirect_stdout(None), contextlib.redirect_stderr(None):
                connection = read_superlink_connection(federation)
                self.client = init_http_client_from_connection(connection)
                self.federation = connection.federation or ""
        finally:
            if saved is None:
                os.environ.pop("FLWR_HOME", None)
            else:
                os.environ["FLWR_HOME"] = saved

    def runs(self, run_id: int | None = None) -> dict[int, str]:
        """``{run id: status}`` of every run (or of ``run_id``), status as ``flwr ls``
        prints it (``running``, ``finished:completed``, ...)."""
        from flwr.proto.control_pb2 import ListRunsRequest

        request = ListRunsRequest() if run_id is None else ListRunsRequest(run_id=run_id)
        out = {}
        for rid, run in self.client.ListRuns(request).run_dict.items():
            status, sub = run.status.status, run.status.sub_status
            out[int(rid)] = f"{status}:{sub}" if sub else status
        return out

    def start_run(self, app: Path, run_config: Path | None = None) -> int:
        """What ``flwr run APP --run-config RUN_CONFIG`` does: build the FAB of ``app``
        and ask the SuperLink to start it; the run id."""
        import hashlib

        from flwr.cli.build import build_fab_from_disk
        from flwr.cli.config_utils import load_and_validate
        from flwr.common.config import get_metadata_from_config, parse_config_args
        from flwr.common.serde import fab_to_proto, user_config_to_proto
        from flwr.proto.control_pb2 import StartRunRequest
        from flwr.supercore.fab import Fab

        config, _ = load_and_validate(Path(app) / "pyproject.toml", check_module=False)
        fab_bytes = build_fab_from_disk(Path(app))
        get_metadata_from_config(config)  # validates [project] name and version
        fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})
        overrides = parse_config_args(None if run_config is None else [str(run_config)])
        request = StartRunRequest(
            fab=fab_to_proto(fab),
            override_config=user_config_to_proto(overrides),
            federation=self.federation,
        )
        response = self.client.StartRun(request)
        if not response.HasField("run_id"):
            raise DeployError("the SuperLink did not start the run")
        return int(response.run_id)

    def register_node(self, public_key: Path) -> int:
        """What ``flwr supernode register KEY`` does; the new node id."""
        from flwr.cli.supernode.register import try_load_public_key
        from flwr.proto.control_pb2 import RegisterNodeRequest

        request = RegisterNodeRequest(public_key=try_load_public_key(Path(public_key)))
        return int(self.client.RegisterNode(request=request).node_id)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def tagged_pids(token: str, home: Path | None = None) -> list[int]:
    """Processes whose environment carries ``FEDKIT_DEPLOYMENT=token`` (and ``FLWR_HOME=home``
    when given), read from Linux ``/proc``: every process a deployment (or one of its
    components) started, including those Flower detaches into sessions of their own (the
    SuperLink's superexec and ServerApp)."""
    tags = [f"{MARKER}={token}".encode()]
    if home is not None:
        tags.append(f"FLWR_HOME={home}".encode())
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            if all(t in env for t in tags):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@attrs.define(eq=False)
class Node:
    index: int
    home: Path
    port: int
    key: Path | None
    public_key: Path | None
    node_config: dict[str, Any]
    proc: subprocess.Popen | None = None


@attrs.define(eq=False)
class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes under ``run_dir`` (see the module doc).

    ``node_configs[i]`` adds keys to node ``i``'s ``--node-config`` (``partition-id=i`` is
    always set). ``server_wrap`` / ``node_wrap`` prefix the SuperLink's (and the ``flwr``
    CLI's) and the nodes' commands (e.g. ``["ip", "netns", "exec", NS]``); ``host`` is the
    address the SuperLink listens on, ``advertise`` (default ``host``) the one nodes and the
    CLI dial (added to the server certificate)."""

    run_dir: Path = attrs.field(converter=Path)
    nodes: int = 3
    insecure: bool = False
    auth: bool = True
    app_dir: Path = attrs.field(default=REPO, converter=Path)
    host: str = "127.0.0.1"
    node_configs: Sequence[Mapping[str, Any]] = ()
    server_wrap: Sequence[str] = ()
    node_wrap: Sequence[str] = ()
    extra_hosts: Sequence[str] = ()
    advertise: str | None = None
    port: int = 0
    pki: ServerPKI | None = None
    superlink: subprocess.Popen | None = None
    node_list: list[Node] = attrs.field(factory=list)
    logs: list[Any] = attrs.field(factory=list)
    token: str = attrs.field(factory=lambda: uuid.uuid4().hex)
    control: ControlClient | None = None
    staged_app: Path | None = None

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"a deployment needs at least one node, got {self.nodes}")
        if self.insecure and self.auth:
            self.auth = False  # node authentication needs TLS
        self.run_dir.mkdir(parents=True, exist_ok=True)

    # ---- environment -------------------------------------------------------------------
    def env(self, home: Path, **extra: str) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        env = {**OFFLINE_ENV, **os.environ, **FLOWER_ENV, "FLWR_HOME": str(home), "PATH": path}
        env.update(extra)
        return {**env, MARKER: self.token}

    @property
    def cli_home(self) -> Path:
        return self.run_dir / "cli"

    @property
    def address(self) -> str:
        """What nodes and the CLI dial: ``advertise`` (else ``host``) and the port."""
        dial = self.advertise or self.host
        host = f"[{dial}]" if ":" in dial else dial
        return f"{host}:{self.port}"

    def _spawn(self, cmd: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        out = open(self.run_dir / log, "ab")
        self.logs.append(out)
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.run_dir,
        )

    def flwr(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run the ``flwr`` CLI against this deployment; its stdout."""
        done = subprocess.run(
            [*self.server_wrap, flower_bin("flwr"), *args],
            env=self.env(self.cli_home),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.run_dir,
        )
        if check and done.returncode != 0:
            raise DeployError(
                f"flwr {' '.join(args)} failed ({done.returncode}): "
                f"{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done.stdout

    # ---- setup -------------------------------------------------------------------------
    def prepare(self) -> None:
        """Certificates, node keys, ports and the CLI's federation config."""
        if self.port == 0:
            self.port = free_port("::1" if ":" in self.host else "127.0.0.1")
        if not self.insecure:
            hosts = ("localhost", "127.0.0.1", "::1", self.address.rsplit(":", 1)[0].strip("[]"))
            hosts = (*hosts, *self.extra_hosts)
            self.pki = make_server_pki(self.run_dir / "pki", dict.fromkeys(hosts))
        for i in range(self.nodes):
            key = pub = None
            if self.auth:
                key, pub = make_node_key(self.run_dir / "pki", f"node{i}")
            extra = dict(self.node_configs[i]) if i < len(self.node_configs) else {}
            self.node_list.append(
                Node(
                    i,
                    self.run_dir / f"node{i}",
                    free_port(),
                    key,
                    pub,
                    {"partition-id": i, **extra},
                )
            )
        conn = [f"[superlink.{FEDERATION}]", f'address = "{self.address}"']
        if self.insecure:
            conn.append("insecure = true")
        else:
            conn.append(f'root-certificates = "{self.pki.ca}"')
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n' + "\n".join(conn) + "\n"
        )
        self.staged_app = stage_app(self.app_dir, self.run_dir / "app")

    def superlink_cmd(self) -> list[str]:
        cmd = [
            *self.server_wrap,
            flower_bin("flower-superlink"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--database",
            str(self.run_dir / "state.db"),
            "--disable-runtime-dependency-installation",
        ]
        if self.insecure:
            return [*cmd, "--insecure"]
        cmd += ["--ssl-ca-certfile", str(self.pki.ca), "--ssl-certfile", str(self.pki.cert)]
        cmd += ["--ssl-keyfile", str(self.pki.key)]
        return [*cmd, "--enable-supernode-auth"] if self.auth else cmd

    def start_superlink(self, timeout: float = 60.0) -> float:
        """Start the SuperLink (same database on a restart); seconds until it answers."""
        t0 = time.monotonic()
        self.superlink = self._spawn(
            self.superlink_cmd(), self.env(self.run_dir / "superlink"), "superlink.log"
        )
        self.wait_superlink(timeout)
        return time.monotonic() - t0

    @property
    def reachable(self) -> bool:
        """Whether this process can dial the SuperLink (not inside another namespace)."""
        return not self.server_wrap

    def wait_superlink(self, timeout: float) -> None:
        """Until the SuperLink answers a Control API call: its port first (cheap), then
        ``ListRuns`` (in-process where reachable, else ``flwr ls``)."""
        end = time.monotonic() + timeout
        while True:
            if self.superlink.poll() is not None:
                raise DeployError(
                    f"flower-superlink exited with {self.superlink.returncode}; "
                    f"see {self.run_dir / 'superlink.log'}"
                )
            try:
                if self.reachable:
                    host, port = self.address.rsplit(":", 1)
                    with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                        pass
                    self.controller().runs()
                    return
                out = self.flwr("ls", FEDERATION, "--format", "json", timeout=30)
                if json.loads(out).get("success", False):
                    return
                raise DeployError(out)
            except Exception:
                self.drop_controller()
                if time.monotonic() > end:
                    raise DeployError(
                        f"SuperLink not answering after {timeout} s; see superlink.log"
                    ) from None
                time.sleep(0.1 if self.reachable else 1.0)

    def controller(self) -> ControlClient:
        """The in-process Control API client (made on first use)."""
        if self.control is None:
            self.control = ControlClient(self.cli_home)
        return self.control

    def drop_controller(self) -> None:
        if self.control is not None:
            self.control.close()
            self.control = None

    def register(self, public_key: Path) -> None:
        """Register one node key with the SuperLink (``flwr supernode register``)."""
        if self.reachable:
            self.controller().register_node(public_key)
        else:
            self.flwr("supernode", "register", str(public_key), FEDERATION)

    def node_cmd(self, node: Node, key: Path | None = None) -> list[str]:
        config = " ".join(f"{k}={toml_value(v)}" for k, v in node.node_config.items())
        cmd = [
            *self.node_wrap,
            flower_bin("flower-supernode"),
            "--superlink",
            self.address,
            "--port",
            str(node.port),
            "--node-config",
            config,
            "--max-retries",
            "1000",
            "--max-wait-time",
            "600",
        ]
        if self.insecure:
            return [*cmd, "--insecure"]
        cmd += ["--root-certificates", str(self.pki.ca)]
        key = key if key is not None else node.key
        if key is not None:
            cmd += ["--auth-supernode-private-key", str(key)]
        return cmd

    def start_node(self, i: int) -> None:
        node = self.node_list[i]
        node.proc = self._spawn(self.node_cmd(node), self.env(node.home), f"node{i}.log")

    def start(self) -> LocalDeployment:
        """Prepare, start the SuperLink, register the nodes and start them."""
        self.prepare()
        self.start_superlink()
        for node in self.node_list:
            if node.public_key is not None:
                self.register(node.public_key)
        for i in range(self.nodes):
            self.start_node(i)
        return self

    # ---- runs --------------------------------------------------------------------------
    def submit(self, run_config: Mapping[str, Any] | None = None) -> int:
        """Start the app with ``run_config`` overrides (``flwr run``: in-process through
        the Control API where reachable, else the CLI); the run id."""
        app = self.staged_app or stage_app(self.app_dir, self.run_dir / "app")
        self.staged_app = app
        path = None
        if run_config:
            path = self.run_dir / f"run-config-{time.monotonic_ns()}.toml"
            path.write_text("".join(f"{k} = {toml_value(v)}\n" for k, v in run_config.items()))
        if self.reachable:
            try:
                return self.controller().start_run(app, path)
            except DeployError:
                raise
            except Exception as exc:
                self.drop_controller()
                raise DeployError(f"starting the run failed: {exc}") from exc
        args = ["run", str(app), FEDERATION, "--format", "json"]
        if path is not None:
            args += ["--run-config", str(path)]
        out = self.flwr(*args, timeout=300)
        try:
            return int(json.loads(out)["run-id"])
        except (ValueError, KeyError, TypeError):
            raise DeployError(f"flwr run gave no run id: {out[-2000:]}") from None

    def status(self, run_id: int) -> str:
        """The run's status text (``running``, ``finished:completed``, ...)."""
        if self.reachable:
            try:
                return self.controller().runs(run_id).get(run_id, "unknown")
            except Exception as exc:
                self.drop_controller()
                raise DeployError(f"status of run {run_id}: {exc}") from None
        out = self.flwr("ls", FEDERATION, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out).get("runs", [])
        return str(runs[0]["status"]) if runs else "unknown"

    def wait(self, run_id: int, timeout: float = 600.0, poll: float | None = None) -> str:
        """Poll until the run is ``finished:*``; its final status. Default poll: 0.5 s
        in-process, 3 s through the CLI (each call a Python start)."""
        poll = poll if poll is not None else (0.5 if self.reachable else 3.0)
        end = time.monotonic() + timeout
        while True:
            try:
                status = self.status(run_id)
            except (DeployError, subprocess.TimeoutExpired):
                status = "unknown"
            if status.startswith("finished"):
                return status
            if time.monotonic() > end:
                raise DeployError(f"run {run_id} not finished after {timeout} s ({status})")
            time.sleep(poll)

    def _kill(self, proc: subprocess.Popen | None, home: Path) -> None:
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in tagged_pids(self.token, home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()

    def kill_superlink(self) -> None:
        """``kill -9`` the SuperLink with its superexec and ServerApp."""
        self.drop_controller()
        self._kill(self.superlink, self.run_dir / "superlink")

    def kill_node(self, i: int) -> None:
        """``kill -9`` SuperNode ``i`` with its superexec and ClientApps."""
        node = self.node_list[i]
        self._kill(node.proc, node.home)

    def close(self) -> None:
        """Stop every process group this deployment started (nodes first)."""
        self.drop_controller()
        for node in self.node_list:
            if node.proc is not None:
                stop_group(node.proc)
        if self.superlink is not None:
            stop_group(self.superlink)
        for pid in tagged_pids(self.token):  # detached children (superexec, apps)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for f in self.logs:
            f.close()
        self.logs.clear()

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def follow(checkpoint_dir: Path, run_done: Any, every: float = 1.0) -> None:
    """Print each newly checkpointed round until ``run_done()`` is true."""
    seen, done = 0, False
    while not done:
        done = run_done()
        rounds = ckpt.rounds_on_disk(checkpoint_dir)
        if rounds and rounds[0] > seen:
            seen = rounds[0]
            print(f"round {seen} checkpointed", flush=True)
        if not done:
            time.sleep(every)


def _run_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """The options ``local`` and ``sim`` share: rounds, seed, run directory, overrides."""
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--run-dir", type=Path, default=None, help=f"default: runs/{prefix}-<time>")
    parser.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="run config override (TOML value), repeatable",
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fedkit deploy", description="Run fedkit's Flower App on a real deployment."
    )
    sub = parser.add_subparsers(dest="where", required=True)
    local = sub.add_parser("local", help="a SuperLink and N SuperNodes on this machine")
    local.add_argument("--nodes", type=int, default=3, help="number of SuperNodes")
    local.add_argument("--insecure", action="store_true", help="no TLS (and no node auth)")
    local.add_argument("--no-auth", action="store_true", help="TLS without node authentication")
    _run_options(local, "deploy")
    local.add_argument("--timeout", type=float, default=1800.0, help="seconds for the run")
    sim = sub.add_parser(
        "sim", help="the same apps on Flower's simulation engine (Ray, loopback only)"
    )
    sim.add_argument("--clients", type=int, default=3, help="number of simulated SuperNodes")
    sim.add_argument("--cpus", type=int, default=2, help="CPUs Ray may use")
    sim.add_argument("--cpus-per-client", type=float, default=1.0)
    _run_options(sim, "sim")
    return parser.parse_args(argv)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        k, sep, v = item.partition("=")
        if not sep:
            raise SystemExit(f"--config expects KEY=VALUE, got {item!r}")
        try:
            out[k.strip()] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            out[k.strip()] = v
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``fedkit deploy local ...`` (exit code 0 iff the run finished ``completed``) or
    ``fedkit deploy sim ...`` (0 iff every round ran)."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # tear down on SIGTERM too
    prefix = "sim" if args.where == "sim" else "deploy"
    run_dir = args.run_dir or Path("runs") / time.strftime(f"{prefix}-%Y%m%d-%H%M%S")
    run_dir = run_dir.resolve()
    config = parse_overrides(args.config)
    if args.rounds is not None:
        config["rounds"] = args.rounds
    if args.seed is not None:
        config["seed"] = args.seed
    if config.get("task-dir"):  # the apps do not run in this directory
        config["task-dir"] = str(Path(config["task-dir"]).resolve())
    if args.where == "sim":
        return _simulate(args, run_dir, config)
    config.setdefault("task-clients", args.nodes)
    config.setdefault("min-nodes", args.nodes)
    config.setdefault("checkpoint-dir", str(run_dir / "checkpoints"))
    config.setdefault("log-dir", str(run_dir / "logs"))
    deployment = LocalDeployment(
        run_dir, nodes=args.nodes, insecure=args.insecure, auth=not args.no_auth
    )
    with deployment:
        mode = "insecure" if deployment.insecure else "TLS" + (" + node auth" * deployment.auth)
        print(f"starting SuperLink ({mode}) and {args.nodes} SuperNodes in {run_dir}", flush=True)
        deployment.start()
        run_id = deployment.submit(config)
        print(f"run {run_id} submitted", flush=True)
        status: list[str] = []

        def done() -> bool:
            status[:] = [deployment.status(run_id)]
            return status[0].startswith("finished")

        end = time.monotonic() + args.timeout
        # every status poll is a `flwr` CLI process (about 1 s of CPU): poll every 5 s
        follow(Path(config["checkpoint-dir"]), lambda: done() or time.monotonic() > end, every=5.0)
        final = status[0] if status else "unknown"
        print(f"run {run_id}: {final}; record in {config['log-dir']}/record.json", flush=True)
    return 0 if final == "finished:completed" else 1


def _simulate(args: argparse.Namespace, run_dir: Path, config: dict[str, Any]) -> int:
    """``fedkit deploy sim``: :func:`fedkit.flower.sim.run_flower_simulation`."""
    from fedkit.flower.sim import run_flower_simulation

    config.setdefault("task-clients", args.clients)
    print(f"Flower simulation (Ray) of {config['task-clients']} clients in {run_dir}", flush=True)
    record = run_flower_simulation(
        run_dir, config, num_cpus=args.cpus, cpus_per_client=args.cpus_per_client
    )
    ran = len(record.get("metrics", []))
    wanted = int(config.get("rounds", ran))
    print(f"{ran} of {wanted} rounds; record in {run_dir / 'logs' / 'record.json'}", flush=True)
    return 0 if ran >= wanted else 1


if __name__ == "__main__":
    raise SystemExit(main())
