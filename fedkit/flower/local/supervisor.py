"""Restart what crashed in a :class:`~fedkit.flower.local.deployment.LocalDeployment`.

A :class:`Supervisor` is ticked by whoever follows the run (``LocalDeployment.wait``,
``fedkit deploy local``'s follow loop) and looks after four kinds of process:

* ``superlink``: the ``flower-superlink`` process exited. Its leftovers (superexec,
  ServerApp) are killed, it is started again on the same ``--database`` (nodes, their keys
  and ids survive; nodes reconnect by themselves) and the watched run is submitted again
  with ``resume=true``: the new ServerApp continues from the newest checkpoint.
* ``serverapp``: the watched run's ``flwr-serverapp`` process was seen and is gone while
  the run is not finished, or the run ended ``finished:failed``. The old run is stopped
  (Control API ``StopRun``) and the run submitted again with ``resume=true``.
* ``nodeI``: SuperNode ``I`` exited (e.g. Flower gave up on a TLS error). What is left of
  it (launcher, ClientApps) is killed and it starts again with the same key, home and
  port; the SuperLink knows its key, so it gets its node id back once the SuperLink has
  marked the old incarnation offline (heartbeat expiry; until then an activation fails,
  the node exits and is retried after the next backoff).
* ``launcherI``: node ``I``'s warm launcher exited while its node runs: it starts again.

Each kind restarts after an exponential backoff (:class:`RestartPolicy`: ``initial`` s,
times ``factor`` per quick failure, at most ``cap`` s; a process that stayed up ``stable``
s starts over at ``initial``), at most ``budget`` times per ``window`` s. Past its budget a
node is left down (the run goes on without it); a SuperLink or ServerApp past its budget
raises :class:`SupervisorError`. Every crash, restart and give-up is one JSON line in
``restarts.jsonl`` in the deployment directory (``event``, ``kind``, ``at`` (Unix time),
``down_s`` (seconds from the crash being seen to the restart done), ``attempt``, ...).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from fedkit.flower.local.processes import DeployError, tagged_commands

if TYPE_CHECKING:
    from fedkit.flower.local.deployment import LocalDeployment

RESTARTS_FILE = "restarts.jsonl"
SERVERAPP = "flwr-serverapp"


class SupervisorError(DeployError):
    """A SuperLink or ServerApp crashed more often than its restart budget allows."""


@attrs.frozen
class RestartPolicy:
    """Backoff and budget of restarts, per supervised process (module doc)."""

    initial: float = 1.0
    factor: float = 2.0
    cap: float = 8.0
    budget: int = 20
    window: float = 600.0
    stable: float = 30.0

    def __attrs_post_init__(self) -> None:
        if not (0 <= self.initial <= self.cap and self.factor >= 1):
            raise ValueError("need 0 <= initial <= cap and factor >= 1")
        if self.budget < 0 or self.window <= 0 or self.stable < 0:
            raise ValueError("need budget >= 0, window > 0, stable >= 0")

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart after ``failures`` quick failures (>= 1)."""
        return min(self.cap, self.initial * self.factor ** max(failures - 1, 0))


@attrs.define
class Backoff:
    """Restart bookkeeping of one process: when it started, its quick failures in a row,
    its restarts in the window and when the pending restart is due (``None``: none)."""

    policy: RestartPolicy
    started: float = attrs.field(factory=time.monotonic)
    failures: int = 0
    restarts: list[float] = attrs.field(factory=list)
    due: float | None = None
    seen: float = 0.0  # when the pending crash was seen

    def crashed(self, now: float) -> float | None:
        """Schedule a restart; its delay in s, or ``None`` when the budget is spent."""
        self.failures = 1 if now - self.started >= self.policy.stable else self.failures + 1
        self.restarts = [t for t in self.restarts if now - t < self.policy.window]
        if len(self.restarts) >= self.policy.budget:
            self.due = None
            return None
        delay = self.policy.delay(self.failures)
        self.due, self.seen = now + delay, now
        return delay

    def restarted(self, now: float) -> None:
        self.restarts.append(now)
        self.started, self.due = now, None


