"""One run: build the experiment from its config, simulate it, write its results record.
A deployment of the same config (``experiments.flower_app``) writes the same record.

``fedkit run`` is :func:`hydra_main` (Hydra's command line: overrides, ``-m`` multirun with
the joblib launcher, or any launcher with ``hydra/launcher=...``: docs/sweeps.md); ``fedkit
bench`` calls :func:`run_experiment` directly for each point of its grid. The record is the
one the run driver writes (``fedkit.run/1``, see :mod:`fedkit.run.records`) plus three
sections the paper pipeline reads
(:func:`record_extras`):

* ``labels``: ``task``, ``defense``, ``attack``, ``chaos``, ``privacy``, ``seed`` — the names
  a table groups by (group option names; ``None`` where unknown, then :mod:`paper.records`
  derives them from the record's ``_target_`` entries);
* ``privacy``: mechanism, ε (``None`` without DP), δ, noise multiplier, sample rate;
* ``config``: the resolved config of the run.

A run whose adversary poisons data with a backdoor trigger also gets
``final.backdoor_success``: the final model's attack success rate on the triggered test set
(:func:`backdoor_metrics`).
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.build import Experiment, as_config, build
from fedkit import simulate
from fedkit.run.audit_log import AUDIT_FILE, AuditLog
from fedkit.run.callbacks import EventLog, RecordFiles, TensorBoard
from fedkit.run.history import History

RECORD = "record.json"


def default_labels(cfg: DictConfig, choices: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Table labels of a run: Hydra's group choices where known, else from the config."""
    choices = dict(choices or {})
    mechanism = str(cfg.privacy.get("mechanism", "none")) if "privacy" in cfg else "none"
    defense = cfg.get("label") or choices.get("defense")
    if not defense:
        defense = "+".join(str(k) for k in (cfg.get("server") or {}))
        if mechanism != "none":
            defense += f"+{mechanism}_dp"
    return {
        "task": choices.get("task") or None,
        "defense": defense,
        "attack": choices.get("attack") or None,
        "chaos": choices.get("chaos") or None,
        "privacy": choices.get("privacy") or mechanism,
        "seed": int(cfg.seed),
    }


# Settings of how a run is executed and reported, not of the experiment: a run may be
# resumed with other values of these (more rounds, another engine, another out_dir).
RUN_ONLY = (
    "rounds",
    "eval_every",
    "checkpoint",
    "tensorboard",
    "threads",
    "progress",
    "out_dir",
    "label",
    "engine",
    "hydra",
    "labels",
    "tracing",
)


