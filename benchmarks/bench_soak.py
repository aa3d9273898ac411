"""Soak: a supervised local deployment killed on a schedule (``chaos/experiments/soak.json``).

Runs the chaostoolkit experiment through ``chaoslib``: a SuperLink and 3 SuperNodes under
fedkit's supervisor (:mod:`fedkit.flower.local.supervisor`) run an endless ``task=digits``
run (quorum 2, ``min-nodes`` 2, 60 s deadline and sample timeout) while one process is
killed (``kill -9``) per period: SuperNodes, the ServerApp, the SuperLink, in the
experiment's order. Nothing but the supervisor restarts them. A background thread probes
the ServerApp's ``/healthz`` and ``/readyz`` every second. ``--minutes`` scales the
experiment's pauses (10: its schedule as written, one kill a minute).

Reports (printed as markdown, all figures in ``OUT/soak.json``): rounds completed against
rounds scheduled (soak time / median round time of the first rounds, before any kill),
the fraction of probes answered and ok per endpoint, recovery times (p50, max) per kind of
process, the supervisor's restart counts::

    python benchmarks/bench_soak.py --minutes 10 --out runs/soak
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "chaos" / "experiments" / "soak.json"


def scaled(experiment: dict, minutes: float) -> dict:
    """The experiment with every pause scaled from its 10 minutes to ``minutes``."""
    out = copy.deepcopy(experiment)
    for activity in out["method"]:
        pauses = activity.get("pauses")
        if pauses and "after" in pauses:
            pauses["after"] = float(pauses["after"]) * minutes / 10.0
    return out


def run(minutes: float, out: Path) -> dict:
    from chaoslib import merge_vars
    from chaoslib.experiment import ensure_experiment_is_valid
    from chaoslib.experiment import run_experiment as chaos_run
    from chaoslib.loader import load_experiment

    from experiments import chaos_actions

    experiment = scaled(load_experiment(str(EXPERIMENT)), minutes)
    ensure_experiment_is_valid(experiment)
    settings = {"runtime": {"rollbacks": {"strategy": "always"}}}
    t0 = time.time()
    try:
        journal = chaos_run(
            experiment, settings=settings, experiment_vars=merge_vars({"run_dir": str(out)})
        )
    finally:
        chaos_actions.stop_supervised(experiment["configuration"]["name"])
    report = next(
        (r.get("output") for r in journal["run"] if r["activity"]["name"] == "soak-report"), None
    )
    failed = [
        {"activity": r["activity"]["name"], "status": r["status"], "exception": r.get("exception")}
        for r in journal["run"]
        if r["status"] != "succeeded"
    ]
    return {
        "minutes": minutes,
        "started": t0,
        "journal_status": journal["status"],
        "deviated": journal["deviated"],
        "failed_activities": failed,
        "report": report,
    }


def fmt(x: float | None, spec: str = ".1f") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def markdown(result: dict) -> str:
    r = result["report"] or {}
    lines = [
        f"soak: {result['minutes']:g} min, chaostoolkit status {result['journal_status']}, "
        f"deviated {result['deviated']}",
        "",
        "| figure | value |",
        "|---|---|",
        f"| soak time | {fmt(r.get('soak_s'))} s |",
        f"| median round before the first kill | {fmt(r.get('median_round_s_before_kills'), '.2f')} s |",
        f"| rounds scheduled (soak time / median round) | {fmt(r.get('rounds_scheduled'))} |",
        f"| rounds completed | {r.get('rounds_completed')} |",
        f"| fraction of scheduled rounds completed | {fmt(r.get('rounds_fraction'), '.3f')} |",
    ]
    for path, p in (r.get("probes") or {}).items():
        lines.append(
            f"| `{path}` probes answered / ok (of {p['probes']}) | "
            f"{100 * p['answered']:.2f} % / {100 * p['ok']:.2f} % |"
        )
    lines += [
        "",
        "| process killed | kills | recovered | p50 (s) | max (s) |",
        "|---|---|---|---|---|",
    ]
    for kind, v in (r.get("recovery_s") or {}).items():
        lines.append(
            f"| {kind} | {v['n']} | {v['recovered']} | {fmt(v['p50'])} | {fmt(v['max'])} |"
        )
    lines += ["", f"supervisor: {r.get('restarts')}; errors: {len(r.get('supervisor_errors', []))}"]
    if result["failed_activities"]:
        lines.append(f"failed activities: {result['failed_activities']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path(time.strftime("runs/soak-%Y%m%d-%H%M%S")))
    args = parser.parse_args(argv)
    out = args.out.resolve()
    result = run(args.minutes, out / "run")
    (out / "soak.json").write_text(json.dumps(result, indent=2, default=str))
    print(markdown(result), flush=True)
    return 0 if result["report"] else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
