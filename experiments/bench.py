"""``fedkit bench``: the default sweep, its records, TensorBoard logs, tables and figures.

A sweep file (``experiments/sweeps/bench.yaml``; ``--quick`` uses ``quick.yaml``) names the
grid: ``defenses`` × ``attacks`` × ``chaos`` × ``seeds`` (option names of the ``defense``,
``attack`` and ``chaos`` groups) plus ``overrides`` for every run, and optionally
``settings``: named groups of overrides (e.g. dataset and partition) crossed with the rest;
a setting's name becomes the run's ``task`` label, so the tables get one block per setting. Each point is composed
with Hydra's compose API in this process and run in-process — on ``jobs`` joblib worker
processes (``threads`` torch threads each, 1 by default), or here when ``jobs`` is 1 — under one progress bar.
A point whose record already exists with the same config is not run again, so an
interrupted bench resumes with ``--out`` pointing at its directory. With ``jobs`` 1 the
points that share a task config (same setting and seed) share one built task.

Layout of the output directory::

    runs/[<setting>__]<defense>__<attack>__<chaos>__seed<k>/record.json   + TensorBoard events
    tables/{attack_defense,utility_vs_epsilon,fault_survival}.{tex,md,csv}
    tables/figures/*.{pdf,png}
    sweep.yaml, order.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
from omegaconf import OmegaConf

from experiments import SWEEP_DIR
from experiments.run import RECORD

RUNS = "runs"
TABLES = "tables"


def _settings(value: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"settings must map a name to a list of overrides, got {value!r}")
    out = {}
    for name, overrides in value.items():
        if not isinstance(name, str) or not name or "/" in name or "__" in name:
            raise ValueError(
                f"setting name {name!r} must be a non-empty string without '/' or '__'"
            )
        if isinstance(overrides, str) or not isinstance(overrides, Sequence):
            raise TypeError(f"setting {name!r}: overrides must be a list, got {overrides!r}")
        out[name] = tuple(str(o) for o in overrides)
    return out


@attrs.frozen
class Sweep:
    """A benchmark grid (see the module doc)."""

    defenses: tuple[str, ...] = attrs.field(converter=tuple)
    attacks: tuple[str, ...] = attrs.field(converter=tuple)
    chaos: tuple[str, ...] = attrs.field(converter=tuple)
    seeds: tuple[int, ...] = attrs.field(converter=tuple)
    overrides: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    settings: dict[str, tuple[str, ...]] = attrs.field(factory=dict, converter=_settings)
    jobs: int = 2

    @classmethod
    def load(cls, path: str | Path) -> Sweep:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        unknown = set(data) - {f.name for f in attrs.fields(cls)}
        if unknown:
            raise ValueError(f"{path}: unknown sweep keys {sorted(unknown)}")
        return cls(**data)

    def points(self) -> list[Point]:
        """Every run, settings outermost (then fault setting, defense, attack, seed)."""
        settings = self.settings.items() if self.settings else [(None, ())]
        return [
            Point(d, a, c, s, setting=name, setting_overrides=extra)
            for name, extra in settings
            for c in self.chaos
            for d in self.defenses
            for a in self.attacks
            for s in self.seeds
        ]

    def order(self) -> dict[str, list[str]]:
        """Preferred row / column / block orders of the tables (``order.json``)."""
        order = {
            "defense": list(self.defenses),
            "attack": list(self.attacks),
            "chaos": list(self.chaos),
        }
        if self.settings:
            order["task"] = list(self.settings)
        return order


@attrs.frozen
class Point:
    """One run of the grid."""

    defense: str
    attack: str
    chaos: str
    seed: int
    setting: str | None = None
    setting_overrides: tuple[str, ...] = attrs.field(default=(), converter=tuple)

    @property
    def name(self) -> str:
        name = f"{self.defense}__{self.attack}__{self.chaos}__seed{self.seed}"
        return name if self.setting is None else f"{self.setting}__{name}"

    def overrides(self, base: Sequence[str]) -> list[str]:
        return [
            *base,
            *self.setting_overrides,
            f"defense={self.defense}",
            f"attack={self.attack}",
            f"chaos={self.chaos}",
            f"seed={self.seed}",
        ]

    def labels(self) -> dict[str, Any]:
        labels = {
            "defense": self.defense,
            "attack": self.attack,
            "chaos": self.chaos,
            "seed": self.seed,
        }
        return labels if self.setting is None else {"task": self.setting, **labels}


def compose_configs(points: Sequence[Point], base: Sequence[str]) -> list[dict[str, Any]]:
    """Each point's resolved config (Hydra compose API, no Hydra job per run). Points that
    differ only in their seed share one composition (``seed`` is a plain value that the
    config refers to by interpolation), resolved once per seed."""
    from hydra import compose, initialize_config_module

    composed: dict[Point, Any] = {}
    out = []
    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        for p in points:
            first = attrs.evolve(p, seed=0)
            if first not in composed:
                composed[first] = compose("config", overrides=p.overrides(base))
            cfg = OmegaConf.merge(composed[first], {"seed": p.seed})
            out.append(OmegaConf.to_container(cfg, resolve=True))
    return out


def _done(out: Path, cfg: dict[str, Any]) -> dict[str, Any] | None:
    path = out / RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError:
        return None
    return record if record.get("config") == cfg else None


def _summary(name: str, record: dict[str, Any], seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "accuracy": record["final"].get("test_accuracy"),
        "epsilon": record["privacy"].get("epsilon"),
        "seconds": seconds,
        "error": None,
    }


@attrs.define
class TaskCache:
    """Built tasks by their resolved config, the ``size`` most recently used kept (tasks are
    immutable and built from their own key, so points with equal task configs share one)."""

    size: int = 16
    _tasks: dict[str, Any] = attrs.field(factory=dict, init=False)

    def get(self, node: Mapping[str, Any]) -> Any:
        from experiments.build import make

        key = json.dumps(node, sort_keys=True, default=str)
        task = self._tasks.pop(key, None)
        if task is None:
            task = make(OmegaConf.create(dict(node)))
        self._tasks[key] = task
        while len(self._tasks) > self.size:
            self._tasks.pop(next(iter(self._tasks)))
        return task


def run_point(
    name: str, cfg: dict[str, Any], out: Path, labels: dict, cache: TaskCache | None = None
) -> dict:
    """Run one point (in a worker or here); a failure is returned, not raised. ``cache``
    supplies the built task (default: built from ``cfg``)."""
    from experiments.run import run_experiment

    start = time.perf_counter()
    try:
        task = None if cache is None else cache.get(cfg["task"])
        record = run_experiment(cfg, out, labels=labels, progress=False, task=task)
    except Exception as exc:  # reported at the end; the sweep goes on
        out.mkdir(parents=True, exist_ok=True)
        (out / "error.txt").write_text(f"{type(exc).__name__}: {exc}\n")
        return {"name": name, "accuracy": None, "epsilon": None, "seconds": 0.0, "error": repr(exc)}
    return _summary(name, record, time.perf_counter() - start)


def execute(todo: list[tuple[str, dict, Path, dict]], jobs: int) -> Iterator[dict[str, Any]]:
    """Results of the points in ``todo`` as they finish."""
    if jobs <= 1:
        cache = TaskCache()
        for name, cfg, out, labels in todo:
            yield run_point(name, cfg, out, labels, cache)
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=jobs, return_as="generator_unordered")
    yield from parallel(delayed(run_point)(*item) for item in todo)


def bench(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    extra_overrides: Sequence[str] = (),
    progress: bool = True,
    figures: bool = True,
) -> dict[str, Any]:
    """Run ``sweep`` into ``out_dir``, then write tables and figures. Returns a summary:
    ``runs`` (per-run summaries), ``failed``, ``report`` (:class:`paper.Report`),
    ``seconds``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from paper import make_report

    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    jobs = sweep.jobs if jobs is None else jobs
    points = sweep.points()
    base = [*sweep.overrides, *extra_overrides]
    configs = compose_configs(points, base)
    order = sweep.order()
    (out / "order.json").write_text(json.dumps(order, indent=1))
    (out / "sweep.yaml").write_text(
        OmegaConf.to_yaml(
            OmegaConf.create({**attrs.asdict(sweep), "overrides": base, "jobs": jobs})
        )
    )
    results, todo = [], []
    for p, cfg in zip(points, configs, strict=True):
        run_dir = out / RUNS / p.name
        record = _done(run_dir, cfg)
        if record is not None:
            results.append(_summary(p.name, record, 0.0))
        else:
            todo.append((p.name, cfg, run_dir, p.labels()))
    columns = (
        TextColumn("[bold]bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, disable=not progress) as bar:
        task = bar.add_task("", total=len(points), completed=len(results))
        for res in execute(todo, jobs):
            results.append(res)
            acc = res["accuracy"]
            what = "failed" if res["error"] else f"acc {acc:.3f}" if acc is not None else "acc -"
            bar.update(task, advance=1, description=f"{res['name']}: {what}")
    failed = [r for r in results if r["error"]]
    report = make_report(out, out / TABLES, figures=figures, order=order)
    return {
        "runs": results,
        "failed": failed,
        "report": report,
        "seconds": time.perf_counter() - start,
        "out": out,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="fedkit bench",
        description="The default benchmark: defenses x attacks x fault settings x seeds on "
        "digits; writes records, TensorBoard logs, tables and figures and prints the main "
        "table.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke version (sweeps/quick.yaml)")
    parser.add_argument(
        "--sweep", type=Path, default=None, help="a sweep file (default: sweeps/bench.yaml)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output directory (default: runs/bench/<time>)"
    )
    parser.add_argument(
        "--jobs", type=int, default=None, help="worker processes (default: the sweep's)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. rounds=5")
    args = parser.parse_args(argv)
    path = args.sweep or SWEEP_DIR / ("quick.yaml" if args.quick else "bench.yaml")
    sweep = Sweep.load(path)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = args.out or Path("runs") / ("bench-quick" if args.quick else "bench") / stamp
    result = bench(
        sweep,
        out,
        jobs=args.jobs,
        extra_overrides=args.overrides,
        progress=not args.no_progress,
        figures=not args.no_figures,
    )
    from paper.cli import print_table

    main_table = result["report"].main_table()
    if main_table is not None:
        print_table(main_table)
    n, failed = len(result["runs"]), result["failed"]
    print(
        f"{n} runs ({len(failed)} failed) in {result['seconds']:.0f} s -> {out}\n"
        f"  records + TensorBoard: {out / RUNS}   (tensorboard --logdir {out / RUNS})\n"
        f"  tables + figures:      {out / TABLES}"
    )
    for r in failed:
        print(f"  failed: {r['name']}: {r['error']}")
    return 1 if failed else 0
