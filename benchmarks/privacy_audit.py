"""Privacy audit table: claimed ε vs the audited lower bound, per privacy config, and for the
broken mechanism issue 14 found (clip → example-weighted mean → noise for C/m).

Every row builds the config the way ``fedkit run`` would (``experiments.audit_cli``: Hydra
compose + ``experiments.build.build``) and audits the built strategy's server side with
:mod:`privacy.audit` at δ = 1e-5, confidence 0.95:

* ``central`` and ``central_adaptive`` (every ``mechanism: central`` config), Poisson
  q = 0.5: one-run (Steinke, Nasr & Jagielski 2023) with 1000 canaries among 2000 clients,
  d = 4096; many-run (one canary, Clopper–Pearson, threshold chosen on half of the runs)
  with 20 clients, 2000 runs, d = 256;
* ``local``: the same two audits of each client's message (1000 canaries; 20 000 runs);
* the broken mechanism: fixed-size sampling of 10 of 20 clients, a canary with 1000 examples
  against 10 for each honest client (many-run), next to the sound chain on the same clients.

Writes ``benchmarks/results/privacy_audit.json`` and ``benchmarks/results/privacy_audit.md``.

    .venv/bin/python benchmarks/privacy_audit.py          # ~3 min on 2 cores
    .venv/bin/python benchmarks/privacy_audit.py --quick  # a smoke run (fewer runs)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from experiments.audit_cli import broken_strategy, build_for_audit, compose_config, run_audits

RESULTS = Path(__file__).parent / "results"
CONFIGS = Path(__file__).parents[1] / "experiments" / "configs" / "privacy"
CONFIDENCE = 0.95


def configs(mechanism: str) -> list[str]:
    out = []
    for path in sorted(CONFIGS.glob("*.yaml")):
        if (yaml.safe_load(path.read_text()) or {}).get("mechanism") == mechanism:
            out.append(path.stem)
    return out


def row(
    config: str, exp: Any, result: Any, *, setting: str, claim_status: str | None = None
) -> dict:
    claim = exp.privacy.epsilon(exp.rounds)
    d = result.details
    evidence = (
        f"{d['correct']}/{d['guesses']} right of {d['canaries']} canaries"
        if result.method == "one-run"
        else f"TPR≥{d['tpr_lower']:.3f}, FPR≤{d['fpr_upper']:.4f} ({d['favoured_runs']}+"
        f"{d['other_runs']} held-out runs)"
    )
    return {
        "config": config,
        "setting": setting,
        "status": claim_status or getattr(exp.privacy, "status", None),
        "claimed_epsilon": claim,
        "audited_epsilon": result.epsilon,
        "method": result.method,
        "observed": result.observed,
        "evidence": evidence,
        "verdict": "holds" if result.epsilon <= claim else "VIOLATED",
        "details": d,
    }


def audit(overrides: list[str], *, method: str, **kw: Any) -> tuple[Any, list]:
    exp = build_for_audit(compose_config(["threads=1", *overrides]))
    return exp, run_audits(exp, method=method, confidence=CONFIDENCE, seed=0, **kw)


def study(quick: bool) -> list[dict]:
    runs_central, runs_local = (400, 4000) if quick else (2000, 20000)
    base = dict(canaries=1000, honest_examples=10, canary_examples=10)
    rows = []
    for name in configs("central"):
        for z in (0.5, 1.0, 2.0):
            common = [f"privacy={name}", f"privacy.noise_multiplier={z}", "rounds=2"]
            setting = f"z={z}, q=0.5, T=2"
            grown = [*common, "num_clients=2000", "strategy.clients_per_round=1000"]
            exp, res = audit(grown, method="one-run", runs=runs_central, dim=4096, **base)
            rows += [row(name, exp, r, setting=setting + ", N=2000") for r in res]
            small = [*common, "num_clients=20", "strategy.clients_per_round=10"]
            exp, res = audit(small, method="many-run", runs=runs_central, dim=256, **base)
            rows += [row(name, exp, r, setting=setting + ", N=20") for r in res]
    for name in configs("local"):
        for z in (1.0, 2.0, 4.0):
            overrides = [f"privacy={name}", f"privacy.noise_multiplier={z}", "rounds=2"]
            exp, res = audit(overrides, method="both", runs=runs_local, dim=256, **base)
            rows += [row(name, exp, r, setting=f"z={z}, T=2, per client") for r in res]
    for z in (1.0, 2.0):
        overrides = [
            "privacy=central",
            f"privacy.noise_multiplier={z}",
            "rounds=1",
            "num_clients=20",
            "strategy.clients_per_round=10",
        ]
        heavy = {**base, "canary_examples": 1000}
        setting = f"z={z}, q=0.5, T=1, N=20, canary 1000 examples vs 10"
        exp, res = audit(overrides, method="many-run", runs=runs_central, dim=256, **heavy)
        rows += [row("central (sound chain)", exp, r, setting=setting) for r in res]
        res = run_audits(
            exp,
            method="many-run",
            strategy=broken_strategy(exp),
            confidence=CONFIDENCE,
            seed=0,
            runs=runs_central,
            dim=256,
            **heavy,
        )
        rows += [
            row(
                "BROKEN: weighted mean, noise z·C/m", exp, r, setting=setting, claim_status="defect"
            )
            for r in res
        ]
    return rows


def markdown(rows: list[dict], seconds: float, command: str) -> str:
    lines = [
        "# Privacy audit: claimed ε vs audited lower bound",
        "",
        "Generated by `benchmarks/privacy_audit.py` (do not edit by hand). Command:",
        "",
        f"    {command}",
        "",
        f"Total runtime {seconds / 60:.1f} min (2-core box, `torch.set_num_threads(1)`). "
        "δ = 1e-5; every lower bound holds with confidence 0.95 (the true ε is at least the "
        "audited value with probability ≥ 0.95). A sound claim must never be below its audited "
        "bound; a broken one may be, and then the audit has proved it wrong.",
        "",
        "* **one-run** (Steinke, Nasr & Jagielski 2023): 1000 canary clients, each present with "
        "probability ½, random directions of norm C in d = 4096 (central) or 256 (local); the "
        "auditor scores each canary by the projection of the released aggregates, summed over "
        "rounds, and guesses from the top and bottom of the ranking (6 guess counts fixed in "
        "advance, Bonferroni); ε from the paper's binomial bound with its δ term.",
        "* **many-run** (Jagielski et al. 2020; Nasr et al. 2021): one canary, present in half "
        "of the runs; threshold, side and ratio chosen on half of the runs, Clopper–Pearson "
        "bounds (β/2 each) on the other half: ε ≥ log((TPR_lo − δ)/FPR_hi).",
        "* central: the built `Strategy` (Poisson sampling, quorum 0, the config's chain) runs "
        "through `Strategy.sample` and `Strategy.round`; honest clients send fresh Gaussian "
        "updates (norm ≈ C, 10 examples each). local: each client's message after `LocalDP` "
        "(+u when in, −u when out: the replacement the local ε is stated for).",
        "",
        "| config | setting | status | claimed ε | method | audited ε ≥ | evidence | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['setting']} | {r['status']} | {r['claimed_epsilon']:.3f} | "
            f"{r['method']} | {r['audited_epsilon']:.3f} | {r['evidence']} | {r['verdict']} |"
        )
    lines += [
        "",
        "Reading the table. The sound configs' bounds sit below their claims, and the audits "
        "have a ceiling: with 1000 canaries the one-run bound is at most 2.9 / 3.6 / 4.6 / 5.3 "
        "when 100 / 200 / 500 / all 1000 guesses are right; the many-run bound is at most "
        "log(1 / FPR_hi) ≈ 4.9 with 500 held-out runs without the canary (7.2 with 5000). "
        "Sampling costs the central audits power on top (a canary that was not drawn leaves no "
        "trace), so a sound claim of ε ≈ 2–5 audits far below it. The broken mechanism is "
        "caught: with the example-weighted mean the canary holding most of the examples moves "
        "the aggregate by ~0.9·C where the noise was calibrated for C/m = 0.1·C, and the "
        "audited bound exceeds the claim (clearly at z = 2, narrowly at z = 1 where the claim "
        "is near the many-run ceiling); the sound chain on the same clients (uniform weights, "
        "fixed denominator) stays below it.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (a smoke run)")
    parser.add_argument("--out", default=str(RESULTS), help="directory for the json and md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = study(args.quick)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = ".venv/bin/python benchmarks/privacy_audit.py" + (" --quick" if args.quick else "")
    (out / "privacy_audit.json").write_text(json.dumps(rows, indent=2, default=str) + "\n")
    (out / "privacy_audit.md").write_text(markdown(rows, seconds, command))
    for r in rows:
        print(
            f"{r['config']:<36} {r['setting']:<45} claim {r['claimed_epsilon']:7.3f} "
            f"{r['method']:<8} audit {r['audited_epsilon']:6.3f} {r['verdict']}"
        )
    print(f"{seconds:.0f} s -> {out / 'privacy_audit.md'}")


if __name__ == "__main__":
    main()
