"""Metrics a real Prometheus scrapes: ``fedkit deploy local --prometheus`` runs 3 nodes for 3
rounds with Debian's Prometheus scraping the ServerApp and every node's launcher; afterwards
Prometheus's HTTP API (the server started again on the saved TSDB) holds the rounds the
record shows, the accepted replies and each node's training; the ServerApp's /healthz and
/readyz answered during the run. Also, fast: a node's report file and its collector."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import needs_flower
from deploy_helpers import record
from prometheus_client.parser import text_string_to_metric_families

import fedkit
from experiments.deploy_cli import main
from fedkit.flower import HonestClient, LoopConfig, ServerSetup, serve
from fedkit.flower.apps import answer
from fedkit.flower.local import node_metrics
from fedkit.flower.local.launcher import node_metrics_module
from fedkit.flower.local.prometheus import Prometheus, Target, scrape_config
from fedkit.flower.registry import NodeRegistry
from fedkit.run.metrics import Endpoint
from fedkit.tasks import digits

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus is not installed"
)
NODES, ROUNDS = 3, 3


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def probe(out, seen: dict, stop: threading.Event) -> None:
    """Poll the ServerApp's /healthz and /readyz (address from out/metrics.json) until
    /readyz said 200 or ``stop``."""
    while not stop.is_set():
        try:
            url = json.loads((out / "metrics.json").read_text())["url"]
            seen["healthz"] = get(url + "/healthz")
            seen.setdefault("readyz", []).append(get(url + "/readyz"))
            if seen["readyz"][-1][0] == 200:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.1)


@pytest.mark.deploy
@pytest.mark.slow
@needs_flower
@needs_prometheus
@pytest.mark.timeout(900)
def test_deploy_local_prometheus_holds_the_runs_rounds_replies_and_node_training(tmp_path, capsys):
    out = tmp_path / "out"
    seen: dict = {}
    stop = threading.Event()
    prober = threading.Thread(target=probe, args=(out, seen, stop), daemon=True)
    prober.start()
    args = ["local", "--nodes", str(NODES), "--prometheus", "task=digits"]
    try:
        code = main([*args, f"num_clients={NODES}", f"rounds={ROUNDS}", f"out_dir={out}"])
    finally:
        stop.set()
        prober.join(10)
    printed = capsys.readouterr().out
    assert code == 0, printed
    rec = record(out)
    assert len(rec["metrics"]) == ROUNDS
    accepted = rec["counters"]["accepted"]
    assert accepted == NODES * ROUNDS

    # the health endpoints answered while the run went on
    assert seen["healthz"][0] == 200 and seen["healthz"][1].startswith("ok")
    assert seen["readyz"][-1][0] == 200, seen["readyz"]

    # what the CLI printed from Prometheus before it stopped it
    assert f"rounds completed: {ROUNDS}" in printed
    with capsys.disabled():
        print("\n".join(line for line in printed.splitlines() if line.startswith("prometheus")))
    with Prometheus(out / "deployment" / "prometheus") as prom:  # the saved TSDB, no targets

        def one(expr: str) -> float:
            found = prom.query(expr)
            assert len(found) == 1, (expr, found)
            return found[0][1]

        assert one("max_over_time(fedkit_rounds_completed_total[1h])") == ROUNDS
        assert one("max_over_time(fedkit_replies_accepted_total[1h])") == accepted
        assert one("max_over_time(fedkit_round_duration_seconds_count[1h])") == ROUNDS
        assert one("max_over_time(fedkit_nodes_connected[1h])") == NODES
        assert one("max_over_time(fedkit_quorum_misses_total[1h])") == 0
        info = prom.query("last_over_time(fedkit_run_info[1h])")
        # a scrape before the run started sees the Info metric still without labels (how
        # prometheus_client exposes an unset Info): only the labelled series is the run's
        labelled = [m["fingerprint"] for m, _ in info if "fingerprint" in m]
        assert labelled == [rec["run"]["fingerprint"]]
        assert all(
            set(m) <= {"__name__", "instance", "job"} for m, _ in info if "fingerprint" not in m
        )
        trained = prom.query('max_over_time(fedkit_node_messages_total{outcome="trained"}[1h])')
        assert sorted((m["node"], v) for m, v in trained) == [
            (str(i), float(ROUNDS)) for i in range(NODES)
        ]
        timed = prom.query("max_over_time(fedkit_node_train_seconds_count[1h])")
        assert sorted(v for _, v in timed) == [float(ROUNDS)] * NODES
        sent = prom.query("max_over_time(fedkit_node_bytes_sent_total[1h])")
        params = rec["task"]["num_params"]
        assert all(v == ROUNDS * params * 4 for _, v in sent) and len(sent) == NODES
        p95 = prom.query(
            "histogram_quantile(0.95, max_over_time(fedkit_round_duration_seconds_bucket[1h]))"
        )
        print(
            "prometheus:",
            {
                "fedkit_rounds_completed_total": ROUNDS,
                "fedkit_replies_accepted_total": accepted,
                "node trained": sorted((m["node"], v) for m, v in trained),
                "round p95 (s)": p95[0][1],
            },
        )


def scraper(address_file, seen: dict, stop: threading.Event) -> None:
    """Scrape /metrics and /readyz every 0.05 s until ``stop``; keep every readiness code
    and the last exposition."""
    while not stop.is_set():
        try:
            url = json.loads(address_file.read_text())["url"]
            code, body = get(url + "/metrics")
            if code == 200:
                seen["metrics"] = body
            seen.setdefault("ready", set()).add(get(url + "/readyz")[0])
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)


def test_served_run_counts_the_grids_nodes_and_the_nodes_report_training(tmp_path, monkeypatch):
    """In process (Flower's in-memory grid, nodes as threads): the ServerApp's endpoint has
    the grid's 3 nodes and the run's rounds at its last scrape; the nodes' reports, folded
    by a node collector, hold one trained message per node and round."""
    from flower_harness import Federation

    task, rounds = digits(3, key=0), 2
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, batch_size=32, lr=0.1))
    reports = tmp_path / "reports.jsonl"
    node = node_metrics.NodeMetrics(reports)
    monkeypatch.setenv(node_metrics.ENV, str(reports))

    def honest(i):
        runtime = lambda ctx, request: HonestClient.from_node_config(task, ctx.node_config)  # noqa: E731
        return lambda message, fed: [answer(message, fed.context(i), runtime)]

    fed = Federation(tmp_path / "fed", 3).start([honest(i) for i in range(3)])
    seen: dict = {}
    stop = threading.Event()
    thread = threading.Thread(target=scraper, args=(tmp_path / "out" / "metrics.json", seen, stop))
    thread.start()
    try:
        NodeRegistry(tmp_path / "registry.json", fed.registry().nodes).save()
        setup = ServerSetup(
            task=task,
            strategy=strategy,
            rounds=rounds,
            seed=0,
            out_dir=tmp_path / "out",
            loop=LoopConfig(
                round_deadline=20.0, sample_timeout=5.0, min_nodes=3, poll_interval=0.01
            ),
            registry=tmp_path / "registry.json",
            metrics=Endpoint(port=0, linger=10.0),
        )
        history = serve(fed.grid, setup)
    finally:
        stop.set()
        thread.join(10)
        fed.close()
    assert len(history.metrics) == rounds
    families = {f.name: f for f in text_string_to_metric_families(seen["metrics"])}
    assert families["fedkit_rounds_completed"].samples[0].value == rounds
    assert families["fedkit_nodes_connected"].samples[0].value == 3
    assert families["fedkit_replies_accepted"].samples[0].value == 3 * rounds
    assert 200 in seen["ready"]
    value = node.registry.get_sample_value
    assert value("fedkit_node_messages_total", {"outcome": "trained"}) == 3 * rounds
    assert value("fedkit_node_train_seconds_count") == 3 * rounds
    assert value("fedkit_node_bytes_sent_total") == 3 * rounds * task.spec.size * 4


def test_scrape_config_has_a_job_per_kind_and_labels():
    config = scrape_config(
        [
            Target("fedkit-server", "127.0.0.1:1"),
            Target("fedkit-node", "127.0.0.1:2", {"node": "0"}),
            Target("fedkit-node", "127.0.0.1:3", {"node": "1"}),
        ],
        interval=0.5,
    )
    assert config["global"]["scrape_interval"] == "500ms"
    jobs = {j["job_name"]: j["static_configs"] for j in config["scrape_configs"]}
    assert [c["targets"] for c in jobs["fedkit-node"]] == [["127.0.0.1:2"], ["127.0.0.1:3"]]
    assert jobs["fedkit-node"][1]["labels"] == {"node": "1"}
    with pytest.raises(ValueError, match="scrape interval must be > 0 s, got 0"):
        scrape_config([], interval=0)


def _task(path: str, i: int) -> None:
    outcome = "refused" if i % 3 == 2 else "trained"
    node_metrics.report(
        outcome,
        seconds=0.5 if outcome == "trained" else None,
        bytes_sent=400 if outcome == "trained" else 0,
        reason="noise_below_floor" if outcome == "refused" else None,
        path=path,
    )


def test_node_metrics_fold_in_the_reports_of_many_processes(tmp_path):
    path = tmp_path / "node.jsonl"
    metrics = node_metrics.NodeMetrics(path)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_task, args=(str(path), i)) for i in range(9)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
        metrics.task_started()
        metrics.task_exited(p.exitcode)
    metrics.task_exited(1)
    with open(path, "ab") as f:
        f.write(b'{"outcome": "bogus"}\n{"outcome": "tra')  # a bad line and a partial one
    reg = metrics.registry
    value = reg.get_sample_value
    assert value("fedkit_node_messages_total", {"outcome": "trained"}) == 6
    assert value("fedkit_node_messages_total", {"outcome": "refused"}) == 3
    assert value("fedkit_node_messages_total", {"outcome": "error"}) == 0
    assert value("fedkit_node_refusals_total", {"reason": "noise_below_floor"}) == 3
    assert value("fedkit_node_train_seconds_count") == 6
    assert value("fedkit_node_train_seconds_sum") == pytest.approx(3.0)
    assert value("fedkit_node_bytes_sent_total") == 2400
    assert value("fedkit_node_tasks_started_total") == 9
    assert value("fedkit_node_tasks_failed_total") == 1
    assert value("fedkit_node_bad_reports_total") == 1
    with open(path, "ab") as f:  # the partial line completes later
        f.write(b'ined", "seconds": 1.0, "bytes": 8}\n')
    assert value("fedkit_node_messages_total", {"outcome": "trained"}) == 7


def test_node_endpoint_serves_the_collector_over_http(tmp_path):
    metrics = node_metrics.NodeMetrics(tmp_path / "node.jsonl")
    node_metrics.report("trained", seconds=0.2, bytes_sent=10, path=tmp_path / "node.jsonl")
    server = node_metrics.serve(metrics, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        code, body = get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["fedkit_node_bytes_sent"].samples[0].value == 10


def test_without_a_report_file_nothing_is_written(monkeypatch):
    monkeypatch.delenv(node_metrics.ENV, raising=False)
    assert node_metrics.report("trained", seconds=1.0) is False
    with pytest.raises(ValueError, match="outcome must be one of"):
        node_metrics.report("won")


def test_the_launcher_loads_node_metrics_by_path_when_run_as_a_script():
    code = (
        "import runpy, sys; g = runpy.run_path(sys.argv[1]); "
        "m = g['node_metrics_module'](); "
        "print(m.__name__, 'torch' in sys.modules, 'fedkit' in sys.modules)"
    )
    path = node_metrics_module().__file__.replace("node_metrics.py", "launcher.py")
    done = subprocess.run(
        [sys.executable, "-P", "-c", code, path], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["fedkit_node_metrics", "False", "False"]
