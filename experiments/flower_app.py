"""fedkit's Flower App: the experiment config of ``fedkit run`` on a real Flower deployment.

Run config (``[tool.flwr.app.config]``; :data:`RUN_CONFIG`):

* ``experiment``: the resolved experiment config as JSON (what ``fedkit deploy local``
  sends), or ``overrides``: Hydra overrides that the apps compose from the config tree
  shipped in the app (``flwr run . FED -c 'overrides="task=digits defense=krum rounds=3"'``);
* ``out-dir``: where the ServerApp writes (record, checkpoints, TensorBoard, event log,
  node registry; default: the config's ``out_dir``, else ``runs/flower-<run id>``);
  ``registry``: the node registry file if not ``out-dir/registry.json``; ``resume``;
  ``keep-checkpoints``;
* ``round-deadline``, ``sample-timeout`` (s), ``min-nodes`` (0: the quorum),
  ``poll-interval`` (s), ``object-timeout`` (s: the most a reply's upload may keep the
  server waiting once its message arrived): how the server waits; ``signed-replies`` (default true): replies
  must carry their node's signature (:class:`fedkit.flower.LoopConfig`);
* ``metrics-port`` (0: off), ``metrics-host`` (default 127.0.0.1): the ServerApp's Prometheus
  endpoint with ``/healthz`` and ``/readyz`` (:mod:`fedkit.run.metrics`; its address lands in
  ``out-dir/metrics.json``); ``metrics-linger`` (s): how long the ServerApp may wait after the
  last round for one more scrape (``fedkit deploy local --prometheus`` sets it);
* ``trace-file`` (default "": none; relative to ``out-dir``), ``otlp-endpoint`` (default "":
  none): where the ServerApp's OpenTelemetry spans go (:mod:`fedkit.run.tracing`;
  ``fedkit deploy local --trace`` sets ``trace.jsonl``). A node's own spans go where its node
  config says (``trace-file``, ``otlp-endpoint``), never where the server says.

:data:`APP` is what ``fedkit deploy`` submits: a FAB holding only the app's
``pyproject.toml`` — no code; both sides import the fedkit they installed. The ServerApp
builds the experiment with :func:`experiments.build.build` — the strategy,
privacy mechanisms and accountant, and the adversary whose controlled clients the record
names — and serves it (:func:`fedkit.flower.serve`). Simulated faults (``chaos``) are the
in-process transport's; a deployment refuses them (its faults are real: ``chaos/``'s
experiments). A ClientApp builds only its task, from a closed set of task kinds
(:func:`fedkit.tasks.registry.build_task`: nothing in the run config names code for a
client to import), and answers as :class:`fedkit.flower.HonestClient` — or, on a node whose
node config names an ``adversary`` file, as :class:`experiments.adversary_node.AdversaryClient`.
"""

from __future__ import annotations

import functools
import json
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from experiments.adversary_node import AdversaryClient
from fedkit.flower import (
    HonestClient,
    LoopConfig,
    ServerSetup,
    make_client_app,
    make_server_app,
)
from fedkit.flower.client import ClientRuntime
from fedkit.flower.local.staging import AppSource
from fedkit.flower.requests import TrainRequest
from fedkit.run.metrics import Endpoint
from fedkit.run.tracing import TraceConfig, TracingError
from fedkit.tasks.registry import build_task

RUN_CONFIG: dict[str, Any] = {
    "experiment": "",
    "overrides": "",
    "out-dir": "",
    "registry": "",
    "resume": False,
    "keep-checkpoints": 3,
    "round-deadline": 120.0,
    "sample-timeout": 60.0,
    "min-nodes": 0,
    "poll-interval": 0.2,
    "object-timeout": 60.0,
    "signed-replies": True,
    "metrics-port": 0,
    "metrics-host": "127.0.0.1",
    "metrics-linger": 0.0,
    "trace-file": "",
    "otlp-endpoint": "",
}
# The packages a FAB would need to carry for nodes without fedkit installed (``flwr run .``
# from a checkout ships them, pyproject's fab-include); fedkit deploy ships none (APP).
PACKAGES = ("fedkit", "experiments", "attacks", "privacy", "chaos")


