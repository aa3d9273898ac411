"""Training under a request flood, with and without the rate-limiting proxy, in one run.

Each setting is a fresh local deployment (TLS + node authentication, ``--nodes`` warm
SuperNodes, ``fedkit run task=digits num_clients=N rounds=R``, seed 0) that trains while
floods run (:mod:`fedkit.flower.local.flood`, one process per source, started right after
the run is submitted, at most ``--rate`` requests/s for ``--duration`` s):

* ``unauth``: from 127.0.0.2, ``POST /v1/fleet/pull-messages`` with no node credentials;
* ``node``: from 127.0.0.3, a registered node (its own key, registered with the SuperLink,
  never started as a SuperNode) sending correctly signed ``pull-messages`` calls.

``proxy``: nodes and floods dial nginx (:mod:`fedkit.flower.local.proxy`, default limits);
``direct``: they dial the SuperLink. Per setting: the floods' offered and achieved rates,
what the proxy refused (its access log) and what the SuperLink refused (its access log: 401
= bad or missing node signature), round time p50/max from the record and the ratio to the
no-flood run of the same path, accepted updates, final accuracy, and whether the final
parameters equal those of the first setting (the run is deterministic).

    python benchmarks/bench_dos.py --out runs/dos             # the table in results/dos.md
    python benchmarks/bench_dos.py --settings proxy:none,proxy:both --duration 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.flower_app import APP, compose  # noqa: E402
from fedkit.flower.local import flood as floodmod  # noqa: E402
from fedkit.flower.local.deployment import LocalDeployment  # noqa: E402
from fedkit.flower.local.proxy import REFUSED, ProxyLimits, key_header  # noqa: E402
from fedkit.flower.pki import make_node_key  # noqa: E402

SOURCES = {"unauth": "127.0.0.2", "node": "127.0.0.3"}
ACCESS = re.compile(r'"POST (\S+) HTTP/1\.1" (\d{3})')


def superlink_statuses(log: Path) -> Counter:
    """Fleet requests the SuperLink answered, by status (uvicorn's access log)."""
    counts: Counter = Counter()
    for m in ACCESS.finditer(log.read_text(errors="replace")):
        if m.group(1).startswith("/v1/fleet/"):
            counts[int(m.group(2))] += 1
    return counts


def wait_for_round(audit: Path, timeout: float) -> None:
    """Until the run's audit log has opened its first round."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if audit.exists() and '"event":"round_open"' in audit.read_text():
            return
        time.sleep(0.2)
    raise RuntimeError(f"no round opened in {audit} within {timeout} s")


def run_setting(name: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    path, floods = name.split(":")
    kinds = {"none": [], "unauth": ["unauth"], "node": ["node"], "both": ["unauth", "node"]}[floods]
    cfg = compose(["task=digits", f"num_clients={args.nodes}", f"rounds={args.rounds}"])
    cfg["out_dir"] = str(out)
    run_config = {
        "experiment": json.dumps(cfg),
        "out-dir": str(out),
        "round-deadline": 300.0,
        "sample-timeout": 300.0,
        "min-nodes": args.nodes,
        "signed-replies": True,
    }
    dep = LocalDeployment(
        out / "deployment",
        nodes=args.nodes,
        app=APP,
        proxy=ProxyLimits() if path == "proxy" else None,
    )
    procs: dict[str, subprocess.Popen] = {}
    result: dict[str, Any] = {"setting": name, "path": path, "floods": kinds}
    with dep:
        dep.start()
        key, pub = make_node_key(dep.run_dir / "pki", "flooder")
        flooder_id = dep.register(pub)
        if dep.proxy_server is not None:
            dep.proxy_server.allow({key_header(pub): "flooder"})
        host, port = dep.node_address.rsplit(":", 1)
        t0 = time.time()
        run_id = dep.submit(run_config)
        if kinds:  # the floods start with the first round (the ServerApp starts slowly)
            wait_for_round(out / "audit.jsonl", args.timeout)
        for kind in kinds:
            spec = floodmod.FloodSpec(
                port=int(port),
                host=host,
                source=SOURCES[kind],
                rate=args.rate,
                duration=args.duration,
                count=int(args.rate * args.duration),
                connections=args.connections,
                ca=str(dep.pki.ca),
            )
            node = (key, flooder_id, "pull-messages") if kind == "node" else None
            cmd = floodmod.command(spec, out / f"flood-{kind}.json", node)
            procs[kind] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            status = dep.wait(run_id, timeout=args.timeout)
            run_end = time.time()
            for kind, proc in procs.items():
                _, err = proc.communicate(timeout=args.duration + 60)
                if proc.returncode != 0:
                    raise RuntimeError(f"flood {kind} failed: {err.decode()[-2000:]}")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        result["status"] = status
        result["run_seconds"] = run_end - t0
        result["superlink"] = dict(superlink_statuses(dep.run_dir / "superlink.log"))
        if dep.proxy_server is not None:
            result["proxy"] = {s: dict(c) for s, c in dep.proxy_server.tally().items()}
    for kind in kinds:
        fr = floodmod.FloodResult.from_json(json.loads((out / f"flood-{kind}.json").read_text()))
        result.setdefault("flood", {})[kind] = fr.to_json()
    return {**result, **round_stats(out, result)}


def rounds(out: Path) -> list[tuple[float, float]]:
    """``(start, end)`` Unix times of each round (the audit log's ``round_close``)."""
    spans = []
    for line in (out / "audit.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get("event") == "round_close":
            spans.append((entry["at"] - entry["data"]["wall_time"], entry["at"]))
    return spans


def round_stats(out: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Round times over the run and over the rounds that overlapped the flood."""
    rec = json.loads((out / "record.json").read_text())
    spans = rounds(out)
    walls = [e - s for s, e in spans]
    stats = {
        "rounds": len(walls),
        "round_p50": statistics.median(walls),
        "round_max": max(walls),
        "accepted": rec["counters"]["accepted"],
        "expected": rec["counters"]["expected"],
        "accuracy": rec["metrics"][-1].get("test_accuracy"),
    }
    floods = list((result.get("flood") or {}).values())
    if floods:
        start = min(f.get("started") or 0.0 for f in floods)
        if not start:  # results of an older flood tool: its file's time minus its length
            start = min(
                (out / f"flood-{k}.json").stat().st_mtime - f["seconds"]
                for k, f in result["flood"].items()
            )
        end = max(start + f["seconds"] for f in floods)
        inside = [e - s for s, e in spans if s < end and e > start]
        stats["flood_window"] = [start, end]
        stats["flooded_rounds"] = len(inside)
        if inside:
            stats["flooded_p50"] = statistics.median(inside)
            stats["flooded_max"] = max(inside)
    return stats


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table of ``results`` (one row per setting)."""
    base = {r["path"]: r["round_p50"] for r in results if not r["floods"]}
    lines = [
        "| setting | flood offered / achieved (req/s) | refused by proxy | refused by SuperLink "
        "(401) | flood requests the SuperLink served | rounds during flood | round p50 / max "
        "during flood (s) | p50 ratio to no-flood | round p50 / max, all rounds (s) | accepted / "
        "expected | final accuracy | final params = first row | honest requests not passed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        offered = achieved = refused_proxy = served = 0.0
        for kind, f in r.get("flood", {}).items():
            offered += f["offered"]
            achieved += f["achieved"]
            if r["path"] == "proxy":
                src = (r.get("proxy") or {}).get(SOURCES[kind], {})
                refused_proxy += sum(src.get(k, 0) for k in REFUSED)
                served += sum(v for k, v in src.items() if k == "passed" or "superlink_" in k)
            else:
                served += f["answered"]
        flood = "+".join(r["floods"]) or "none"
        if r["floods"]:
            p50, mx = r.get("flooded_p50"), r.get("flooded_max")
            in_flood = f"{p50:.2f} / {mx:.2f}" if p50 is not None else "none"
            ratio = f"{p50 / base[r['path']]:.2f}" if p50 and r["path"] in base else "n/a"
            rate = f"{offered:.0f} / {achieved:.0f}"
            counted = f"{refused_proxy:.0f}" if r["path"] == "proxy" else "n/a (no proxy)"
        else:
            in_flood, ratio, rate, counted = "n/a", "1 (baseline)", "0", "0"
        lines.append(
            f"| {r['path']}, flood {flood} | {rate} | {counted} | "
            f"{r['superlink'].get('401', r['superlink'].get(401, 0))} | {served:.0f} | "
            f"{r.get('flooded_rounds', 'n/a')} | {in_flood} | {ratio} | "
            f"{r['round_p50']:.2f} / {r['round_max']:.2f} | {r['accepted']} / {r['expected']} | "
            f"{r['accuracy']:.4f} | {r['same_params']} (max diff {r['max_param_diff']:.1e}) | "
            f"{honest(r)} |"
        )
    return "\n".join(lines)


def honest(r: dict[str, Any]) -> str:
    """The honest nodes' requests (127.0.0.1) the proxy did not pass, by outcome."""
    if r["path"] != "proxy":
        return "n/a"
    mine = {k: v for k, v in r["proxy"].get("127.0.0.1", {}).items() if k != "passed"}
    total = r["proxy"].get("127.0.0.1", {}).get("passed", 0) + sum(mine.values())
    shown = ", ".join(f"{k} {v}" for k, v in sorted(mine.items()))
    return f"{sum(mine.values())} of {total}" + (f" ({shown})" if shown else "")


def report(out: Path) -> str:
    """The table of a finished (or partial) run in ``out``, its statistics recomputed."""
    data = json.loads((out / "bench.json").read_text())
    results = []
    for r in data["results"]:
        d = out / r["setting"].replace(":", "-")
        results.append({**r, **round_stats(d, r)})
    return table(results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/dos")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--report", action="store_true", help="only print the table of --out")
    p.add_argument(
        "--settings",
        default="proxy:none,proxy:unauth,proxy:node,proxy:both,direct:none,direct:both",
    )
    a = p.parse_args(argv)
    out = Path(a.out).resolve()
    if a.report:
        print(report(out))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    results = []
    first = None
    for name in a.settings.split(","):
        d = out / name.replace(":", "-")
        print(f"== {name}", flush=True)
        r = run_setting(name, a, d)
        params = load_file(str(d / "record.safetensors"))["params"]
        if first is None:
            first = params
        r["same_params"] = bool((params - first).abs().max() == 0)
        r["max_param_diff"] = float((params - first).abs().max())
        results.append(r)
        print(json.dumps(r), flush=True)
        (out / "bench.json").write_text(json.dumps({"args": vars(a), "results": results}))
    print(report(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
