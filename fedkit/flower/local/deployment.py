"""``LocalDeployment``: a whole Flower federation on this machine, torn down afterwards.

It makes a CA, a server certificate (localhost, 127.0.0.1, ::1) and one OpenSSH key per node
(:mod:`fedkit.flower.pki`); starts ``flower-superlink`` with TLS, ``--enable-supernode-auth``
and a ``--database``; registers the node keys (Control API ``RegisterNode``, what ``flwr
supernode register`` does); starts the SuperNodes, each with its own ``FLWR_HOME``, runtime
port and ``partition-id``; submits the app (:mod:`fedkit.flower.local.staging`) and follows
the run until ``finished:*``. TLS + node authentication is the default; ``insecure=True``
(no TLS, hence no node auth) or ``auth=False`` must be asked for.

Run status and SuperLink readiness are asked in-process through Flower's Control API
(:mod:`fedkit.flower.local.control`) whenever this process can reach the SuperLink, and
through the ``flwr`` CLI, polled slowly, only when it cannot (a SuperLink inside a network
namespace).

Nodes are warm by default (``warm=True``): each SuperNode runs with ``--isolation process``
and short idle sleeps (:mod:`fedkit.flower.local.supernode`, at most ``node_poll`` s), and
one launcher per node (:mod:`fedkit.flower.local.launcher`, polling every ``launcher_poll``
s, log ``nodeN-launcher.log``) serves its ClientApp tasks from a forkserver that has torch
and fedkit imported, instead of a new ``flwr-clientapp`` interpreter per message. Node and
launcher share a per-node SuperExec auth secret (``run_dir/secrets``), so only the launcher
may acquire the node's tasks; both run by file path (:func:`script`), so neither imports
torch. ``warm=False`` is Flower's SuperExec; ``node_poll=None`` Flower's own sleeps.

With ``metrics`` every warm node's launcher serves the node's Prometheus metrics
(:mod:`fedkit.flower.local.node_metrics`) and the ServerApp gets a ``metrics-port``; with
``prometheus`` a Prometheus server scrapes them all (:mod:`fedkit.flower.local.prometheus`).

Every process runs in its own session (process group): SuperLink → superexec → serverapp,
SuperNode (→ superexec → clientapp), launcher → forkserver (its clientapps in groups of
their own); :meth:`LocalDeployment.close` (also on ``with`` exit) sends SIGTERM to each
group, then SIGKILL, then kills what is left of the deployment by its environment tag.
Every Flower process gets :data:`fedkit.flower.env.FLOWER_ENV` and, unless the caller's
environment says otherwise, :data:`fedkit.flower.env.OFFLINE_ENV`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from fedkit.flower.env import FLOWER_ENV, OFFLINE_ENV
from fedkit.flower.local import launcher
from fedkit.flower.local import supernode as fast_supernode
from fedkit.flower.local.control import FEDERATION, ControlClient
from fedkit.flower.local.processes import (
    MARKER,
    DeployError,
    flower_bin,
    free_port,
    stop_group,
    tagged_pids,
)
from fedkit.flower.local.prometheus import Prometheus, Target
from fedkit.flower.local.proxy import Proxy, ProxyLimits, ProxyTLS, known_keys
from fedkit.flower.local.staging import AppSource, toml_value
from fedkit.flower.local.supervisor import RestartPolicy, Supervisor, SupervisorError
from fedkit.flower.pki import ServerPKI, make_node_key, make_server_pki
from fedkit.flower.registry import NodeRegistry
from fedkit.run import checkpoint as ckpt


@attrs.define(eq=False)
class Node:
    index: int
    home: Path
    port: int
    key: Path | None
    public_key: Path | None
    node_config: dict[str, Any]
    proc: subprocess.Popen | None = None
    node_id: int | None = None
    launcher: subprocess.Popen | None = None
    secret: Path | None = None  # SuperExec auth secret shared by the node and its launcher
    metrics_port: int = 0  # the launcher's Prometheus endpoint (0: none)


@attrs.define(eq=False)
class LocalDeployment:
    """A SuperLink and ``nodes`` SuperNodes under ``run_dir`` (see the module doc).

    ``node_configs[i]`` adds keys to node ``i``'s ``--node-config`` (``partition-id=i`` is
    always set). ``server_wrap`` / ``node_wrap`` prefix the SuperLink's (and the ``flwr``
    CLI's) and the nodes' commands, launchers included (e.g. ``["ip", "netns", "exec",
    NS]``); ``host`` is the address the SuperLink listens on, ``advertise`` (default
    ``host``) the one nodes and the CLI dial (added to the server certificate). ``warm``:
    one warm launcher per node instead of Flower's SuperExec, polling every
    ``launcher_poll`` s (default: half of ``node_poll``); ``node_poll``: the SuperNodes'
    longest idle sleep in seconds (default :func:`idle_poll`; ``None``: Flower's own 3 s);
    see the module doc. ``metrics``: Prometheus endpoints on free loopback ports, one per
    warm node's launcher and one for the ServerApp (passed as run config ``metrics-port``);
    ``prometheus`` (implies ``metrics``): a Prometheus server scraping them every
    ``scrape_interval`` s (:mod:`fedkit.flower.local.prometheus`, in ``run_dir/prometheus``),
    stopped with the deployment. ``restart``: a :class:`~fedkit.flower.local.supervisor.
    RestartPolicy` under which a :class:`~fedkit.flower.local.supervisor.Supervisor`
    (``supervisor``, made by :meth:`start`) restarts a crashed SuperLink, ServerApp, node or
    launcher whenever :meth:`wait` polls, resubmitting the submitted run with ``resume``.
    ``node_heartbeat``: the nodes' heartbeat interval (fedkit's SuperNode only, i.e.
    ``node_poll`` set). :meth:`status` retries a failing query for ``status_patience`` s."""

    run_dir: Path = attrs.field(converter=Path)
    nodes: int = 3
    insecure: bool = False
    auth: bool = True
    app: AppSource | None = None
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
    warm: bool = True
    node_poll: float | None = attrs.field(
        default=attrs.Factory(lambda self: idle_poll(self.nodes), takes_self=True)
    )
    launcher_poll: float | None = None  # default: half the nodes' idle poll
    metrics: bool = False
    prometheus: bool = False
    scrape_interval: float = 1.0
    metrics_port: int = 0  # the ServerApp's metrics endpoint (run config metrics-port)
    prom: Prometheus | None = None
    proxy: ProxyLimits | None = None  # nodes dial an nginx with these limits (start_proxy)
    proxy_server: Proxy | None = None
    restart: RestartPolicy | None = None  # supervise: restart what crashes (supervisor.py)
    supervisor: Supervisor | None = None
    node_heartbeat: float | None = 10.0  # nodes' heartbeat interval (s); None: Flower's 30
    status_patience: float = 30.0  # seconds status() retries a failing query

    def __attrs_post_init__(self) -> None:
        if self.nodes < 1:
            raise ValueError(f"a deployment needs at least one node, got {self.nodes}")
        if self.insecure and self.auth:
            self.auth = False  # node authentication needs TLS
        if self.proxy is not None and (self.server_wrap or self.node_wrap):
            raise ValueError("proxy= runs nginx on this namespace's loopback; no wraps")
        if self.prometheus:
            self.metrics = True
            if self.server_wrap or self.node_wrap:
                raise ValueError(
                    "prometheus=True scrapes loopback ports of this namespace; it cannot reach "
                    f"wrapped processes (server_wrap={list(self.server_wrap)}, "
                    f"node_wrap={list(self.node_wrap)})"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def source(self) -> AppSource:
        """The Flower App this deployment submits (``app``, e.g. fedkit's experiment app
        ``experiments.flower_app.APP``)."""
        if self.app is None:
            raise DeployError(
                "LocalDeployment needs app=: the Flower App to submit (an AppSource, e.g. "
                "experiments.flower_app.APP)"
            )
        return self.app

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

    @property
    def node_address(self) -> str:
        """What SuperNodes dial: the proxy when there is one, else :attr:`address`."""
        return self.proxy_server.address if self.proxy_server is not None else self.address

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
        taken = {self.port}  # ports handed out here are never handed out twice
        if not self.insecure:
            hosts = ("localhost", "127.0.0.1", "::1", self.address.rsplit(":", 1)[0].strip("[]"))
            hosts = (*hosts, *self.extra_hosts)
            self.pki = make_server_pki(self.run_dir / "pki", dict.fromkeys(hosts))
        for i in range(self.nodes):
            key = pub = None
            if self.auth:
                key, pub = make_node_key(self.run_dir / "pki", f"node{i}")
            extra = dict(self.node_configs[i]) if i < len(self.node_configs) else {}
            if key is not None:  # the ClientApp signs its replies with the node's key
                extra.setdefault("signing-key", str(key))
            port = free_port(avoid=taken)
            taken.add(port)
            node = Node(i, self.run_dir / f"node{i}", port, key, pub, {"partition-id": i, **extra})
            if self.warm and self.metrics:
                node.metrics_port = free_port(avoid=taken)
                taken.add(node.metrics_port)
            if self.warm:
                node.secret = self.run_dir / "secrets" / f"node{i}.superexec"
                node.secret.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                node.secret.touch(mode=0o600)
                node.secret.write_bytes(os.urandom(32))
            self.node_list.append(node)
        if self.metrics and self.metrics_port == 0:
            self.metrics_port = free_port(avoid=taken)
        conn = [f"[superlink.{FEDERATION}]", f'address = "{self.address}"']
        if self.insecure:
            conn.append("insecure = true")
        else:
            conn.append(f'root-certificates = "{self.pki.ca}"')
        self.cli_home.mkdir(parents=True, exist_ok=True)
        (self.cli_home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n' + "\n".join(conn) + "\n"
        )
        self.staged_app = self.source().stage(self.run_dir / "app")

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

    def register(self, public_key: Path) -> int:
        """Register one node key with the SuperLink (``flwr supernode register``); the node
        id the SuperLink bound to it."""
        if self.reachable:
            return self.controller().register_node(public_key)
        out = self.flwr("supernode", "register", str(public_key), FEDERATION, "--format", "json")
        try:
            return int(json.loads(out)["node-id"])
        except (ValueError, KeyError, TypeError):
            raise DeployError(f"flwr supernode register gave no node id: {out[-2000:]}") from None

    @property
    def registry_path(self) -> Path:
        """The server's node registry (:mod:`fedkit.flower.registry`), provisioned at start
        with node ``i``'s registered id → client ``i``."""
        return self.run_dir / "registry.json"

    def node_cmd(self, node: Node, key: Path | None = None) -> list[str]:
        config = " ".join(f"{k}={toml_value(v)}" for k, v in node.node_config.items())
        if self.node_poll is None:
            supernode = [flower_bin("flower-supernode")]
        else:  # Flower's SuperNode, shorter idle sleeps
            supernode = script(fast_supernode)
        cmd = [
            *self.node_wrap,
            *supernode,
            "--superlink",
            self.node_address,
            "--port",
            str(node.port),
            "--node-config",
            config,
            "--max-retries",
            "1000",
            "--max-wait-time",
            "600",
        ]
        if self.warm:  # tasks are served by the node's launcher (launcher_cmd)
            cmd += ["--isolation", "process"]
            if node.secret is not None:
                cmd += ["--superexec-auth-secret-file", str(node.secret)]
        if self.insecure:
            return [*cmd, "--insecure"]
        cmd += ["--root-certificates", str(self.pki.ca)]
        key = key if key is not None else node.key
        if key is not None:
            cmd += ["--auth-supernode-private-key", str(key)]
        return cmd

    def node_env(self, node: Node) -> dict[str, str]:
        extra = {} if self.node_poll is None else {fast_supernode.POLL_ENV: str(self.node_poll)}
        if self.node_poll is not None and self.node_heartbeat is not None:
            extra[fast_supernode.HEARTBEAT_ENV] = str(self.node_heartbeat)
        return self.env(node.home, **extra)

    def launcher_cmd(self, node: Node) -> list[str]:
        """The warm launcher serving ``node``'s ClientApp tasks (inside ``node_wrap``)."""
        cmd = [
            *self.node_wrap,
            *script(launcher),
            "--appio-api-address",
            f"127.0.0.1:{node.port}",
            "--poll",
            str(self.launcher_poll or (self.node_poll or idle_poll(self.nodes)) / 2),
            "--grace",
            "2",
        ]
        if node.secret is not None:
            cmd += ["--superexec-auth-secret-file", str(node.secret)]
        if node.proc is not None:
            cmd += ["--parent-pid", str(node.proc.pid)]
        if node.metrics_port:
            cmd += ["--metrics-port", str(node.metrics_port)]
            cmd += ["--metrics-file", str(node.home / "node-metrics.jsonl")]
        return cmd

    def start_node(self, i: int) -> None:
        """Start SuperNode ``i`` (and, when warm, its launcher)."""
        node = self.node_list[i]
        node.proc = self._spawn(self.node_cmd(node), self.node_env(node), f"node{i}.log")
        if self.warm:
            self.start_launcher(i)

    def start_launcher(self, i: int) -> None:
        """Start node ``i``'s warm launcher (its node running)."""
        node = self.node_list[i]
        node.launcher = self._spawn(
            self.launcher_cmd(node), self.node_env(node), f"node{i}-launcher.log"
        )

    def start(self) -> LocalDeployment:
        """Prepare, start the SuperLink, register the nodes and start them."""
        self.prepare()
        self.start_superlink()
        provision = {}
        for node in self.node_list:
            if node.public_key is not None:
                node.node_id = self.register(node.public_key)
                provision[node.node_id] = int(node.node_config.get("partition-id", node.index))
        if self.proxy is not None:
            self.start_proxy()
        for i in range(self.nodes):
            self.start_node(i)
        if not self.auth:  # no registration: the node ids appear when the nodes connect
            for node in self.node_list:
                node.node_id = self.wait_node_id(node)
                provision[node.node_id] = int(node.node_config.get("partition-id", node.index))
        if provision:
            NodeRegistry.load(self.registry_path).provision(provision)
        if self.prometheus:
            self.prom = Prometheus(
                self.run_dir / "prometheus",
                self.scrape_targets(),
                self.scrape_interval,
                env={**os.environ, MARKER: self.token},  # found by close() like the others
            ).start()
        if self.restart is not None:
            self.supervisor = Supervisor(self, self.restart)
        return self

    def start_proxy(self) -> Proxy:
        """nginx in front of the Fleet API (:mod:`fedkit.flower.local.proxy`, in
        ``run_dir/proxy``): TLS terminated there with the server certificate and
        re-encrypted to the SuperLink; with node auth only the registered keys pass."""
        tls = None if self.insecure else ProxyTLS(self.pki.cert, self.pki.key, self.pki.ca)
        keys = [(f"node{n.index}", n.public_key) for n in self.node_list if n.public_key]
        self.proxy_server = Proxy(
            self.run_dir / "proxy",
            self.address,
            self.proxy,
            tls,
            known_keys(keys) if self.auth else None,
            env={**os.environ, MARKER: self.token},
        ).start()
        return self.proxy_server

    def scrape_targets(self) -> list[Target]:
        """The ServerApp's endpoint (job ``fedkit-server``) and every node's (job
        ``fedkit-node``, label ``node``: its index)."""
        targets = [Target("fedkit-server", f"127.0.0.1:{self.metrics_port}")]
        for node in self.node_list:
            if node.metrics_port:
                labels = {"node": str(node.index)}
                targets.append(Target("fedkit-node", f"127.0.0.1:{node.metrics_port}", labels))
        return targets

    def wait_node_id(self, node: Node, timeout: float = 120.0) -> int:
        """The node id SuperNode ``node`` got when it connected (from its log)."""
        log = self.run_dir / f"node{node.index}.log"
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            text = log.read_text(errors="replace") if log.exists() else ""
            for line in reversed(text.splitlines()):
                if "SuperNode ID:" in line:
                    return int(line.rsplit("SuperNode ID:", 1)[1].split()[0])
            if node.proc is not None and node.proc.poll() is not None:
                raise DeployError(f"SuperNode {node.index} exited; see {log}")
            time.sleep(0.2)
        raise DeployError(f"SuperNode {node.index} has no node id after {timeout} s; see {log}")

    # ---- runs --------------------------------------------------------------------------
    def submit(self, run_config: Mapping[str, Any] | None = None, watch: bool = True) -> int:
        """Start the app with ``run_config`` overrides (``flwr run``: in-process through
        the Control API where reachable, else the CLI); the run id. The provisioned node
        registry is passed as ``registry`` unless the run config names one. With a
        ``supervisor`` (and ``watch``) the run is resubmitted with ``resume`` after a crash."""
        run_id = self._submit(dict(run_config or {}))
        if self.supervisor is not None and watch:
            self.supervisor.watch(run_id, dict(run_config or {}))
        return run_id

    def _submit(self, run_config: dict[str, Any]) -> int:
        app = self.staged_app or self.source().stage(self.run_dir / "app")
        self.staged_app = app
        path = None
        if self.registry_path.exists() and "registry" in self.source().config:
            run_config.setdefault("registry", str(self.registry_path))
        if self.metrics_port and "metrics-port" in self.source().config:
            run_config.setdefault("metrics-port", self.metrics_port)
            if self.prom is not None:  # the ServerApp waits for a scrape after its last round
                run_config.setdefault("metrics-linger", max(10 * self.scrape_interval, 5.0))
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
        """The run's status text (``running``, ``finished:completed``, ...). A failing
        query is retried with backoff (0.2 s doubling to 5 s) for ``status_patience`` s,
        then raises :class:`DeployError` naming the last error."""
        t0, delay, tries = time.monotonic(), 0.2, 0
        while True:
            tries += 1
            try:
                return self._status(run_id)
            except Exception as exc:  # any failure of the query is retried
                self.drop_controller()
                spent = time.monotonic() - t0
                if spent + delay > self.status_patience:
                    raise DeployError(
                        f"status of run {run_id} failed {tries} times in {spent:.1f} s; last "
                        f"error: {type(exc).__name__}: {str(exc)[-500:]}"
                    ) from exc
                time.sleep(delay)
                delay = min(2 * delay, 5.0)

    def _status(self, run_id: int) -> str:
        if self.reachable:
            return self.controller().runs(run_id).get(run_id, "unknown")
        out = self.flwr("ls", FEDERATION, "--run-id", str(run_id), "--format", "json")
        runs = json.loads(out).get("runs", [])
        return str(runs[0]["status"]) if runs else "unknown"

    def wait(self, run_id: int, timeout: float = 600.0, poll: float | None = None) -> str:
        """Poll until the run is ``finished:*``; its final status. Default poll: 0.5 s
        in-process, 3 s through the CLI (each call a Python start). With a ``supervisor``
        each poll ticks it and follows the run's resubmissions."""
        poll = poll if poll is not None else (0.5 if self.reachable else 3.0)
        end = time.monotonic() + timeout
        while True:
            try:
                if self.supervisor is not None:
                    status = self.supervisor.status(run_id)
                else:
                    status = self.status(run_id)
            except (DeployError, subprocess.TimeoutExpired) as exc:
                if isinstance(exc, SupervisorError):
                    raise
                status = "unknown"
            if status.startswith("finished"):
                return status
            if time.monotonic() > end:
                raise DeployError(f"run {run_id} not finished after {timeout} s ({status})")
            time.sleep(poll)

    def _kill(self, home: Path, *procs: subprocess.Popen | None) -> None:
        for proc in procs:
            if proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if not any(procs):
            return
        for pid in tagged_pids(self.token, home):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for proc in procs:
            if proc is not None:
                proc.wait()

    def kill_superlink(self) -> None:
        """``kill -9`` the SuperLink with its superexec and ServerApp."""
        self.drop_controller()
        self._kill(self.run_dir / "superlink", self.superlink)

    def kill_node(self, i: int) -> None:
        """``kill -9`` SuperNode ``i`` with its superexec (or launcher) and ClientApps."""
        node = self.node_list[i]
        self._kill(node.home, node.proc, node.launcher)

    def close(self) -> None:
        """Stop every process group this deployment started (Prometheus, then nodes)."""
        self.drop_controller()
        if self.prom is not None:
            self.prom.stop()
        procs = [p for n in self.node_list for p in (n.launcher, n.proc) if p is not None]
        for proc in procs:  # all nodes and launchers shut down at once, then are waited for
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        end = time.monotonic() + 5.0
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(end - time.monotonic(), 0.1))
            with contextlib.suppress(ProcessLookupError):  # stragglers, what the group left
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self.proxy_server is not None:
            self.proxy_server.stop()
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