class ExperimentConfigError(ValueError):
    """The run config does not describe a deployable experiment."""


def compose(overrides: Sequence[str]) -> dict[str, Any]:
    """The resolved experiment config of ``fedkit run OVERRIDES...`` (Hydra compose API),
    with the table ``labels`` Hydra's group choices give (:func:`experiments.run.default_labels`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from omegaconf import OmegaConf

    from experiments.run import default_labels

    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides), return_hydra_config=True)
    choices = dict(cfg.hydra.runtime.choices)
    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    out = OmegaConf.to_container(OmegaConf.create(out), resolve=True)
    out["labels"] = default_labels(OmegaConf.create(out), choices)
    return out


@functools.lru_cache(maxsize=4)
def _experiment(text: str, overrides: str) -> str:
    if text:
        try:
            cfg = json.loads(text)
        except ValueError as exc:
            raise ExperimentConfigError(f"run config 'experiment' is not JSON: {exc}") from None
    elif overrides:
        cfg = compose(shlex.split(overrides))
    else:
        raise ExperimentConfigError(
            "the run config names no experiment: set 'experiment' (resolved config as JSON) "
            "or 'overrides' (e.g. \"task=digits defense=krum rounds=3\")"
        )
    if not isinstance(cfg, dict) or "task" not in cfg:
        raise ExperimentConfigError("the experiment config has no 'task' section")
    return json.dumps(cfg)


TARGET_PACKAGES = ("fedkit.", "privacy.", "attacks.", "chaos.")


def check_targets(node: Any, where: str = "config") -> None:
    """Every ``_target_`` of an experiment config names something in fedkit or its suites
    (a config that arrives as data cannot make the server import other code)."""
    if isinstance(node, Mapping):
        target = node.get("_target_")
        if target is not None and not str(target).startswith(TARGET_PACKAGES):
            raise ExperimentConfigError(
                f"{where}._target_ = {target!r} is outside {TARGET_PACKAGES}: refused"
            )
        for k, v in node.items():
            check_targets(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            check_targets(v, f"{where}[{i}]")


def experiment_config(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved experiment config a run config describes (module doc)."""
    rc = {**RUN_CONFIG, **run_config}
    cfg = json.loads(_experiment(str(rc["experiment"]), str(rc["overrides"])))
    check_targets(cfg)
    return cfg


def check_deployable(cfg: Mapping[str, Any]) -> None:
    """Refuse what only the simulation can do: simulated faults."""
    chaos = cfg.get("chaos") or {}
    if chaos.get("_target_") not in (None, "fedkit.protocols.NoFaults"):
        raise ExperimentConfigError(
            f"chaos={chaos.get('_target_')} is a simulated fault model; a deployment's faults "
            "are real (use chaos/experiments against it): set chaos=none"
        )


def server_setup(
    run_config: Mapping[str, Any], *, run_id: int = 0, transport_name: str = "flower-deployment"
) -> ServerSetup:
    """What the ServerApp serves for a run config (module doc)."""
    from omegaconf import OmegaConf

    from experiments.build import build
    from experiments.run import default_labels, fingerprint_config, record_extras

    rc = {**RUN_CONFIG, **run_config}
    cfg = experiment_config(rc)
    check_deployable(cfg)
    exp = build(cfg)
    out = rc["out-dir"] or cfg.get("out_dir") or f"runs/flower-{run_id}"
    conf = OmegaConf.create(cfg)
    loop = LoopConfig(
        round_deadline=float(rc["round-deadline"]),
        sample_timeout=float(rc["sample-timeout"]),
        min_nodes=int(rc["min-nodes"]) or exp.strategy.quorum,
        poll_interval=float(rc["poll-interval"]),
        object_timeout=float(rc["object-timeout"]),
        signed_replies=bool(rc["signed-replies"]),
    )
    return ServerSetup(
        metrics=metrics_endpoint(rc, loop),
        trace=trace_config(rc, Path(out)),
        task=exp.task,
        strategy=exp.strategy,
        rounds=exp.rounds,
        seed=exp.seed,
        out_dir=Path(out),
        loop=loop,
        adversary=exp.adversary,
        eval_every=exp.eval_every,
        config=fingerprint_config(cfg),
        registry=rc["registry"] or None,
        resume=bool(rc["resume"]),
        keep_checkpoints=int(rc["keep-checkpoints"]) or None,
        record_extras=record_extras(conf, exp, cfg.get("labels") or default_labels(conf)),
        transport_name=transport_name,
    )


