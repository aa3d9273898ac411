"""``fedkit audit privacy``: an empirical lower bound on ε for an experiment config;
``fedkit audit verify``: check a run's hash-chained audit log (:func:`verify_main`).

The config is composed from the same Hydra tree and overrides as ``fedkit run`` and built with
:func:`experiments.build.build`; the audit then runs the built strategy's server side
(``Strategy.sample`` and ``Strategy.round``, the whole chain) on synthetic clients with
canaries (:mod:`privacy.audit`), and compares the audited lower bound with the ε the run would
claim, ``Experiment.privacy.epsilon(rounds)``. Nothing trains: the task is replaced by a
stand-in with the config's ``num_clients`` (the audit is of the mechanism, not of the model).

* ``central``: one-run (canary clients, Steinke et al. 2023) and many-run (one canary,
  Clopper–Pearson) audits of the released model;
* ``local``: the same audits of each client's message;
* ``dpsgd`` (example level) and ``none`` are not audited here.

``--broken-example`` adds the defect issue 14 found in the old central pipeline, clip → the
example-weighted mean → noise for ``C/m``, with a canary that holds most of the examples: its
audited bound exceeds the claim.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

import attrs

USAGE = """\
usage: fedkit audit <command> [...]

commands:
  privacy [OVERRIDE ...] [--method both|one-run|many-run] [--canaries M] [--runs R]
          [--rounds T] [--confidence 0.95] [--population N] [--dim D]
          [--canary-examples N] [--seed S] [--out FILE] [--broken-example]
                              an empirical lower bound on the ε a config claims, e.g.
                                fedkit audit privacy privacy=central privacy.noise_multiplier=1 \\
                                  rounds=2 --population 2000
  verify LOG [--record RECORD] [--allow-torn]
                              check a hash-chained audit log (exit 0: intact; 1: the first
                              bad line and what is wrong; 2: unreadable), e.g.
                                fedkit audit verify runs/x/audit.jsonl --record runs/x/record.json
                              without --record a cut tail cannot be seen
"""


@attrs.frozen
class AuditClients:
    """Stand-in task for :func:`experiments.build.build`: only the number of clients."""

    num_clients: int


def compose_config(overrides: list[str]) -> Any:
    """The experiment config ``fedkit run OVERRIDES`` would run."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="experiments.configs", version_base="1.3"):
        return compose("config", overrides=list(overrides))


def scaled_overrides(cfg: Any, population: int) -> list[str]:
    """Overrides that grow the population to at least ``population`` clients by a whole
    factor ``s`` (``num_clients`` and ``strategy.clients_per_round`` times ``s``), which keeps
    the sampling rate and so the claimed ε."""
    n = int(cfg.num_clients)
    s = max(1, math.ceil(int(population) / n))
    out = [f"num_clients={s * n}"]
    per_round = cfg.strategy.get("clients_per_round")
    if per_round is not None:
        out.append(f"strategy.clients_per_round={s * int(per_round)}")
    return out


def build_for_audit(cfg: Any) -> Any:
    """``experiments.build.build(cfg)`` with :class:`AuditClients` as the task."""
    from experiments.build import build

    return build(cfg, task=AuditClients(int(cfg.num_clients)))


def broken_strategy(exp: Any) -> Any:
    """Today's defect for the same numbers: clip → the example-weighted mean → Gaussian noise
    calibrated for ``C/m``, ``m`` clients drawn per round without replacement."""
    from fedkit import Strategy, chain
    from fedkit.aggregators import Mean
    from privacy.mechanisms import ClipUpdates, GaussianNoise

    p = exp.privacy
    n = int(exp.task.num_clients)
    m = max(1, round(float(p.sample_rate) * n))
    server = chain(
        ClipUpdates(p.clip_norm), Mean(), GaussianNoise(p.noise_multiplier, p.clip_norm, m)
    )
    return Strategy(server=server, clients_per_round=m)


