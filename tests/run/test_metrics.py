"""The server's Prometheus metrics after a simulated run equal the record's totals; the HTTP
endpoint serves the exposition format, /healthz and /readyz, and lingers for a last scrape."""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request

import attrs
import pytest
from prometheus_client.parser import text_string_to_metric_families

import fedkit
from chaos.faults import Compose, Corrupt, Dropout, Duplicate
from fedkit.run.callbacks import Callback
from fedkit.run.metrics import Endpoint, PrometheusMetrics, checkpoint_age, series_names


@attrs.frozen
class LinearAccountant:
    """ε grows by ``per_round`` every round (a stand-in for a real accountant)."""

    per_round: float = 0.7
    delta: float = 1e-5
    target_epsilon: float | None = 10.0

    def init(self, num_clients):
        return 0

    def spend(self, ledger, round):
        return ledger + 1

    def epsilon(self, ledger):
        return self.per_round * ledger


def value(registry, name, **labels):
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


def labelled(registry, name, label):
    """``{label value: sample value}`` of a labelled counter's ``_total`` samples."""
    return {
        s.labels[label]: s.value
        for fam in registry.collect()
        for s in fam.samples
        if s.name == name
    }


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    task = fedkit.tasks.synthetic(num_users=6, key=0)
    strategy = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1, batch_size=8),
        clients_per_round=4,
        quorum=4,
        accountant=LinearAccountant(),
    )
    faults = Compose(Dropout(p=0.3), Corrupt(p=0.3), Duplicate(p=0.3))
    out = tmp_path_factory.mktemp("run")
    metrics = PrometheusMetrics(checkpoint_dir=out / "ck")
    history = fedkit.simulate(
        task,
        strategy,
        rounds=5,
        key=3,
        faults=faults,
        engine="sequential",
        checkpoint_dir=out / "ck",
        callbacks=[metrics],
    )
    return history, metrics


def test_counters_equal_the_records_totals(faulty_run):
    history, metrics = faulty_run
    reg, counters = metrics.metrics.registry, history.record["counters"]
    rounds = len(history.metrics)
    assert value(reg, "fedkit_rounds_completed_total") == rounds == 5
    assert value(reg, "fedkit_replies_accepted_total") == counters["accepted"]
    rejected = labelled(reg, "fedkit_replies_rejected_total", "reason")
    lost = labelled(reg, "fedkit_clients_lost_total", "reason")
    assert rejected == {k: v for k, v in counters["rejected"].items() if v}
    assert lost == {k: v for k, v in counters["lost"].items() if v}
    assert value(reg, "fedkit_quorum_misses_total") == counters["quorum_missed"]
    # the faults were real: something was rejected, lost and a quorum missed
    assert rejected and lost and counters["quorum_missed"] >= 1
    assert value(reg, "fedkit_round_duration_seconds_count") == rounds
    walls = sum(m["wall_time"] for m in history.metrics)
    assert value(reg, "fedkit_round_duration_seconds_sum") == pytest.approx(walls)


def test_gauges_follow_the_last_round(faulty_run):
    history, metrics = faulty_run
    reg, last = metrics.metrics.registry, history.metrics[-1]
    assert value(reg, "fedkit_epsilon") == pytest.approx(last["epsilon"]) == pytest.approx(3.5)
    assert value(reg, "fedkit_budget_fraction") == pytest.approx(last["budget_fraction"])
    assert value(reg, "fedkit_budget_fraction") == pytest.approx(0.35)
    assert value(reg, "fedkit_round") == value(reg, "fedkit_rounds_planned") == 5
    assert value(reg, "fedkit_test_accuracy") == pytest.approx(last["test_accuracy"])
    age = value(reg, "fedkit_checkpoint_age_seconds")
    assert 0 <= age < 60
    info = {
        s.labels["fingerprint"]: s.labels
        for s in next(iter(metrics.metrics.info.collect())).samples
    }
    assert set(info) == {history.record["run"]["fingerprint"]}
    assert info[history.record["run"]["fingerprint"]]["seed"] == "3"
    # a simulation has no node count: the gauge stays NaN rather than inventing one
    assert math.isnan(value(reg, "fedkit_nodes_connected"))


def test_checkpoint_age_is_nan_without_checkpoints_and_grows(tmp_path):
    assert math.isnan(checkpoint_age(tmp_path, time.time()))
    (tmp_path / "ckpt_000002.json").write_text("{}")
    assert checkpoint_age(tmp_path, time.time() + 30) == pytest.approx(30, abs=2)


