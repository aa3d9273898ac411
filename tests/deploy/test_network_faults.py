"""Network faults between SuperNodes and the SuperLink, in network namespaces joined by a
veth pair (root, ip, iptables, tc). The SuperLink lives in one namespace, the three nodes
in the other; one deployment serves every fault, each fault gets its own run of two rounds.
Under each fault training completes and nothing accepted is lost: every round aggregates
all three clients' updates (no reply lost, no quorum missed) and the final parameters are
exactly the in-process simulation's. Faults: 10 % random loss, a partition healed after a
while, connection resets healed after a while, a bandwidth cap, 100 ms added delay each way
(NFQUEUE delayer). Namespaces and processes are removed in a ``finally``, whatever happens.

Each fault takes about 1.5 min on 2 busy cores (plus 35 s to start the deployment). Loss and
partition run by default (as root); resets, the bandwidth cap and the delay passed as
reliably but are marked ``chaos_deploy`` to keep the default run's time down (the delayer
itself is checked by default in ``test_nfqueue_delay.py``).
"""

import time

import pytest
import torch
from conftest import needs_flower
from deploy_helpers import deployed_params, experiment, record, run_config, simulated_params

from chaos import netns
from experiments.flower_app import APP
from fedkit.flower.local import LocalDeployment

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.root,
    pytest.mark.slow,
    needs_flower,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        bool(netns.missing_tools("ip", "iptables", "tc")),
        reason=", ".join(netns.missing_tools("ip", "iptables", "tc")),
    ),
]

ROUNDS = 2
CONFIG = ("task=digits", "num_clients=3", f"rounds={ROUNDS}", "seed=0")
HEALED_AFTER = 10.0  # seconds a partition or the resets last once the ServerApp runs

# fault -> (apply, healed while the run goes on); BY_DEFAULT run without -m chaos_deploy
BY_DEFAULT = {"loss-10%", "partition-and-heal"}
FAULTS = {
    "loss-10%": (lambda topo: netns.random_loss(topo, 0.1), False),
    "partition-and-heal": (netns.partition, True),
    "resets-and-heal": (netns.resets, True),
    "bandwidth-cap": (netns.bandwidth_cap, False),
    "delay-100ms": (lambda topo: netns.delay(topo, ms=100), False),
}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("netfaults")
    with netns.topology() as topo:
        d = LocalDeployment(
            run_dir,
            nodes=3,
            host="0.0.0.0",
            advertise=netns.SERVER_IP,
            server_wrap=topo.in_server(),
            node_wrap=topo.in_nodes(),
            app=APP,
        )
        try:
            d.start()
            yield d, topo
        finally:
            d.close()


@pytest.fixture(scope="module")
def cfg():
    return experiment(*CONFIG)


@pytest.fixture(scope="module")
def expected(cfg, tmp_path_factory):
    return simulated_params(cfg, tmp_path_factory.mktemp("simulated"))


def tasks_started(deployment) -> int:
    """ServerApps the SuperLink has started so far (read from its log)."""
    log = (deployment.run_dir / "superlink.log").read_text(errors="replace")
    return log.count("Started task")


def wait_for_new_task(deployment, before: int, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while tasks_started(deployment) <= before:
        if time.monotonic() > end:
            raise TimeoutError(f"no ServerApp started within {timeout} s")
        time.sleep(0.2)


@pytest.mark.parametrize(
    "fault",
    [pytest.param(f, marks=() if f in BY_DEFAULT else pytest.mark.chaos_deploy) for f in FAULTS],
)
def test_training_completes_under_fault_and_nothing_accepted_is_lost(
    fault, deployment, cfg, expected
):
    d, topo = deployment
    apply, healed = FAULTS[fault]
    out = d.run_dir / fault
    try:
        apply(topo)
        before = tasks_started(d)
        run_id = d.submit(run_config(cfg, out, **{"min-nodes": 3}))
        if healed:  # the fault lasts HEALED_AFTER seconds into the run, then heals
            wait_for_new_task(d, before)
            time.sleep(HEALED_AFTER)
            netns.heal(topo)
        status = d.wait(run_id, timeout=1200)
    finally:
        netns.heal(topo)
    assert status == "finished:completed"
    rec = record(out)
    assert [m["round"] for m in rec["metrics"]] == list(range(1, ROUNDS + 1))
    for m in rec["metrics"]:
        assert (m["accepted"], m["lost"], m["quorum_missed"]) == (3, {}, False), m
    torch.testing.assert_close(deployed_params(out), expected, rtol=1e-5, atol=1e-6)
