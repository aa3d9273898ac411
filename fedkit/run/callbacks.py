"""Everything beside training, the same for every transport: callbacks of the run driver
(the shape of pfl-research's training-process callbacks).

The driver calls, in this order: :meth:`Callback.on_run_start` once (after a resume, if
any); per round :meth:`Callback.before_round` (any callback may stop the run there, e.g.
:class:`BudgetStop`) and :meth:`Callback.on_round_end`; :meth:`Callback.on_event` for the
run's events (``resume``, ``server_crash``, ``budget_alert``, ``stop``) and the events of
its course (:data:`TRAIL_EVENTS`: round open, reply verdicts, round close, checkpoints
written, nodes registered or refused, run end; what the audit log keeps, not in the
record); :meth:`Callback.on_run_end` with the finished :class:`~fedkit.run.history.History`;
:meth:`Callback.close` always, even when the run raised. :meth:`Callback.record_extras`
adds sections to every record the run builds; :meth:`Callback.phase` may wrap each phase of
a round (:meth:`fedkit.run.driver.Run.phase`: OpenTelemetry spans). Callbacks read the driver's
:class:`~fedkit.run.driver.Run`; they never change it, and their own state (open files,
writers) is theirs.

Built in: :class:`Checkpoints` (server state, privacy ledger, config fingerprint; resume),
:class:`RecordFiles` (``record.json`` + ``record.safetensors``), :class:`TensorBoard`,
:class:`Progress`, :class:`EventLog` (``events.jsonl``), :class:`BudgetStop`,
:class:`PrintRounds`; the audit log is :class:`fedkit.run.audit_log.AuditLog`, the spans
:class:`fedkit.run.tracing.Tracing`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedkit.run import checkpoint as ckpt
from fedkit.run.fingerprint import differences
from fedkit.run.progress import RoundProgress
from fedkit.run.records import TensorBoardLog, jsonable, write_json

if TYPE_CHECKING:
    from fedkit.run.driver import Run
    from fedkit.run.history import History
    from fedkit.run.plan import RoundPlan


# The course of a run, sent to on_event for the audit log; not run events (never in
# run.events, the record or events.jsonl). round_open: the sampled clients before the
# exchange; replies: every reply's verdict; round_close: the round's counts and DP spend;
# checkpoint: a checkpoint written; node_registered / node_refused: a deployment's nodes;
# run_end: the last event, before the final record is built.
TRAIL_EVENTS = frozenset(
    {
        "round_open",
        "replies",
        "round_close",
        "checkpoint",
        "node_registered",
        "node_refused",
        "run_end",
    }
)


class Callback:
    """No-op hooks; subclass and override what you need (module doc)."""

    def on_run_start(self, run: Run) -> None:
        """The run is about to execute its first round (after any resume)."""

    def before_round(self, run: Run, plan: RoundPlan) -> dict[str, Any] | None:
        """``None`` to go on, or a ``stop`` record (``{"reason": ..., ...}``) to end the run
        before ``plan`` runs. ``run.next_epsilon`` is ε after the planned round."""
        return None

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        """Round ``metrics["round"]`` is done; ``run.state`` is the state after it."""

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        """An event of the run (also appended to ``run.events`` unless it is ``stop`` or
        one of :data:`TRAIL_EVENTS`)."""

    def phase(
        self, run: Run, name: str, attributes: dict[str, Any]
    ) -> AbstractContextManager[str | None] | None:
        """A context around one phase of the run (``round``, ``send``, ``collect``,
        ``aggregate``, ``evaluate``, ``checkpoint``, ``client.train``; see
        :meth:`fedkit.run.driver.Run.phase`), or ``None`` for none. What it yields (a W3C
        ``traceparent``, :mod:`fedkit.run.tracing`) is what the phase's opener gets."""
        return None

    def on_run_end(self, run: Run, history: History) -> None:
        """The run finished (all rounds, or stopped); ``history.record`` is final."""

    def record_extras(self, run: Run) -> dict[str, Any]:
        """Sections this callback adds to the run's record (e.g. the audit log's head)."""
        return {}

    def close(self) -> None:
        """Release what the callback holds; called whatever happened."""


class Checkpoints(Callback):
    """Checkpoints of the server state, the run key, the privacy ledger and the clients'
    persistent state (when there are)
    and the run's metrics and events into ``directory`` every ``every`` rounds, after the
    last round and when the run stops; the newest ``keep`` are kept (atomic files,
    :mod:`fedkit.run.checkpoint`). Each carries the run's configuration and its fingerprint:
    :meth:`restore` refuses a checkpoint of another run key, model or configuration and says
    what differs. Each checkpoint written is announced once (:meth:`take_written`: the
    driver emits them as ``checkpoint`` events)."""

    def __init__(self, directory: str | Path, every: int = 1, keep: int | None = 3):
        if every < 1:
            raise ValueError(f"checkpoint every must be >= 1, got {every}")
        self.directory, self.every, self.keep = Path(directory), every, keep
        self.written: list[dict[str, Any]] = []

    def take_written(self) -> list[dict[str, Any]]:
        """``checkpoint`` events of the checkpoints saved since the last call (round, file,
        SHA-256 of the checkpoint's JSON file)."""
        out, self.written = self.written, []
        return out

    def require_fresh(self) -> None:
        ckpt.require_fresh(self.directory)

    def save(self, run: Run) -> None:
        meta = {
            "history": run.metrics,
            "events": run.events,
            "spec": run.spec.to_dict(),
            "task": run.task.name,
            "config": jsonable(run.config),
            "fingerprint": run.fingerprint,
        }
        tree: dict[str, Any] = {"state": run.state, "key": run.key}
        if run.ledger is not None:
            tree["ledger"] = run.ledger
        clients = run.client_states.to_tree()
        if clients:  # per-client state (worker momenta of all N clients)
            tree["clients"] = clients
        path = ckpt.save(self.directory, run.state.round, tree, meta, keep=self.keep)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self.written.append(
            {"event": "checkpoint", "round": run.state.round, "file": path.name, "sha256": digest}
        )

    def restore(self, run: Run, state0: Any, upto: int | None = None) -> ckpt.Restored:
        """The newest usable checkpoint (of a round ``<= upto``), or ``state0`` with empty
        history; :class:`~fedkit.run.checkpoint.CheckpointError` when it belongs to another
        run key, model or configuration."""
        found = ckpt.restore(state0, self.directory, run.key, run.spec, upto=upto)
        if found.meta is None:
            return found
        saved = found.meta.get("fingerprint")
        if saved is not None and saved != run.fingerprint:
            diff = differences(found.meta.get("config"), jsonable(run.config))
            raise ckpt.CheckpointError(
                f"{found.path} was written with another configuration; resume needs the same "
                "one. Differences (checkpoint -> this run): " + "; ".join(diff or ["(unknown)"])
            )
        return found

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        r = run.state.round
        if r % self.every == 0 or r == run.rounds:
            self.save(run)

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        if event.get("event") == "stop":
            self.save(run)