def test_run_info_is_not_exposed_before_the_run_sets_it():
    """A scrape between the endpoint's start and the run's start sees no run-info series
    (an unset prometheus_client Info would show up as one without labels)."""
    metrics = PrometheusMetrics()
    samples = [s for f in metrics.metrics.info.collect() for s in f.samples]
    assert samples == []


def test_series_names_cover_suffixes_of_unobserved_labelled_metrics():
    names = series_names(PrometheusMetrics().metrics.registry)
    assert {
        "fedkit_replies_rejected_total",
        "fedkit_round_duration_seconds_bucket",
        "fedkit_round_duration_seconds_count",
        "fedkit_run_info",
        "fedkit_epsilon",
    } <= names
    assert "fedkit_replies_rejected" not in names


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")


class Nodes:
    def __init__(self, n):
        self.n = n

    def __call__(self):
        return self.n


def test_http_endpoint_health_and_readiness(tmp_path):
    task = fedkit.tasks.synthetic(num_users=4, key=0)
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, lr=0.1), clients_per_round=2)
    nodes = Nodes(1)
    endpoint = Endpoint(port=0, stall_after=30.0, address_file=tmp_path / "metrics.json")
    metrics = PrometheusMetrics(endpoint, nodes=nodes, min_nodes=2)
    metrics.start()
    url = json.loads((tmp_path / "metrics.json").read_text())["url"]
    assert url.startswith("http://127.0.0.1:")
    assert get(url + "/healthz")[0] == 200
    code, text, _ = get(url + "/readyz")
    assert (code, text.strip()) == (503, "not ready: run not started")
    assert get(url + "/nothing")[0] == 404

    seen = {}

    class Probe(Callback):
        def on_round_end(self, run, m):
            if m["round"] == 1:
                seen["short"] = get(url + "/readyz")
                nodes.n = 2
                time.sleep(NODE_WAIT)
                seen["ready"] = get(url + "/readyz")
                seen["scrape"] = get(url + "/metrics")

    fedkit.simulate(task, strategy, rounds=2, key=0, callbacks=[metrics, Probe()])
    assert seen["short"][0] == 503 and "1 of 2 nodes" in seen["short"][1]
    assert seen["ready"][0] == 200
    code, body, kind = seen["scrape"]
    assert code == 200 and kind.startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["fedkit_rounds_completed"].samples[0].value == 1
    assert families["fedkit_nodes_connected"].samples[0].value == 2
    # closed with the run: nothing listens any more
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthz", timeout=2)


NODE_WAIT = 1.1  # past NODE_REFRESH_S, so the next read asks nodes() again


def test_healthz_reports_a_stalled_loop():
    metrics = PrometheusMetrics(Endpoint(stall_after=0.05))
    assert metrics.health()[0] == 200
    time.sleep(0.1)
    code, text = metrics.health()
    assert code == 503 and text.startswith("stalled: no progress for")


def test_close_lingers_until_a_scrape_after_the_run(tmp_path):
    task = fedkit.tasks.synthetic(num_users=4, key=0)
    strategy = fedkit.Strategy(client=fedkit.ClientConfig(epochs=1, lr=0.1), clients_per_round=2)
    metrics = PrometheusMetrics(Endpoint(linger=20.0, address_file=tmp_path / "m.json"))
    scraped = {}

    def scraper():
        url = json.loads((tmp_path / "m.json").read_text())["url"]
        while not metrics.ended:
            time.sleep(0.05)
        time.sleep(0.3)  # the run has ended and close() is waiting
        scraped["body"] = get(url + "/metrics")[1]

    t0 = time.monotonic()
    metrics.start()
    thread = threading.Thread(target=scraper)
    thread.start()
    fedkit.simulate(task, strategy, rounds=2, key=0, callbacks=[metrics])
    took = time.monotonic() - t0
    thread.join(10)
    assert "fedkit_rounds_completed_total 2.0" in scraped["body"]
    assert took < 15  # it stopped waiting at the scrape, not after the whole linger


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"port": 70000}, "port must be an int in \\[0, 65535\\], got 70000"),
        ({"stall_after": 0}, "stall_after must be > 0 s, got 0"),
        ({"linger": -1}, "linger must be >= 0, got -1"),
    ],
)
def test_bad_endpoint_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Endpoint(**kwargs)
