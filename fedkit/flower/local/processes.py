"""Process utilities for a deployment on this machine: free ports, Flower's console scripts,
process groups and the processes one deployment started (read from Linux ``/proc``)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import IO

MARKER = "FEDKIT_DEPLOYMENT"  # env var tagging every process of one deployment


class DeployError(RuntimeError):
    """A step of the deployment failed (the message names it and the log to read)."""


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A TCP port nobody listens on right now and not in ``avoid`` (the ports already handed
    to processes that have not bound them yet: the kernel may give a just-released port out
    again, and two nodes of one deployment would then race for it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(1000):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise DeployError(f"no free TCP port on {host} outside the {len(avoid)} already taken")


def flower_bin(name: str) -> str:
    """Path of a Flower console script next to this interpreter (else on PATH)."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise DeployError(f"{name} not found next to {sys.executable} nor on PATH")
    return found


def spawn_ready(
    name: str,
    command: Sequence[str],
    *,
    cwd: Path,
    log: Path,
    ready: Callable[[], bool],
    timeout: float,
    env: Mapping[str, str] | None = None,
    poll: float = 0.1,
    log_hint: Path | None = None,
) -> tuple[subprocess.Popen, IO[bytes]]:
    """Start ``command`` in its own session (output appended to ``log``) and wait until
    ``ready()`` is true; the process and its open log. :class:`DeployError` naming
    ``name`` and the log to read (``log_hint``, default ``log``) if it exits or is not ready
    within ``timeout`` s (it is then stopped)."""
    out = open(log, "ab")
    proc = subprocess.Popen(
        list(command),
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=cwd,
        env=None if env is None else dict(env),
    )
    end = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out.close()
            raise DeployError(f"{name} exited with {proc.returncode}; see {log_hint or log}")
        if ready():
            return proc, out
        if time.monotonic() > end:
            stop_group(proc)
            out.close()
            raise DeployError(f"{name} not ready after {timeout} s; see {log_hint or log}")
        time.sleep(poll)


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


def kill_tagged(token: str, home: Path | None = None) -> None:
    """SIGKILL every process :func:`tagged_pids` finds."""
    for pid in tagged_pids(token, home):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def tagged_commands(token: str, home: Path, name: str) -> list[int]:
    """The :func:`tagged_pids` of ``token`` and ``home`` whose command line mentions
    ``name`` (e.g. ``flwr-serverapp``)."""
    found = []
    for pid in tagged_pids(token, home):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if name.encode() in cmdline:
            found.append(pid)
    return found