class RecordFiles(Callback):
    """The results record as ``directory/record.json`` after every round (so a killed run
    leaves one) when ``every_round``, and at the end with the final flat parameters as
    ``directory/record.safetensors`` (tensor ``params``, ParamSpec in the metadata).
    ``extras(record, history)`` may add sections (labels, privacy, config) first."""

    def __init__(
        self,
        directory: str | Path,
        *,
        every_round: bool = False,
        extras: Callable[[dict[str, Any], History], Mapping[str, Any]] | None = None,
    ):
        self.directory, self.every_round, self.extras = Path(directory), every_round, extras

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        if self.every_round:
            write_json(self.directory / "record.json", run.record())

    def on_run_end(self, run: Run, history: History) -> None:
        if self.extras is not None:
            history.record.update(jsonable(dict(self.extras(history.record, history))))
        history.save(self.directory / "record.json", params=True)


class TensorBoard(Callback):
    """TensorBoard scalars of every round in ``directory`` (events of rounds a resumed run
    replays are purged). Without the ``tensorboard`` package (not a dependency of the core)
    it warns once and writes nothing."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.board: TensorBoardLog | None = None

    def on_run_start(self, run: Run) -> None:
        try:
            self.board = TensorBoardLog(self.directory, purge_step=run.state.round + 1)
        except ImportError as exc:
            warnings.warn(
                f"no TensorBoard scalars: {exc} (install fedkit's 'experiments' extra)",
                RuntimeWarning,
                stacklevel=2,
            )

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        if self.board is not None:
            self.board.log(metrics)

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        # a stopped run evaluates its last round afterwards: log that round again
        if event.get("event") == "stop" and self.board is not None and run.metrics:
            self.board.log(run.metrics[-1])

    def close(self) -> None:
        if self.board is not None:
            self.board.close()
            self.board = None


class Progress(Callback):
    """A rich progress bar over the rounds (``enabled=None``: when stderr is a terminal)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = enabled
        self.bar: RoundProgress | None = None

    def on_run_start(self, run: Run) -> None:
        self.bar = RoundProgress(run.rounds, run.state.round, self.enabled).__enter__()

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(metrics)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class EventLog(Callback):
    """The run's event stream as JSON lines in ``path`` (appended, flushed per line): run
    start, every round's summary, resume, server crashes, stop, run end."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.file: Any = None

    def _write(self, entry: dict[str, Any]) -> None:
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a", encoding="utf-8")
        self.file.write(json.dumps(jsonable({"at": time.time(), **entry})) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def on_run_start(self, run: Run) -> None:
        self._write(
            {
                "event": "run_start",
                "round": run.state.round,
                "fingerprint": run.fingerprint,
                "transport": run.transport.name,
            }
        )

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        keep = ("round", "accepted", "rejected", "lost", "epsilon", "test_accuracy", "wall_time")
        self._write({"event": "round", **{k: metrics.get(k) for k in keep}})

    def on_event(self, run: Run, event: dict[str, Any]) -> None:
        if event.get("event") not in TRAIL_EVENTS:
            self._write(dict(event))

    def on_run_end(self, run: Run, history: History) -> None:
        self._write({"event": "run_end", "round": run.state.round, "stopped": run.stopped})

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


class BudgetStop(Callback):
    """Stops the run before a round whose ε (``run.next_epsilon``, from the run's privacy
    accountant) would exceed the accountant's ``target_epsilon``."""

    def before_round(self, run: Run, plan: RoundPlan) -> dict[str, Any] | None:
        target = None if run.accountant is None else run.accountant.target_epsilon
        if target is None or run.next_epsilon is None or run.next_epsilon <= float(target):
            return None
        return {
            "reason": "privacy_budget",
            "after_round": run.state.round,
            "epsilon": run.epsilon,
            "next_round_epsilon": run.next_epsilon,
            "target_epsilon": float(target),
        }


class PrintRounds(Callback):
    """One JSON line per round on stdout (``{"fedkit_round": metrics}``): what a Flower
    ServerApp's log shows."""

    def on_round_end(self, run: Run, metrics: dict[str, Any]) -> None:
        print(json.dumps({"fedkit_round": jsonable(metrics)}), flush=True)