def idle_poll(nodes: int, cpus: int | None = None) -> float:
    """Default idle poll of a local deployment's SuperNodes (s); launchers poll twice as
    often. A poll costs CPU whether or not a message waits: ~11 ms per SuperNode pull (its
    share and the SuperLink's: TLS, node authentication, a state query) and ~3 ms per
    launcher poll (both measured on a 2-core machine, ``benchmarks/results/deployment.md``).
    The interval grows with nodes per core to keep idle polling near 15 % of the machine:
    0.1 s (the floor) up to ~2 nodes per core, 0.66 s for 12 nodes on 2 cores, at most 1 s;
    a message then waits half an interval on average before its node sees it."""
    cpus = cpus or os.cpu_count() or 1
    return min(1.0, max(0.1, 0.11 * nodes / cpus))


def script(module: Any) -> list[str]:
    """The command running one of fedkit's stdlib-only scripts by its file: ``python -m``
    would import the ``fedkit`` package, and with it torch (~0.5 GB and 2 s), into every
    SuperNode and launcher. ``-P``: the script's own directory stays off ``sys.path``."""
    return [sys.executable, "-P", str(Path(module.__file__).resolve())]


def follow(
    checkpoint_dir: Path, run_done: Any, every: float = 1.0, patience: float = 120.0
) -> None:
    """Print each newly checkpointed round until ``run_done()`` is true. A ``run_done``
    that raises is retried with backoff (``every`` doubling to 10 s) until it has failed
    for ``patience`` s in a row; then :class:`DeployError` names the cause
    (a :class:`~fedkit.flower.local.supervisor.SupervisorError` is not retried)."""
    seen, done, failing_since, delay = 0, False, None, every
    while not done:
        try:
            done = run_done()
            failing_since, delay = None, every
        except SupervisorError:
            raise
        except Exception as exc:  # a status poll may fail in any way
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since + delay > patience:
                raise DeployError(
                    f"gave up following the run: its status could not be read for "
                    f"{now - failing_since:.0f} s; last error: {type(exc).__name__}: {exc}"
                ) from exc
            print(
                f"status check failed ({type(exc).__name__}); retrying in {delay:g} s", flush=True
            )
            time.sleep(delay)
            delay = min(2 * delay, 10.0)
            continue
        rounds = ckpt.rounds_on_disk(checkpoint_dir)
        if rounds and rounds[0] > seen:
            seen = rounds[0]
            print(f"round {seen} checkpointed", flush=True)
        if not done:
            time.sleep(every)
