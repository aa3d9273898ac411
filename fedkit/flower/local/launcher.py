"""A warm launcher for one SuperNode's ClientApp tasks, in place of ``flower-superexec``.

    python -m fedkit.flower.local.launcher --appio-api-address 127.0.0.1:9094 \\
        [--poll 0.05] [--preload MOD ...] [--superexec-auth-secret-file F] [--parent-pid P]

For a SuperNode started with ``--isolation process`` (which starts no SuperExec of its own
and serves its Runtime API on ``--port``). Flower's SuperExec starts a fresh
``flwr-clientapp`` interpreter per message, which spends ~2.4 s importing torch and fedkit
before it trains for a fraction of that. This launcher is one long-lived process that polls
the Runtime API's ``AcquireTask`` (task type ``CLIENT_APP``) every ``--poll`` seconds, as
``run_superexec`` does, and runs each acquired token's
:func:`flwr.supernode.runtime.run_clientapp.run_clientapp` in a child process forked from a
``multiprocessing`` forkserver whose preload list has already imported torch, Flower's
ClientApp runtime and fedkit's client-side packages. A child costs a fork (~10 ms), not an
interpreter start, and no child is forked from a threaded process (the forkserver is
single-threaded). The module imports only the standard library at the top, so run by its
path (``python -P .../launcher.py``, what :class:`~fedkit.flower.local.LocalDeployment`
does) the launcher process holds no torch; ``python -m`` works too but imports the
``fedkit`` package, torch included (~0.5 GB resident), into the launcher as well.

Two waits of Flower's are shortened in each child, nothing else: a message object not on
the node yet is retried after ``--pull-backoff`` s (Flower: 1 s, doubling to 10 s; the
SuperNode hands out a task before it has pulled the message's objects, so the first pull
often misses), and the FAB that ``run_clientapp`` unpacks on every message to verify its
hashes is unpacked under ``--unpack-dir`` (default ``/dev/shm``: half the time of a disk).

What stays Flower's: one child per task (the isolation per message that Flower wants); the
child pulls the task input with the token, verifies and installs the FAB under
``$FLWR_HOME/apps`` (cached per hash), loads the ClientApp named by the FAB, sends
heartbeats, pushes the reply and exits. One difference: ``load_app`` reuses modules already
in ``sys.modules``, so with fedkit preloaded the node runs the fedkit installed in its own
environment, not the copy inside the FAB (which is still verified and installed). Nodes that
must run exactly the FAB's code use ``flower-superexec`` (``LocalDeployment(warm=False)``).

Children and signals:

* a child runs in a process group of its own, so a signal to the launcher's group (Ctrl-C,
  ``killpg``) never reaches it: Flower's ClientApp answers SIGTERM/SIGINT by marking its task
  finished without pushing a reply, after which the SuperNode waits for that reply forever;
* children are reaped every poll; each start and exit is logged (pid, exit code, seconds);
* on SIGTERM/SIGINT the launcher stops acquiring, lets running children finish for
  ``--grace`` seconds, then SIGKILLs them (Flower then answers the server with a
  ClientApp-crashed error once the task's token expires, ~1 min) and exits 0;
* with ``--parent-pid`` it shuts down the same way when that process (its SuperNode) is gone.

With ``--metrics-port`` the launcher also serves the node's Prometheus metrics
(:mod:`fedkit.flower.local.node_metrics`): it names a report file in the environment its
tasks inherit, each task appends a line per message, and a scrape folds in the new lines.

If the SuperNode was started with ``--superexec-auth-secret-file``, its Runtime API accepts
``AcquireTask`` only with Flower's HMAC headers: pass the same file here (the ClientApp's own
calls are authorised by the task token and need no secret).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import logging
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing import forkserver
from pathlib import Path
from typing import Any

LOG = logging.getLogger("fedkit.launcher")
PRELOAD = (
    "torch",
    "flwr.supernode.runtime.run_clientapp",
    "fedkit",
    "experiments.flower_app",
    "attacks",
    "privacy",
    "chaos",
    # what a task would otherwise import on every message (~0.3 s): the Runtime API's HTTP
    # client, the OpenSSL backend of reply signing, the FAB's zip codec
    "httpcore",
    "h11",
    "cryptography.hazmat.backends.openssl.backend",
    "encodings.cp437",
)
ACQUIRE_METHOD = "/flwr.proto.Runtime/AcquireTask"


def serve_task(
    address: str, token: str, certificates: bytes | None, backoff: float, unpack: str | None
) -> None:
    """In a forkserver child: run one ClientApp task (Flower's ``run_clientapp``), with a
    short retry of message objects (``backoff``) and the FAB unpacked under ``unpack``."""
    os.setpgid(0, 0)  # out of the launcher's group: group signals must not reach a task
    from flwr.supercore.inflatable import inflatable_utils
    from flwr.supernode.runtime import run_clientapp as clientapp

    # The SuperNode hands out the task before it has pulled the message's objects from the
    # SuperLink; Flower's first retry of a missing object comes after 1 s, up to 10 s.
    clientapp.pull_and_inflate_object_from_tree = functools.partial(
        inflatable_utils.pull_and_inflate_object_from_tree,
        initial_backoff=backoff,
        backoff_cap=10 * backoff,
    )
    if unpack is not None:
        clientapp.install_from_fab = unpacking_in(unpack, clientapp.install_from_fab)
    clientapp.run_clientapp(
        runtime_api_address=address,
        token=token,
        insecure=certificates is None,
        certificates=certificates,
        parent_pid=None,  # a dead launcher must not SIGINT a task mid-way (module doc)
        runtime_dependency_install=False,
    )


def unpacking_in(directory: str, install: Callable[..., Any]) -> Callable[..., Any]:
    """Flower's ``install_from_fab`` unpacking (and verifying) the FAB in a temporary
    directory under ``directory``: every message unpacks the whole FAB (~300 files here) to
    check its hashes, twice as fast in RAM (``/dev/shm``) as on disk. The installed app
    still goes to ``$FLWR_HOME/apps``."""

    def install_from_fab(*args: Any, **kwargs: Any) -> Any:
        default, tempfile.tempdir = tempfile.tempdir, directory
        try:
            return install(*args, **kwargs)
        finally:
            tempfile.tempdir = default

    return install_from_fab


class Launcher:
    """Polls one SuperNode's Runtime API and runs each ClientApp task in a forked child."""

    def __init__(
        self,
        address: str,
        *,
        poll: float = 0.05,
        preload: Sequence[str] = PRELOAD,
        secret: bytes | None = None,
        certificates: bytes | None = None,
        grace: float = 5.0,
        parent_pid: int | None = None,
        backoff: float = 0.05,
        unpack: str | None = None,
        metrics: Any = None,
    ) -> None:
        self.address = address
        self.poll = poll
        self.preload = [m for m in preload if _importable(m)]
        self.secret = secret
        self.certificates = certificates
        self.grace = grace
        self.parent_pid = parent_pid
        self.backoff = backoff
        self.unpack = unpack
        self.children: dict[int, tuple[Any, int, float]] = {}  # pid -> (process, task, t0)
        self.stopping = False
        self.served = 0
        self.code = 0
        self.ctx = multiprocessing.get_context("forkserver")
        self.metrics = metrics  # a node_metrics.NodeMetrics, or None

    # ---- setup ---------------------------------------------------------------------------
    def start_forkserver(self) -> float:
        """Start the forkserver now (it imports the preload list); seconds it took."""
        t0 = time.monotonic()
        self.ctx.set_forkserver_preload(self.preload)
        forkserver.ensure_running()
        # ensure_running returns before the preload is done: a first child waits for it
        probe = self.ctx.Process(target=time.sleep, args=(0,))
        probe.start()
        probe.join()
        probe.close()
        return time.monotonic() - t0

    def client(self) -> Any:
        """Flower's Runtime API client, as ``run_superexec`` builds it, failing fast (the
        loop here retries at its own pace)."""
        from flwr.supercore.interceptors import (
            RuntimeVersionHttpInterceptor,
            SuperExecAuthHttpInterceptor,
        )
        from flwr.supercore.retry import RetryInvoker, constant
        from flwr.supercore.runtime import RuntimeHttpClient

        interceptors: list[Any] = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
        if self.secret:
            interceptors.append(
                SuperExecAuthHttpInterceptor(
                    master_secret=self.secret, protected_methods=frozenset({ACQUIRE_METHOD})
                )
            )
        # no retries: every error reaches the loop (Flower's HTTP retry policy would also
        # SIGINT this process on a 401)
        retry = RetryInvoker(lambda: constant(0), (), max_tries=1, max_time=None)
        return RuntimeHttpClient.from_server_address(
            server_address=self.address,
            insecure=self.certificates is None,
            root_certificates=self.certificates,
            interceptors=interceptors,
            retry_invoker=retry,
        )

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        from flwr.proto.runtime_pb2 import AcquireTaskRequest
        from flwr.supercore.constant import TaskType

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        LOG.info("preloading %s", " ".join(self.preload))
        LOG.info("forkserver ready in %.1f s", self.start_forkserver())
        client = self.client()
        request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP])
        LOG.info("polling %s every %.3f s", self.address, self.poll)
        failures = 0
        while not self.stopping:
            self.reap()
            if self.parent_pid is not None and not _alive(self.parent_pid):
                LOG.info("SuperNode (pid %d) is gone", self.parent_pid)
                break
            try:
                res = client.AcquireTask(request)
            except Exception as exc:  # SuperNode not up yet, restarting, or gone
                if _refused(exc):
                    LOG.error(
                        "AcquireTask refused (%s): the SuperNode wants its SuperExec auth "
                        "secret (--superexec-auth-secret-file)",
                        exc,
                    )
                    self.code = 1
                    break
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    LOG.warning("AcquireTask failed (%d in a row): %s", failures, exc)
                time.sleep(min(self.poll * 2**failures, 1.0))
                continue
            failures = 0
            if res.HasField("task") and res.token:
                try:
                    self.spawn(res.task.task_id, res.token)
                except Exception:  # the token expires and Flower answers with an error
                    LOG.exception("task %d: no child could be started", res.task.task_id)
                continue  # another task may be waiting
            time.sleep(self.poll)
        self.shutdown()
        with contextlib.suppress(Exception):
            client.close()
        LOG.info("stopped after %d tasks", self.served)
        return self.code

    def spawn(self, task_id: int, token: str) -> None:
        proc = self.ctx.Process(
            target=serve_task,
            args=(self.address, token, self.certificates, self.backoff, self.unpack),
            name=f"clientapp-{task_id}",
        )
        t0 = time.monotonic()
        proc.start()
        self.children[proc.pid] = (proc, task_id, t0)
        self.served += 1
        if self.metrics is not None:
            self.metrics.task_started()
        LOG.info("task %d: pid %d started", task_id, proc.pid)

    def reap(self) -> None:
        for pid, (proc, task_id, t0) in list(self.children.items()):
            if proc.is_alive():
                continue
            LOG.info(
                "task %d: pid %d exited %s after %.2f s",
                task_id,
                pid,
                proc.exitcode,
                time.monotonic() - t0,
            )
            if self.metrics is not None:
                self.metrics.task_exited(proc.exitcode)
            proc.close()
            del self.children[pid]

    def shutdown(self) -> None:
        """Let running children finish for ``grace`` s, then SIGKILL them."""
        end = time.monotonic() + self.grace
        while self.children and time.monotonic() < end:
            time.sleep(0.05)
            self.reap()
        for pid, (_, task_id, _) in self.children.items():
            LOG.warning("task %d: pid %d still running, SIGKILL", task_id, pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc, _, _ in self.children.values():
            proc.join(5.0)
        self.reap()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            LOG.info("%s: stopping", signal.Signals(signum).name)
        self.stopping = True


def _refused(exc: Exception) -> bool:
    """Whether the Runtime API refused the call as unauthenticated (HTTP 401 or 403)."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) in (401, 403)


def _importable(module: str) -> bool:
    """Whether ``module``'s top-level package is installed (found without importing it)."""
    try:
        found = importlib.util.find_spec(module.split(".")[0]) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        LOG.warning("preload: %s is not importable here, skipped", module)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (our own dead child) still answers kill(0)
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fedkit.flower.local.launcher",
        description="Serve one SuperNode's ClientApp tasks from a warm forkserver.",
    )
    parser.add_argument(
        "--appio-api-address",
        "--runtime-api-address",
        dest="address",
        required=True,
        help="the SuperNode's Runtime API, HOST:PORT (its --port)",
    )
    parser.add_argument("--poll", type=float, default=0.05, help="seconds between polls")
    parser.add_argument(
        "--preload",
        nargs="*",
        default=list(PRELOAD),
        metavar="MOD",
        help="modules the forkserver imports once (default: %(default)s; none: no MOD)",
    )
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None)
    parser.add_argument(
        "--root-certificates",
        type=Path,
        default=None,
        help="CA of a Runtime API served over TLS (default: plain HTTP on loopback)",
    )
    parser.add_argument(
        "--pull-backoff",
        type=float,
        default=0.05,
        help="a task's first retry of a message object not on the node yet (Flower: 1 s)",
    )
    parser.add_argument(
        "--unpack-dir",
        default="/dev/shm" if os.access("/dev/shm", os.W_OK) else None,
        help="where a task unpacks the FAB to verify it (default: %(default)s)",
    )
    parser.add_argument("--grace", type=float, default=5.0, help="seconds for running tasks")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when it exits")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve the node's Prometheus metrics on this port (0: off; node_metrics.py)",
    )
    parser.add_argument("--metrics-host", default="127.0.0.1", help="address of --metrics-port")
    parser.add_argument(
        "--metrics-file",
        type=Path,
        default=None,
        help="the tasks' report file (default: one per launcher in the temp directory)",
    )
    args = parser.parse_args(argv)
    if not 0.001 <= args.poll <= 60:
        parser.error("--poll must be between 0.001 and 60 s")
    if not 0 <= args.metrics_port <= 65535:
        parser.error(f"--metrics-port must be in [0, 65535], got {args.metrics_port}")
    return args


