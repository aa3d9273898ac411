"""OpenTelemetry spans of a simulated run: the tree run → round → {send → client.train×k,
collect, aggregate, evaluate, checkpoint} in an OTLP/JSON lines file, parents and nesting
right, nothing in the global provider; strict W3C traceparent parsing; clear errors for
bad settings."""

from __future__ import annotations

import itertools
import json
import sys
from collections import Counter

import pytest
import torch
from opentelemetry import trace

import fedkit
from experiments.run import tracing_callback
from fedkit.core.keys import fold_in
from fedkit.core.keys import key as root_key
from fedkit.flower.requests import RequestError, parse_request, request_fields
from fedkit.run.tracing import (
    OTLP_PACKAGE,
    Tracing,
    TracingError,
    client_span,
    load,
    node_trace_config,
    parse_traceparent,
    traceparent,
)
from fedkit.simulation.jobs import ClientJob
from fedkit.simulation.sequential import SequentialEngine
from fedkit.simulation.transport import PhasedEngine

ROUNDS, CLIENTS = 2, 6


@pytest.fixture(scope="module")
def task():
    return fedkit.tasks.synthetic(num_users=CLIENTS, key=0)


def strategy(per_round=None):
    return fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1),
        server=fedkit.chain(fedkit.Clip(clip_norm=1.0), fedkit.TrimmedMean(f=1)),
        clients_per_round=per_round,
    )


def children(spans, parent):
    return sorted(
        (s for s in spans if s["parent_id"] == parent["span_id"]), key=lambda s: s["start"]
    )


def test_a_simulated_run_is_one_trace_of_rounds_and_their_phases(tmp_path, task):
    file = tmp_path / "trace.jsonl"
    history = fedkit.simulate(
        task,
        strategy(per_round=4),
        rounds=ROUNDS,
        key=0,
        engine="sequential",
        checkpoint_dir=tmp_path / "ck",
        callbacks=[Tracing(file)],
    )
    lines = file.read_text().splitlines()
    assert all(set(json.loads(line)) == {"resourceSpans"} for line in lines)
    spans = load(file)
    assert len(lines) == len(spans)  # one finished span per line, written as it ends
    assert len({s["trace_id"] for s in spans}) == 1
    assert history.record["trace"]["trace_id"] == spans[0]["trace_id"]
    roots = [s for s in spans if s["parent_id"] is None]
    assert [r["name"] for r in roots] == ["run"]
    run_span = roots[0]
    assert run_span["attributes"]["fedkit.rounds_completed"] == ROUNDS
    resource = run_span["resource"]
    assert resource["service.name"] == "fedkit-server"
    assert resource["fedkit.run.fingerprint"] == history.record["run"]["fingerprint"]
    assert resource["fedkit.transport"] == "sequential"
    assert all(s["resource"] == resource for s in spans)

    rounds = children(spans, run_span)
    assert [(r["name"], r["attributes"]["fedkit.round"]) for r in rounds] == [
        ("round", 1),
        ("round", 2),
    ]
    for r, metrics in zip(rounds, history.metrics, strict=True):
        assert r["attributes"]["fedkit.accepted"] == metrics["accepted"] == 4
        phases = children(spans, r)
        assert [p["name"] for p in phases] == [
            "send",
            "collect",
            "aggregate",
            "evaluate",
            "checkpoint",
        ]
        send = phases[0]
        assert send["kind"] == 4  # SPAN_KIND_PRODUCER
        trained = children(spans, send)
        assert [t["name"] for t in trained] == ["client.train"] * 4
        assert metrics["expected"] == 4
        clients = [t["attributes"]["fedkit.client"] for t in trained]
        assert len(set(clients)) == 4 and all(0 <= c < CLIENTS for c in clients)
        assert r["attributes"]["fedkit.sampled"] == 4
        assert (
            phases[-1]["attributes"]["fedkit.file"]
            == f"ckpt_{r['attributes']['fedkit.round']:06d}.json"
        )
        for p in (*phases, *trained):
            assert children(spans, p) == [] or p is send
    # every span lies within its parent, siblings one after another
    by_id = {s["span_id"]: s for s in spans}
    for s in spans:
        assert s["start"] <= s["end"]
        if s["parent_id"] is not None:
            parent = by_id[s["parent_id"]]
            assert parent["start"] <= s["start"] and s["end"] <= parent["end"], s["name"]
    for r in rounds:
        phases = children(spans, r)
        assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(phases))
    assert Counter(s["name"] for s in spans) == {
        "run": 1,
        "round": ROUNDS,
        "send": ROUNDS,
        "client.train": 4 * ROUNDS,
        "collect": ROUNDS,
        "aggregate": ROUNDS,
        "evaluate": ROUNDS,
        "checkpoint": ROUNDS,
    }


