"""A deployment behind the rate-limiting proxy trains through a few seconds of flood.

Three nodes (TLS + node authentication) dial nginx; once training has begun, two floods hit
the proxy for ~3 s from their own loopback addresses: 2000 requests without credentials
(127.0.0.2) and up to 1000 correctly signed ``pull-messages`` calls of a registered node that is
not training (127.0.0.3); then 20 requests with that node's key and a forged signature
(127.0.0.4). The run completes with every update accepted; the proxy refused and counted
every unauthenticated request and the node's excess, and passed the rest, which the
SuperLink authenticated (200); the forged ones passed the proxy's key filter and the
SuperLink refused them (401). The honest nodes were never refused."""

from __future__ import annotations

import json
import re
import threading
import time

import attrs
import pytest
from conftest import needs_flower
from deploy_helpers import experiment, record, run_config
from test_proxy_config import needs_nginx

from experiments.flower_app import APP
from fedkit.flower.local.deployment import LocalDeployment
from fedkit.flower.local.flood import FloodSpec, flood, node_request
from fedkit.flower.local.proxy import ProxyLimits, key_header, refused
from fedkit.flower.pki import make_node_key

NODES, ROUNDS = 3, 3


def wait_for_training(access_log, timeout: float = 120.0) -> None:
    """Until a node has pulled a message's objects through the proxy (a round is on)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if access_log.exists() and '"/v1/fleet/pull-object"' in access_log.read_text():
            return
        time.sleep(0.1)
    raise AssertionError("no node pulled a message within the timeout")


@pytest.mark.deploy
@pytest.mark.slow
@needs_flower
@needs_nginx
@pytest.mark.timeout(600)
def test_training_behind_the_proxy_survives_a_flood_and_refusals_are_counted(tmp_path):
    out = tmp_path / "out"
    cfg = experiment("task=digits", f"num_clients={NODES}", f"rounds={ROUNDS}")
    cfg["out_dir"] = str(out)
    limits = ProxyLimits()
    results: dict = {}
    with LocalDeployment(tmp_path / "deployment", nodes=NODES, app=APP, proxy=limits) as dep:
        dep.start()
        key, pub = make_node_key(dep.run_dir / "pki", "flooder")
        flooder = dep.register(pub)  # registered, never started: authenticated, not training
        dep.proxy_server.allow({key_header(pub): "flooder"})
        run_id = dep.submit(run_config(cfg, out, **{"min-nodes": NODES, "signed-replies": True}))
        wait_for_training(dep.proxy_server.access_log)

        base = FloodSpec(port=dep.proxy_server.port, ca=str(dep.pki.ca), duration=3.0)
        signed = node_request(key, flooder)
        specs = {
            "anon": attrs.evolve(base, source="127.0.0.2", rate=700.0, count=2000),
            "node": attrs.evolve(
                base,
                source="127.0.0.3",
                rate=400.0,
                count=1000,
                connections=64,  # requests the proxy passes wait on the SuperLink
                path=signed["path"],
                body=signed["body"],
                headers=signed["headers"],
            ),
        }
        threads = [
            threading.Thread(target=lambda k=k, s=s: results.update({k: flood(s)}))
            for k, s in specs.items()
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        forged = dict(signed["headers"])
        forged["flwr-signature"] = forged["flwr-signature"][::-1]
        time.sleep(limits.node_burst / limits.node_rate)  # the node's bucket refills
        results["forged"] = flood(  # within the node's rate, so the proxy passes them
            attrs.evolve(
                specs["node"],
                source="127.0.0.4",
                rate=limits.node_rate / 2,
                count=20,
                connections=1,
                headers=tuple(forged.items()),
            )
        )
        status = dep.wait(run_id, timeout=400)
        counts = dep.proxy_server.tally()
        superlink_log = (dep.run_dir / "superlink.log").read_text(errors="replace")

    assert status == "finished:completed"
    rec = record(out)
    assert rec["counters"]["accepted"] == rec["counters"]["expected"] == NODES * ROUNDS
    assert rec["counters"]["rejected"] == {} and rec["counters"]["lost"] == {}

    anon, node, forged_r = results["anon"], results["node"], results["forged"]
    # every flood request was answered and is in the proxy's count
    assert anon.answered == 2000 and anon.errors == {}
    assert anon.statuses == {401: 2000} and counts["127.0.0.2"] == {"unknown_node": 2000}
    assert node.sent >= 500 and node.answered == node.sent and node.errors == {}, node
    mine = counts["127.0.0.3"]
    passed, limited = mine["passed"], mine["rate"] + mine["connections"]
    assert set(mine) <= {"passed", "rate", "connections"} and passed + limited == node.answered
    assert node.statuses == {200: passed, 429: limited}  # the SuperLink said 200
    bound = limits.node_burst + limits.node_rate * node.seconds + 1
    assert 0 < passed <= bound and limited > 0, (mine, bound, node)
    assert forged_r.statuses == {401: 20} and counts["127.0.0.4"] == {"superlink_401": 20}
    assert refused(counts) == 2000 + limited
    # the honest nodes were never refused
    assert refused(counts, "127.0.0.1") == 0 and counts["127.0.0.1"]["passed"] > 0
    assert set(counts["127.0.0.1"]) == {"passed"}
    # the SuperLink refused only the forged signatures
    refusals = re.findall(r'"POST /v1/fleet/\S+ HTTP/1\.1" 401', superlink_log)
    assert len(refusals) == 20
    print(
        "flood behind the proxy:",
        json.dumps(
            {k: {"achieved": round(r.achieved), "statuses": r.statuses} for k, r in results.items()}
        ),
        {s: dict(c) for s, c in counts.items()},
    )