def node_metrics_module() -> Any:
    """:mod:`fedkit.flower.local.node_metrics`; run by path (no package), loaded from its file
    next to this one so that the ``fedkit`` package (torch) is not imported."""
    if __package__:
        from fedkit.flower.local import node_metrics

        return node_metrics
    path = Path(__file__).with_name("node_metrics.py")
    spec = importlib.util.spec_from_file_location("fedkit_node_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def start_metrics(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(NodeMetrics, HTTP server)`` for ``--metrics-port`` (``(None, None)`` when off); the
    report file is named in this process's environment, which the forkserver and every task
    inherit."""
    if not args.metrics_port:
        return None, None
    nm = node_metrics_module()
    path = args.metrics_file or Path(tempfile.gettempdir()) / f"fedkit-node-{os.getpid()}.jsonl"
    metrics = nm.NodeMetrics(path)
    os.environ[nm.ENV] = str(path)
    server = nm.serve(metrics, args.metrics_host, args.metrics_port)
    LOG.info("node metrics on http://%s:%d/metrics", args.metrics_host, args.metrics_port)
    return metrics, server


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s launcher[%(process)d] %(levelname)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll otherwise
    secret = None
    if args.superexec_auth_secret_file is not None:
        from flwr.supercore.auth import load_superexec_auth_secret

        secret = load_superexec_auth_secret(str(args.superexec_auth_secret_file))
    certs = args.root_certificates.read_bytes() if args.root_certificates else None
    metrics, server = start_metrics(args)  # before the forkserver starts: it inherits the env
    launcher = Launcher(
        args.address,
        poll=args.poll,
        preload=args.preload,
        secret=secret,
        certificates=certs,
        grace=args.grace,
        parent_pid=args.parent_pid,
        backoff=args.pull_backoff,
        unpack=args.unpack_dir,
        metrics=metrics,
    )
    code = launcher.run()
    if server is not None:
        server.shutdown()
    for sig in (signal.SIGTERM, signal.SIGINT):  # stopped: a repeated signal during the
        signal.signal(sig, signal.SIG_IGN)  # interpreter's exit must not turn 0 into -15
    return code


if __name__ == "__main__":
    sys.exit(main())