def run_audits(
    exp: Any,
    *,
    method: str,
    canaries: int,
    runs: int,
    dim: int,
    confidence: float,
    canary_examples: int,
    honest_examples: int,
    seed: int,
    strategy: Any = None,
) -> list[Any]:
    """The audits of ``exp`` (its strategy, or ``strategy``) for ``exp.rounds`` rounds."""
    from fedkit.core.keys import fold_in, key
    from privacy import audit

    p = exp.privacy
    if p.mechanism not in ("central", "local"):
        raise ValueError(
            f"privacy.mechanism={p.mechanism!r} is not audited here: client canaries audit "
            "client-level central or local DP (privacy=central | central_adaptive | local)"
        )
    strategy = exp.strategy if strategy is None else strategy
    root = key(int(seed))
    n = int(exp.task.num_clients)
    out = []
    common = dict(delta=float(p.delta), confidence=float(confidence))
    if p.mechanism == "central":
        pop = audit.Population(n, dim, float(p.clip_norm), honest_examples, canary_examples)
        if method in ("both", "one-run"):
            out.append(
                audit.one_run_audit(
                    strategy,
                    pop,
                    canaries=min(canaries, n),
                    rounds=exp.rounds,
                    key=fold_in(root, 1),
                    **common,
                )
            )
        if method in ("both", "many-run"):
            out.append(
                audit.many_run_audit(
                    strategy, pop, runs=runs, rounds=exp.rounds, key=fold_in(root, 2), **common
                )
            )
        return out
    local = dict(dim=dim, norm=float(p.clip_norm), examples=canary_examples, **common)
    if method in ("both", "one-run"):
        out.append(
            audit.local_one_run_audit(
                strategy, canaries=canaries, rounds=exp.rounds, key=fold_in(root, 1), **local
            )
        )
    if method in ("both", "many-run"):
        out.append(
            audit.local_many_run_audit(
                strategy, runs=runs, rounds=exp.rounds, key=fold_in(root, 2), **local
            )
        )
    return out


