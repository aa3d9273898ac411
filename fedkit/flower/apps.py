"""A fedkit strategy and task as a Flower ServerApp and ClientApp (Flower 1.42 Message API).

The ServerApp runs :class:`~fedkit.flower.server_loop.ServerLoop`, which calls the very
same ``Strategy.sample / plan_work / round`` as :func:`fedkit.simulate`. The ClientApp
trains with the simulation's sequential engine (:class:`fedkit.simulation.SequentialEngine`,
i.e. :func:`fedkit.client.local_step`) on the partition named by the SuperNode's node config
(``partition-id``), with the key the server sent, so a client's update is the one the
simulation would compute.

Node config read by the ClientApp: ``partition-id`` (required) and, for fault-injection
tests only, ``corrupt``: one of :data:`fedkit.simulation.delivery.CORRUPTIONS` (the reply is
damaged the way the simulation's CORRUPT fault damages it) or ``"crash"`` (the ClientApp
raises, so the server gets an error reply).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fedkit.core.keys import Key, fold_in
from fedkit.flower import transport
from fedkit.flower.server_loop import FEDKIT, METRICS, LoopConfig, ServerLoop
from fedkit.flower.settings import Settings, build_strategy, build_task
from fedkit.simulation.delivery import CORRUPTIONS, corrupt
from fedkit.simulation.jobs import ClientJob
from fedkit.simulation.sequential import SequentialEngine
from fedkit.strategy import Strategy

TaskFactory = Callable[[Settings], Any]
StrategyFactory = Callable[[Settings], Strategy]


def loop_config(settings: Settings, strategy: Strategy) -> LoopConfig:
    """The server loop's waiting rules from the run config (``min-nodes`` 0 = the quorum)."""
    return LoopConfig(
        rounds=settings.rounds,
        round_deadline=float(settings["round-deadline"]),
        sample_timeout=float(settings["sample-timeout"]),
        min_nodes=int(settings["min-nodes"]) or strategy.quorum,
        poll_interval=float(settings["poll-interval"]),
        eval_every=int(settings["eval-every"]),
        checkpoint_dir=settings.path("checkpoint-dir"),
        keep_checkpoints=int(settings["keep-checkpoints"]) or None,
        log_dir=settings.path("log-dir"),
    )


def make_server_app(
    task_factory: TaskFactory = build_task,
    strategy_factory: StrategyFactory = build_strategy,
    run_config: Mapping[str, Any] | None = None,
) -> ServerApp:
    """A ServerApp running the fedkit round loop on the task and strategy the run config
    names (factories receive the :class:`Settings`; ``run_config`` overrides the run's)."""
    app = ServerApp()
    overrides = dict(run_config or {})

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = Settings.from_run_config({**context.run_config, **overrides})
        strategy = strategy_factory(settings)
        loop = ServerLoop(
            grid,
            task_factory(settings),
            strategy,
            settings.seed,
            loop_config(settings, strategy),
        )
        loop.run(on_round=lambda m: print(json.dumps({"fedkit_round": m}), flush=True))

    return app


def partition_of(context: Context) -> int:
    """The client (partition) this SuperNode holds, from its node config."""
    try:
        return int(context.node_config["partition-id"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            "this SuperNode needs an integer 'partition-id' in --node-config"
        ) from None


def local_train(task: Any, message: Message, client: int) -> tuple[Any, int, dict[str, float]]:
    """Train ``client`` as the server's ``train`` message asks: ``(update, examples, metrics)``
    with the key ``fold_in(k_clients, client)`` (the simulation's client key). Raises
    ``ValueError`` if the message is not for this client or speaks of another model."""
    book = message.content.config_records[FEDKIT]
    asked = [int(c) for c in book["clients"]]
    if client not in asked:
        raise ValueError(f"round {book['round']} does not ask client {client} to train")
    params = transport.read_params(message.content, task.spec)
    cfg = transport.client_config_from_json(str(book["client-config"]))
    supervised = getattr(task, "train_client", None) is None
    job = ClientJob(
        client=client,
        work=int(book["work"][asked.index(client)]),
        key=client_key(message, client),
        x=task.client_x[client] if supervised else None,
        y=task.client_y[client] if supervised else None,
    )
    out = SequentialEngine().train(task, params, [job], cfg)
    metrics = {"loss": float(out.loss[0]), "steps": int(out.steps[0])}
    extra = {k: v for k, v in out.metrics[0].items() if isinstance(v, int | float)}
    return out.updates[0], int(out.num_examples[0]), {**extra, **metrics}


def client_key(message: Message, client: int) -> Key:
    """The key ``client`` trains with in this round: ``fold_in(k_clients, client)``."""
    return fold_in(Key.from_hex(str(message.content.config_records[FEDKIT]["k-clients"])), client)


def make_client_app(
    task_factory: TaskFactory = build_task, run_config: Mapping[str, Any] | None = None
) -> ClientApp:
    """A ClientApp answering the server's ``train`` messages: it says which client it holds
    and trains when that client is asked to (see the module doc); ``run_config`` overrides
    the run's."""
    app = ClientApp()
    overrides = dict(run_config or {})

    @app.train()
    def train(message: Message, context: Context) -> Message:
        client = partition_of(context)
        book = message.content.config_records[FEDKIT]
        content = RecordDict()
        if client not in [int(c) for c in book["clients"]]:
            content[FEDKIT] = ConfigRecord(
                {"round": int(book["round"]), "client": client, "trained": False}
            )
            return Message(content=content, reply_to=message)
        task = task_factory(Settings.from_run_config({**context.run_config, **overrides}))
        update, n, metrics = local_train(task, message, client)
        fault = str(context.node_config.get("corrupt", ""))
        if fault == "crash":
            raise RuntimeError(f"client {client}: injected crash")
        if fault:
            update = corrupt(update, CORRUPTIONS.index(fault), client_key(message, client))
        transport.write_update(content, update, task.spec)
        content[FEDKIT] = ConfigRecord(
            {"round": int(book["round"]), "client": client, "trained": True}
        )
        content[METRICS] = MetricRecord({"num-examples": n, **metrics})
        return Message(content=content, reply_to=message)

    return app