def fingerprint_config(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that defines the experiment (what a resumed run must
    share with its checkpoints): everything but :data:`RUN_ONLY`."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    return {k: v for k, v in dict(cfg).items() if k not in RUN_ONLY}


def record_extras(
    cfg: DictConfig, exp: Experiment, labels: Mapping[str, Any]
) -> Callable[[dict[str, Any], History], dict[str, Any]]:
    """What an experiment adds to the driver's record, for ``RecordFiles(extras=...)``:
    ``labels``, ``privacy`` (mechanism, ε over the releases made), ``config`` (resolved) and,
    for a backdoor adversary, ``final.backdoor_success``."""
    container = OmegaConf.to_container(cfg, resolve=True)

    def extras(record: dict[str, Any], history: History) -> dict[str, Any]:
        out: dict[str, Any] = {}
        backdoor = backdoor_metrics(exp.adversary, exp.task, history.final_params)
        if backdoor:
            out["final"] = {**record.get("final", {}), **backdoor}
        releases = len(history.metrics) + int(record["counters"].get("rounds_lost", 0))
        out["labels"] = dict(labels)
        out["privacy"] = exp.privacy.summary(releases)
        out["config"] = container
        return out

    return extras


def run_experiment(
    cfg: DictConfig | Mapping[str, Any],
    out_dir: str | Path,
    *,
    labels: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    task: Any = None,
) -> dict[str, Any]:
    """Simulate the run ``cfg`` describes; write ``<out_dir>/record.json``,
    ``record.safetensors`` (the final parameters), ``events.jsonl`` and the audit log
    ``audit.jsonl`` (appended to, never rewritten: :mod:`fedkit.run.audit_log`),
    TensorBoard scalars into ``out_dir`` when ``cfg.tensorboard`` and OpenTelemetry spans
    when ``cfg.tracing`` asks (:func:`tracing_callback`); return the record. ``task``: the already built task of
    ``cfg.task``, if any."""
    cfg = as_config(cfg)
    if cfg.get("threads") is not None:
        torch.set_num_threads(int(cfg.threads))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exp = build(cfg, task=task)
    checkpoints = out / "checkpoints" if exp.checkpoint else None
    if checkpoints is not None and checkpoints.exists():
        shutil.rmtree(checkpoints)  # this run point starts over: its old checkpoints go
    hooks: list[Any] = [TensorBoard(out)] if cfg.get("tensorboard", True) else []
    labels = {**default_labels(cfg), **dict(labels or {})}
    hooks.append(RecordFiles(out, extras=record_extras(cfg, exp, labels)))
    hooks.append(EventLog(out / "events.jsonl"))
    hooks.append(AuditLog(out / AUDIT_FILE))
    tracer = tracing_callback(cfg.get("tracing"), out)
    if tracer is not None:
        hooks.append(tracer)
    history = simulate(
        exp.task,
        exp.strategy,
        rounds=exp.rounds,
        key=exp.seed,
        engine=exp.engine,
        adversary=exp.adversary,
        faults=exp.faults,
        eval_every=exp.eval_every,
        checkpoint_dir=checkpoints,
        progress=cfg.get("progress") if progress is None else progress,
        callbacks=hooks,
        config=fingerprint_config(cfg),
    )
    return history.record


def tracing_callback(section: Any, out: Path) -> Any:
    """The :class:`fedkit.run.tracing.Tracing` callback the config's ``tracing`` section asks
    for (``file``: ``true`` for ``out/trace.jsonl``, a path, or null; ``otlp_endpoint``: a
    URL or null), ``None`` when it asks for none."""
    section = dict(section or {})
    unknown = sorted(set(section) - {"file", "otlp_endpoint"})
    if unknown:
        raise ValueError(f"tracing has unknown keys {unknown}; it takes file and otlp_endpoint")
    file, endpoint = section.get("file"), section.get("otlp_endpoint")
    if file is False or file is None:
        file = None
    elif file is True:
        file = out / "trace.jsonl"
    elif not isinstance(file, str) or not file:
        raise ValueError(f"tracing.file must be true, a path or null, got {file!r}")
    if file is None and not endpoint:
        return None
    from fedkit.run.tracing import Tracing  # the OpenTelemetry SDK only when asked for

    return Tracing(file, endpoint or None)


def backdoor_metrics(adversary: Any, task: Any, params: torch.Tensor) -> dict[str, float]:
    """``{"backdoor_success": rate}`` when ``adversary`` poisons data with a backdoor
    (:class:`attacks.Backdoor`, :class:`attacks.DBA` with its full trigger): the final model's
    rate of classifying triggered test images of other classes as the target (the
    adversary's ``evaluate``, the per-round ``attack_success_rate``), else ``{}``."""
    from attacks import DBA, Backdoor

    poison = getattr(adversary, "poison", None)
    evaluate = getattr(adversary, "evaluate", None)
    if not isinstance(poison, Backdoor | DBA) or evaluate is None:
        return {}
    rate = evaluate(task, params).get("attack_success_rate")
    return {} if rate is None else {"backdoor_success": rate}


def describe_result(record: Mapping[str, Any]) -> str:
    """One line about a finished run."""
    lab, final = record["labels"], record["final"]
    acc = final.get("test_accuracy")
    eps = record["privacy"].get("epsilon")
    parts = [
        f"{lab['defense']} | attack {lab['attack'] or '-'} | chaos {lab['chaos'] or '-'}",
        f"seed {lab['seed']}",
        f"accuracy {acc:.4f}" if acc is not None else "accuracy -",
    ]
    if eps is not None:
        parts.append(f"ε {eps:.3g}")
    return " | ".join(parts)


@hydra.main(config_path="configs", config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float | None:
    """``fedkit run``: one run per Hydra job; returns the final test accuracy (for sweepers)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    if cfg.get("out_dir"):
        out = Path(cfg.out_dir)
        if hc.mode == RunMode.MULTIRUN:
            out = out / str(hc.job.num)
    record = run_experiment(cfg, out, labels=default_labels(cfg, hc.runtime.choices))
    print(f"{describe_result(record)} -> {out / RECORD}", flush=True)
    return record["final"].get("test_accuracy")


def main(argv: list[str]) -> None:
    """Hand ``argv`` (Hydra overrides and flags) to :func:`hydra_main`."""
    sys.argv = ["fedkit", *argv]
    hydra_main()
