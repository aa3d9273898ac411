"""A fedkit strategy and task as a Flower ServerApp and ClientApp (Flower 1.42 Message API).

The ServerApp runs the run driver (:func:`fedkit.run.driver.run`) with the Flower transport
(:class:`~fedkit.flower.transport.FlowerTransport`): the very same sampling, aggregation,
accounting, checkpoints and records as :func:`fedkit.simulate`. The ClientApp trains the
client the server asks for, with the key the server sent, on the partition named by its
SuperNode's node config (``partition-id``), by the task's own ``train_client``: the update
the simulation would compute.

Node config read by the ClientApp: ``partition-id`` (required) and, for fault-injection
tests only, ``corrupt``: one of :data:`fedkit.simulation.delivery.CORRUPTIONS` (the reply is
damaged the way the simulation's CORRUPT fault damages it) or ``"crash"`` (the ClientApp
raises, so the server gets an error reply).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedkit.core.keys import Key
from fedkit.flower import wire
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.flower.transport import FEDKIT, METRICS, FlowerTransport, LoopConfig
from fedkit.run import driver
from fedkit.run.callbacks import (
    Callback,
    Checkpoints,
    EventLog,
    PrintRounds,
    RecordFiles,
    TensorBoard,
)
from fedkit.simulation.delivery import CORRUPTIONS, corrupt
from fedkit.strategy import Strategy

TaskFactory = Callable[[Settings], Any]
StrategyFactory = Callable[[Settings], Strategy]


def loop_config(settings: Settings, strategy: Strategy) -> LoopConfig:
    """The transport's waiting rules from the run config (``min-nodes`` 0 = the quorum)."""
    return LoopConfig(
        round_deadline=float(settings["round-deadline"]),
        sample_timeout=float(settings["sample-timeout"]),
        min_nodes=int(settings["min-nodes"]) or strategy.quorum,
        poll_interval=float(settings["poll-interval"]),
    )


def server_callbacks(settings: Settings) -> tuple[Checkpoints | None, list[Callback]]:
    """Checkpoints and the callbacks of a deployed run, from the run config."""
    checkpoints = None
    if settings.path("checkpoint-dir"):
        keep = int(settings["keep-checkpoints"]) or None
        checkpoints = Checkpoints(settings.path("checkpoint-dir"), keep=keep)
    hooks: list[Callback] = [PrintRounds()]
    log_dir = settings.path("log-dir")
    if log_dir:
        hooks += [
            TensorBoard(log_dir),
            RecordFiles(log_dir, every_round=True),
            EventLog(Path(log_dir) / "events.jsonl"),
        ]
    return checkpoints, hooks


def make_server_app(
    task_factory: TaskFactory = build_task,
    strategy_factory: StrategyFactory = build_strategy,
    run_config: Mapping[str, Any] | None = None,
) -> ServerApp:
    """A ServerApp running the fedkit driver on the task and strategy the run config names
    (factories receive the :class:`Settings`; ``run_config`` overrides the run's)."""
    app = ServerApp()
    overrides = dict(run_config or {})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = Settings.from_run_config({**context.run_config, **overrides})
        strategy = strategy_factory(settings)
        registry = settings.path("registry")
        if registry is None and settings.path("log-dir"):
            registry = str(Path(settings.path("log-dir")) / "registry.json")
        transport = FlowerTransport.with_registry(grid, loop_config(settings, strategy), registry)
        checkpoints, hooks = server_callbacks(settings)
        driver.run(
            task_factory(settings),
            strategy,
            transport,
            rounds=settings.rounds,
            key=settings.seed,
            eval_every=int(settings["eval-every"]),
            checkpoints=checkpoints,
            resume=bool(settings["resume"]) and checkpoints is not None,
            callbacks=hooks,
        )

    return app


def partition_of(context: Context) -> int:
    """The client data (partition) this SuperNode holds, from its node config."""
    try:
        return int(context.node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            "this SuperNode needs an integer 'partition-id' in --node-config"
        ) from None


def client_key(message: Message) -> Key:
    """The key the server asks this client to train with."""
    return Key.from_hex(str(message.content.config_records[FEDKIT]["key"]))


def local_train(
    task: Any, message: Message, partition: int
) -> tuple[torch.Tensor, int, dict[str, float]]:
    """Train on ``partition`` as the server's ``train`` message asks: ``(update, examples,
    metrics)``. Raises ``ValueError`` if the message speaks of another model."""
    book = message.content.config_records[FEDKIT]
    params = wire.read_params(message.content, task.spec)
    cfg = wire.client_config_from_json(str(book["client-config"]))
    with torch.no_grad():  # as the engines call it
        update, n, metrics = task.train_client(
            params, partition, cfg, int(book["work"]), client_key(message)
        )
    out = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return update, int(n), out


def make_client_app(
    task_factory: TaskFactory = build_task,
    run_config: Mapping[str, Any] | None = None,
    *,
    assigned_data: bool = False,
) -> ClientApp:
    """A ClientApp answering the server's ``train`` messages (see the module doc);
    ``run_config`` overrides the run's. ``assigned_data``: the node trains the partition of
    whichever client the server assigned it (nodes of Flower's simulation engine, which
    are interchangeable workers over one dataset) instead of its own ``partition-id``."""
    app = ClientApp()
    overrides = dict(run_config or {})

    @app.train()
    def train(message: Message, context: Context) -> Message:
        book = message.content.config_records[FEDKIT]
        partition = int(book["client"]) if assigned_data else partition_of(context)
        task = task_factory(Settings.from_run_config({**context.run_config, **overrides}))
        update, n, metrics = local_train(task, message, partition)
        fault = str(context.node_config.get("corrupt", ""))
        if fault == "crash":
            raise RuntimeError(f"partition {partition}: injected crash")
        if fault:
            update = corrupt(update, CORRUPTIONS.index(fault), client_key(message))
        content = RecordDict()
        wire.write_update(content, update, task.spec)
        content[FEDKIT] = ConfigRecord(
            {"round": int(book["round"]), "client": int(book["client"]), "trained": True}
        )
        content[METRICS] = MetricRecord({"num-examples": n, **metrics})
        return Message(content=content, reply_to=message)

    return app