def test_no_span_reaches_the_global_provider(tmp_path, task):
    before = trace.get_tracer_provider()
    fedkit.simulate(task, strategy(), rounds=1, key=0, callbacks=[Tracing(tmp_path / "t.jsonl")])
    assert trace.get_tracer_provider() is before
    assert type(before).__name__ == "ProxyTracerProvider"  # nobody set a global provider
    assert not trace.get_current_span().get_span_context().is_valid  # no span left current
    with trace.get_tracer("test").start_as_current_span("x") as span:
        assert not span.is_recording()


def test_the_vectorised_engine_gets_one_span_for_its_batch(tmp_path, task):
    file = tmp_path / "trace.jsonl"
    fedkit.simulate(
        task, strategy(), rounds=1, key=0, engine="vectorized", callbacks=[Tracing(file)]
    )
    spans = load(file)
    (send,) = [s for s in spans if s["name"] == "send"]
    (batch,) = children(spans, send)
    assert batch["name"] == "client.train"
    assert batch["attributes"]["fedkit.clients"] == list(range(CLIENTS))
    assert batch["attributes"]["fedkit.batched"] is True


def test_the_sequential_engine_trains_job_by_job_with_the_same_results(task):
    params = task.init(root_key(1))
    jobs = [
        ClientJob(
            client=c,
            work=0 if c == 2 else 1,
            key=fold_in(root_key(2), c),
            x=task.client_x[c],
            y=task.client_y[c],
        )
        for c in range(CLIENTS)
    ]
    cfg = fedkit.ClientConfig(epochs=1, lr=0.1)
    opened = []

    def phase(name, **attributes):
        import contextlib

        opened.append((name, attributes))
        return contextlib.nullcontext()

    whole = SequentialEngine().train(task, params, jobs, cfg)
    split = PhasedEngine(SequentialEngine(), phase).train(task, params, jobs, cfg)
    for field in ("updates", "num_examples", "loss", "steps", "trained"):
        assert torch.equal(getattr(whole, field), getattr(split, field)) or (
            field == "loss" and torch.allclose(whole.loss, split.loss, equal_nan=True)
        ), field
    assert whole.metrics == split.metrics
    assert [a["client"] for _, a in opened] == [0, 1, 3, 4, 5]  # the straggler is not trained


def test_a_run_that_raises_leaves_its_spans_ended_with_an_error(tmp_path):
    file = tmp_path / "trace.jsonl"
    small = fedkit.tasks.synthetic(num_users=4, key=0)
    krum = fedkit.Strategy(
        client=fedkit.ClientConfig(epochs=1, lr=0.1), server=fedkit.chain(fedkit.Krum(f=1))
    )
    with pytest.raises(ValueError, match="krum needs"):
        fedkit.simulate(small, krum, rounds=2, key=0, callbacks=[Tracing(file)])
    spans = {s["name"]: s for s in load(file)}
    assert {"run", "round", "send", "collect", "aggregate"} <= set(spans)
    assert spans["aggregate"]["status"] == 2 and spans["round"]["status"] == 2
    assert spans["run"]["status"] == 2


GOOD = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BAD = [
    "",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # uppercase
    "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # another version
    "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # 31 hex
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",  # 15 hex
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
    "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
    GOOD + "-extra",
    " " + GOOD,
    GOOD + "\n",
    "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
    "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902g7-01",  # not hex
    7,
    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
]


