"""``fedkit.simulate``: run a strategy on a task in this process.

:func:`simulate` is the run driver (:func:`fedkit.run.driver.run`: keys, sampling, privacy
accounting, checkpoints, records) with the in-process transport
(:class:`~fedkit.simulation.transport.InProcessTransport`: an engine trains the clients,
the adversary plays its clients, a fault model decides what arrives). The Flower ServerApp
runs the same driver with its own transport, so a deployment's rounds are the simulation's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import torch

from fedkit.core.keys import Key
from fedkit.protocols import Adversary, FaultModel, NoFaults, PrivacyAccountant, Task
from fedkit.run.audit_log import AUDIT_FILE, AuditLog
from fedkit.run.callbacks import Callback, Checkpoints, Progress, RecordFiles, TensorBoard
from fedkit.run.driver import run
from fedkit.run.history import History
from fedkit.simulation.jobs import ClientJob, LocalResults
from fedkit.simulation.sequential import SequentialEngine
from fedkit.simulation.transport import InProcessTransport
from fedkit.simulation.vectorized import VectorizedEngine, vmap_blocker
from fedkit.strategy import Strategy
from fedkit.tasks.base import SupervisedTask

ENGINES = ("auto", "sequential", "vectorized")


class Engine(Protocol):
    name: str

    def train(
        self, task: Any, params: torch.Tensor, jobs: list[ClientJob], cfg: Any
    ) -> LocalResults: ...


def pick_engine(task: Task, strategy: Strategy, engine: str | Engine) -> Engine:
    """The engine to use; a vectorised request the task cannot honour falls back to the
    sequential engine with one warning (silently for tasks with their own training loop
    under ``"auto"``)."""
    if not isinstance(engine, str):
        return engine
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES} or an engine object, got {engine!r}")
    if engine == "sequential":
        return SequentialEngine()
    blocker = vmap_blocker(task, strategy.client)
    if blocker is None:
        return VectorizedEngine()
    if engine == "vectorized" or isinstance(task, SupervisedTask):
        warnings.warn(
            f"vectorised engine unavailable for task {task.name!r}: {blocker}; "
            "using the sequential engine",
            RuntimeWarning,
            stacklevel=3,
        )
    return SequentialEngine()


def simulate(
    task: Task,
    strategy: Strategy,
    *,
    rounds: int,
    key: Key | int,
    engine: str | Engine = "auto",
    adversary: Adversary | None = None,
    faults: FaultModel | None = None,
    eval_every: int = 1,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 1,
    keep_checkpoints: int | None = 3,
    resume: bool = False,
    log_dir: str | Path | None = None,
    progress: bool | None = None,
    init_params: torch.Tensor | None = None,
    accountant: PrivacyAccountant | None = None,
    callbacks: list[Callback] | tuple[Callback, ...] = (),
    config: Mapping[str, Any] | None = None,
) -> History:
    """Run ``rounds`` rounds of ``strategy`` on ``task`` and return the :class:`History`.

    ``key``: a fedkit key or an int seed. ``engine``: ``"auto"`` (vectorised when the model
    allows it), ``"sequential"``, ``"vectorized"`` or an engine object. ``adversary`` and
    ``faults`` implement :mod:`fedkit.protocols` (no-ops by default). Test metrics every
    ``eval_every`` rounds and after the last one. Checkpoints every ``checkpoint_every``
    rounds into ``checkpoint_dir`` (newest ``keep_checkpoints`` kept); ``resume`` continues
    from the newest good one, written by the same configuration, and ends bit-identical to
    an uninterrupted run; without ``resume`` the directory must hold no checkpoints.
    ``log_dir`` gets TensorBoard scalars, ``record.json`` and ``record.safetensors`` (the
    final parameters) and the hash-chained audit log ``audit.jsonl``
    (:mod:`fedkit.run.audit_log`; its head goes into the record). ``progress``: a rich progress bar (default: when stderr is a
    terminal). ``init_params`` overrides ``task.init``. ``accountant`` (default
    ``strategy.accountant``) tracks ε and stops the run before a round that would exceed
    its ``target_epsilon``. ``callbacks`` are added to the built-in ones; ``config`` is what
    the run is fingerprinted by (:func:`fedkit.run.driver.run`).
    """
    if checkpoint_every < 1:
        raise ValueError("eval_every and checkpoint_every must be >= 1")
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs a checkpoint_dir")
    if not isinstance(strategy, Strategy):
        raise TypeError(f"strategy must be a fedkit.Strategy, got {type(strategy).__name__}")
    faults = NoFaults() if faults is None else faults
    if not isinstance(faults, FaultModel):
        raise TypeError(
            f"faults {type(faults).__name__} does not implement fedkit.protocols.FaultModel"
        )
    chosen = pick_engine(task, strategy, engine)
    transport = InProcessTransport(
        chosen,
        faults,
        requested=engine if isinstance(engine, str) else type(engine).__name__,
        checkpoint_every=checkpoint_every if checkpoint_dir is not None else None,
    )
    hooks: list[Callback] = [Progress(progress)]
    if log_dir is not None:
        hooks += [TensorBoard(log_dir), RecordFiles(log_dir), AuditLog(Path(log_dir) / AUDIT_FILE)]
    checkpoints = None
    if checkpoint_dir is not None:
        checkpoints = Checkpoints(checkpoint_dir, every=checkpoint_every, keep=keep_checkpoints)
    return run(
        task,
        strategy,
        transport,
        rounds=rounds,
        key=key,
        adversary=adversary,
        accountant=accountant,
        eval_every=eval_every,
        checkpoints=checkpoints,
        resume=resume,
        callbacks=[*hooks, *callbacks],
        config=config,
        init_params=init_params,
    )