@attrs.define(eq=False)
class Supervisor:
    """Restarts the processes of ``deployment`` (module doc) when :meth:`tick` finds them
    gone, and keeps the watched run going across restarts (:meth:`current`)."""

    deployment: LocalDeployment
    policy: RestartPolicy = attrs.field(factory=RestartPolicy)
    log_path: Path | None = None
    backoffs: dict[str, Backoff] = attrs.field(factory=dict)
    counts: Counter[str] = attrs.field(factory=Counter)
    down: set[str] = attrs.field(factory=set)  # kinds past their budget, left down
    run_config: dict[str, Any] | None = None
    runs: dict[int, int] = attrs.field(factory=dict)  # a run id -> its resubmission
    run_id: int | None = None  # the watched run (the newest submission)
    serverapp_seen: bool = False

    def __attrs_post_init__(self) -> None:
        if self.log_path is None:
            self.log_path = self.deployment.run_dir / RESTARTS_FILE

    # ---- the run --------------------------------------------------------------------
    def watch(self, run_id: int, run_config: dict[str, Any]) -> None:
        """Keep run ``run_id`` (submitted with ``run_config``) going across crashes."""
        self.run_id, self.run_config, self.serverapp_seen = run_id, dict(run_config), False

    def current(self, run_id: int) -> int:
        """The newest submission of run ``run_id`` (itself if never resubmitted)."""
        while run_id in self.runs:
            run_id = self.runs[run_id]
        return run_id

    def status(self, run_id: int) -> str:
        """Tick, then the status of the newest submission of ``run_id``; a failed watched
        run that will be resubmitted reads ``restarting:serverapp``."""
        self.tick()
        rid = self.current(run_id)
        restarting = [k for k in ("superlink", "serverapp") if self._pending(k)]
        if "superlink" in restarting or (rid == self.run_id and restarting):
            return "restarting:" + ",".join(restarting)  # no query to a SuperLink that is down
        status = self.deployment.status(rid)
        if rid == self.run_id and status == "finished:failed" and "serverapp" not in self.down:
            self._crash("serverapp", reason="run finished:failed")
            return "restarting:serverapp"
        return status

    # ---- one pass ---------------------------------------------------------------------
    def tick(self) -> None:
        """Notice crashes and do the restarts that are due."""
        d, now = self.deployment, time.monotonic()
        if d.superlink is not None and d.superlink.poll() is not None:
            self._crash("superlink", exit=d.superlink.returncode)
        for node in d.node_list:
            name = f"node{node.index}"
            if node.proc is not None and node.proc.poll() is not None:
                self._crash(name, exit=node.proc.returncode)
            elif node.launcher is not None and node.launcher.poll() is not None:
                self._crash(f"launcher{node.index}", exit=node.launcher.returncode)
        if self.run_id is not None and not self._pending("superlink", "serverapp"):
            self._watch_serverapp()
        for kind, backoff in list(self.backoffs.items()):
            if backoff.due is not None and now >= backoff.due:
                self._restart(kind, backoff)

    def _watch_serverapp(self) -> None:
        d = self.deployment
        alive = bool(tagged_commands(d.token, d.run_dir / "superlink", SERVERAPP))
        if alive:
            self.serverapp_seen = True
        elif self.serverapp_seen:
            status = d.status(self.run_id)  # the ServerApp sets it before it exits
            if not status.startswith("finished"):
                self._crash("serverapp", reason=f"process gone, run {status}")
            self.serverapp_seen = False

    def _pending(self, *kinds: str) -> bool:
        return any(k in self.backoffs and self.backoffs[k].due is not None for k in kinds)

    def _crash(self, kind: str, **detail: Any) -> None:
        if kind in self.down or self._pending(kind):
            return
        backoff = self.backoffs.setdefault(kind, Backoff(self.policy))
        delay = backoff.crashed(time.monotonic())
        if delay is None:
            self.down.add(kind)
            self._log("gave_up", kind, budget=self.policy.budget, window_s=self.policy.window)
            if not kind.startswith(("node", "launcher")):
                raise SupervisorError(
                    f"{kind} crashed more than {self.policy.budget} times in "
                    f"{self.policy.window:g} s; giving up (see {self.log_path})"
                )
            return
        self._log("crashed", kind, restart_in_s=round(delay, 3), attempt=backoff.failures, **detail)

    def _restart(self, kind: str, backoff: Backoff) -> None:
        d = self.deployment
        try:
            if kind == "superlink":
                d.kill_superlink()
                d.start_superlink()
                self._resubmit()
            elif kind == "serverapp":
                self._resubmit(stop_old=True)
            elif kind.startswith("node"):
                i = int(kind.removeprefix("node"))
                d.kill_node(i)
                d.start_node(i)
            else:
                d.start_launcher(int(kind.removeprefix("launcher")))
        except (DeployError, OSError) as exc:
            backoff.restarted(time.monotonic())
            self._log("restart_failed", kind, error=str(exc)[-500:])
            self._crash(kind, reason="restart failed")
            return
        now = time.monotonic()
        self.counts[kind.rstrip("0123456789")] += 1
        self._log("restarted", kind, down_s=round(now - backoff.seen, 3), attempt=backoff.failures)
        backoff.restarted(now)

    def _resubmit(self, stop_old: bool = False) -> None:
        if self.run_id is None or self.run_config is None:
            return
        d, old = self.deployment, self.run_id
        if stop_old and d.reachable:
            with contextlib.suppress(Exception):
                d.controller().stop_run(old)
        new = d.submit({**self.run_config, "resume": True}, watch=False)
        self.runs[old], self.run_id, self.serverapp_seen = new, new, False
        self._log("resubmitted", "serverapp", run_id=new, previous_run_id=old)

    def _log(self, event: str, kind: str, **fields: Any) -> None:
        line = {"event": event, "kind": kind, "at": time.time(), **fields}
        clean = {
            k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in line.items()
        }
        with open(self.log_path, "a") as f:
            f.write(json.dumps(clean) + "\n")


def read_restarts(path: Path) -> list[dict[str, Any]]:
    """The entries of a ``restarts.jsonl`` (none if it does not exist)."""
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