def test_traceparent_parsing_accepts_the_w3c_form_only():
    ctx = parse_traceparent(GOOD)
    assert (ctx.trace_id, ctx.span_id, int(ctx.trace_flags), ctx.is_remote) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
        1,
        True,
    )
    assert traceparent(trace.NonRecordingSpan(ctx)) == GOOD
    for bad in BAD:
        with pytest.raises(ValueError, match="traceparent must be '00-<32 hex>") as err:
            parse_traceparent(bad)
        assert repr(bad) in str(err.value)


def test_a_train_request_carries_a_strict_traceparent():
    fields = request_fields(3, 1, 2, root_key(0), fedkit.ClientConfig(), traceparent=GOOD)
    assert parse_request(fields).traceparent == GOOD
    assert (
        parse_request(request_fields(3, 1, 2, root_key(0), fedkit.ClientConfig())).traceparent
        is None
    )
    for bad in BAD:
        with pytest.raises(RequestError, match="field 'traceparent' must be") as err:
            parse_request({**fields, "traceparent": bad})
        assert repr(bad) in str(err.value)
    with pytest.raises(RequestError, match="traceparent"):
        request_fields(3, 1, 2, root_key(0), fedkit.ClientConfig(), traceparent="nope")


def test_a_client_span_joins_the_server_span_it_names(tmp_path):
    config = node_trace_config({"trace-file": str(tmp_path / "node.jsonl")})
    with client_span(config, GOOD, resource={"fedkit.node.id": 9}, attributes={"round": 1}) as span:
        assert span.is_recording()
    (s,) = load(tmp_path / "node.jsonl")
    assert (s["trace_id"], s["parent_id"]) == (GOOD[3:35], GOOD[36:52])
    assert s["kind"] == 5 and s["name"] == "client.train"  # SPAN_KIND_CONSUMER
    assert s["resource"]["service.name"] == "fedkit-client"
    assert s["resource"]["fedkit.node.id"] == 9
    assert node_trace_config({}) is None
    with client_span(None, GOOD, resource={}, attributes={}) as nothing:
        assert nothing is None


def test_settings_are_checked(tmp_path, monkeypatch):
    with pytest.raises(TracingError, match="needs a file or an otlp_endpoint"):
        Tracing()
    with pytest.raises(TracingError, match="otlp_endpoint must be an http"):
        Tracing(otlp_endpoint="grpc://collector:4317")
    with pytest.raises(TracingError, match="'trace-file-bad'"):
        node_trace_config({"otlp-endpoint": "trace-file-bad"})
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(TracingError, match=OTLP_PACKAGE) as err:
        Tracing(tmp_path / "t.jsonl", "http://127.0.0.1:4318/v1/traces")
    assert "http://127.0.0.1:4318/v1/traces" in str(err.value)


def test_the_experiment_config_section(tmp_path):
    assert tracing_callback(None, tmp_path) is None
    assert tracing_callback({"file": None, "otlp_endpoint": None}, tmp_path) is None
    on = tracing_callback({"file": True, "otlp_endpoint": None}, tmp_path)
    assert on.config.file == tmp_path / "trace.jsonl"
    assert tracing_callback({"file": "x/t.jsonl"}, tmp_path).config.file.name == "t.jsonl"
    with pytest.raises(ValueError, match=r"tracing.file must be true, a path or null, got 3"):
        tracing_callback({"file": 3}, tmp_path)
    with pytest.raises(ValueError, match=r"unknown keys \['endpoint'\]"):
        tracing_callback({"endpoint": "http://x"}, tmp_path)


def test_spans_reach_an_otlp_http_endpoint(task):
    # a collector stand-in on loopback: records what the OTLP/HTTP exporter posts
    import http.server
    import threading

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    posts: list[tuple[str, bytes]] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1/traces"
        fedkit.simulate(task, strategy(), rounds=2, key=0, callbacks=[Tracing(otlp_endpoint=url)])
    finally:
        server.shutdown()
        server.server_close()
    names = []
    for path, body in posts:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                names += [s.name for s in scope.spans]
    assert names.count("round") == 2 and names.count("run") == 1