def row_of(label: str, exp: Any, result: Any) -> dict[str, Any]:
    """One table row: the claim, the audited lower bound and the verdict."""
    claim = exp.privacy.epsilon(exp.rounds)
    holds = claim is None or result.epsilon <= claim
    return {
        "config": label,
        "mechanism": exp.privacy.mechanism,
        "status": exp.privacy.status,
        "claimed_epsilon": claim,
        "audited_epsilon": result.epsilon,
        "confidence": result.confidence,
        "delta": result.delta,
        "method": result.method,
        "observed": result.observed,
        "rounds": exp.rounds,
        "verdict": "holds" if holds else "VIOLATED",
        "details": result.details,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of audit rows."""
    head = ("config", "status", "claimed ε", "audited ε ≥", "conf.", "method", "verdict")
    body = [
        (
            r["config"],
            str(r["status"] or "-"),
            "-" if r["claimed_epsilon"] is None else f"{r['claimed_epsilon']:.3f}",
            f"{r['audited_epsilon']:.3f}",
            f"{r['confidence']:.2f}",
            r["method"],
            r["verdict"],
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        " | ".join(x.ljust(w) for x, w in zip(line, widths, strict=True)) for line in [head, *body]
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def privacy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedkit audit privacy", description=__doc__.split("\n")[0]
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for fedkit run")
    parser.add_argument("--method", choices=("both", "one-run", "many-run"), default="both")
    parser.add_argument("--canaries", type=int, default=1000, help="one-run canaries (<= clients)")
    parser.add_argument(
        "--runs", type=int, default=1000, help="many-run runs (even, half with the canary)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default: the config's)")
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="grow num_clients (and clients_per_round) to at least N, same rate",
    )
    parser.add_argument("--dim", type=int, default=2048, help="update dimension")
    parser.add_argument(
        "--canary-examples",
        type=int,
        default=None,
        help="the canary's example count (default 10; 100x that with --broken-example)",
    )
    parser.add_argument("--honest-examples", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=None, help="JSON record (default runs/audit/privacy-<time>.json)"
    )
    parser.add_argument(
        "--broken-example",
        action="store_true",
        help="also audit the old defect: weighted mean, noise for C/m",
    )
    return parser


def privacy_main(argv: list[str]) -> int:
    """``fedkit audit privacy``; exit code 1 when a claim of the config itself is violated."""
    args = privacy_parser().parse_intermixed_args(argv)
    if not 0.0 < args.confidence < 1.0:
        raise SystemExit(f"--confidence must lie in (0, 1), got {args.confidence}")
    overrides = list(args.overrides)
    if args.broken_example and not any(o.startswith("privacy=") for o in overrides):
        overrides.insert(0, "privacy=central")
    label = " ".join(overrides) or "defaults"
    if args.rounds is not None:
        overrides.append(f"rounds={args.rounds}")
    cfg = compose_config(overrides)
    exp = build_for_audit(cfg)
    # the one-run audit wants many canaries: a larger population at the same rate (same claim)
    grown = overrides + scaled_overrides(cfg, args.population) if args.population else None
    exp_one = build_for_audit(compose_config(grown)) if grown else exp
    settings = dict(
        canaries=args.canaries,
        runs=args.runs,
        dim=args.dim,
        confidence=args.confidence,
        honest_examples=args.honest_examples,
        seed=args.seed,
        canary_examples=args.canary_examples or args.honest_examples,
    )
    results = []
    if args.method in ("both", "one-run"):
        results += [(exp_one, r) for r in run_audits(exp_one, method="one-run", **settings)]
    if args.method in ("both", "many-run"):
        results += [(exp, r) for r in run_audits(exp, method="many-run", **settings)]
    rows = [row_of(label, e, r) for e, r in results]
    violated = any(r["verdict"] != "holds" for r in rows)
    if args.broken_example:
        if exp.privacy.mechanism != "central":
            raise SystemExit("--broken-example needs privacy=central (or central_adaptive)")
        heavy = args.canary_examples or 100 * args.honest_examples
        settings["canary_examples"] = heavy
        for r in run_audits(exp, method="many-run", strategy=broken_strategy(exp), **settings):
            row = row_of(f"BROKEN (weighted mean, canary {heavy} examples)", exp, r)
            rows.append({**row, "status": "defect"})
    print(format_table(rows))
    out = Path(args.out) if args.out else default_out()
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": "fedkit.audit.privacy/1",
        "overrides": overrides,
        "population_overrides": grown,
        "privacy": exp.privacy.summary(exp.rounds),
        "rows": rows,
    }
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"-> {out}")
    return 1 if violated else 0


def default_out() -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / "audit" / f"privacy-{stamp}.json"


def verify_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fedkit audit verify",
        description="Check a hash-chained audit log (fedkit.run.audit_log).",
    )
    parser.add_argument("log", help="the audit log, e.g. OUT_DIR/audit.jsonl")
    parser.add_argument(
        "--record",
        help="the run's record.json: its audit head lets a cut tail be seen "
        "(without it, truncation at an entry boundary cannot be detected)",
    )
    parser.add_argument(
        "--allow-torn",
        action="store_true",
        help="accept a partial last line (a write cut by a crash) when every whole entry "
        "before it verifies",
    )
    return parser


def verify_main(argv: list[str]) -> int:
    """``fedkit audit verify``: 0 when the log is intact, 1 naming the first bad line (a torn
    tail too, unless ``--allow-torn``), 2 when the log or the record cannot be read or the
    arguments are wrong."""
    from fedkit.run.audit_log import Head, verify

    try:
        args = verify_parser().parse_args(argv)
    except SystemExit as exc:  # usage error (2) or --help (0): an exit code, like the rest
        return int(exc.code or 0)
    head = None
    try:
        if args.record is not None:
            head = Head.from_record(json.loads(Path(args.record).read_text()))
        result = verify(args.log, head)
    except (OSError, ValueError) as exc:
        print(f"fedkit audit verify: {exc}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"{args.log}: {result}")
        if head is None:
            print("(no --record: a cut tail would not be seen)")
        return 0
    if result.torn and args.allow_torn:
        print(f"{args.log}: {result.entries} whole entries intact; {result}")
        return 0
    print(f"{args.log}: {result}", file=sys.stderr)
    return 1


def main(argv: list[str]) -> int:
    """``fedkit audit <command>``: ``privacy``, ``verify``."""
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    if argv[0] == "privacy":
        return privacy_main(argv[1:])
    if argv[0] == "verify":
        return verify_main(argv[1:])
    print(f"fedkit audit: unknown command {argv[0]!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2