def metrics_endpoint(rc: Mapping[str, Any], loop: LoopConfig) -> Endpoint | None:
    """The ServerApp's Prometheus endpoint the run config asks for (``None``: port 0). The
    loop counts as stalled after twice the longest a healthy round waits (nodes + replies)
    plus a minute for aggregation and evaluation."""
    port = rc["metrics-port"]
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ExperimentConfigError(
            f"run config metrics-port must be an int in [0, 65535], got {port!r}"
        )
    if port == 0:
        return None
    try:
        return Endpoint(
            host=str(rc["metrics-host"]),
            port=port,
            stall_after=2 * (loop.sample_timeout + loop.round_deadline) + 60.0,
            linger=float(rc["metrics-linger"]),
        )
    except (TypeError, ValueError) as exc:
        raise ExperimentConfigError(f"run config metrics-*: {exc}") from None


def trace_config(rc: Mapping[str, Any], out_dir: Path) -> TraceConfig | None:
    """Where the ServerApp's spans go (``None``: no tracing); a relative ``trace-file`` lies
    in ``out_dir``."""
    file, endpoint = str(rc["trace-file"]), str(rc["otlp-endpoint"])
    try:
        config = TraceConfig(out_dir / file if file else None, endpoint or None)
    except TracingError as exc:
        raise ExperimentConfigError(f"run config trace-file / otlp-endpoint: {exc}") from None
    return config if config.enabled else None


@functools.lru_cache(maxsize=2)
def _task(task_json: str) -> Any:
    return build_task(json.loads(task_json))


@functools.lru_cache(maxsize=2)
def _adversary(path: str, node_config_json: str) -> AdversaryClient:
    return AdversaryClient.from_file(path, json.loads(node_config_json))


def client_runtime(
    run_config: Mapping[str, Any],
    node_config: Mapping[str, Any],
    request: TrainRequest,
    *,
    assigned_data: bool = False,
) -> ClientRuntime:
    """The runtime answering ``request`` on a node (module doc). ``assigned_data``: the
    node trains the partition of the client it was assigned (Flower's simulation engine)."""
    adversary = str(node_config.get("adversary", ""))
    if adversary:
        return _adversary(adversary, json.dumps(dict(node_config), sort_keys=True))
    cfg = experiment_config(run_config)
    task = _task(json.dumps(cfg["task"], sort_keys=True))
    return HonestClient.from_node_config(
        task, node_config, partition=request.client if assigned_data else None
    )


server_app = make_server_app(lambda ctx: server_setup(ctx.run_config, run_id=ctx.run_id))
client_app = make_client_app(
    lambda ctx, request: client_runtime(ctx.run_config, ctx.node_config, request)
)

# What fedkit deploy submits: a FAB with no code in it, only the app's pyproject (its
# components and run-config keys). Each side imports the fedkit it installed; the server
# ships no code for a node to run (docs/architecture.md, trust boundary), and a node
# verifies one file per message instead of the ~300 of the packages.
APP = AppSource(
    packages=(),
    components={
        "serverapp": "experiments.flower_app:server_app",
        "clientapp": "experiments.flower_app:client_app",
    },
    config=RUN_CONFIG,
)


def simulation_apps(run_config: Mapping[str, Any]) -> tuple[Any, Any]:
    """The same apps for Flower's simulation engine, with ``run_config`` fixed (its virtual
    nodes train the partition of the client they are assigned)."""
    rc = {**dict(run_config), "signed-replies": False}  # virtual nodes have no keys
    server = make_server_app(
        lambda ctx: server_setup(rc, run_id=ctx.run_id, transport_name="flower-simulation")
    )
    client = make_client_app(
        lambda ctx, request: client_runtime(rc, ctx.node_config, request, assigned_data=True)
    )
    return server, client
