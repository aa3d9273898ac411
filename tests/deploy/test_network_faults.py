"""Network faults between SuperNodes and the SuperLink, in network namespaces with a veth
pair (root, ip, iptables, tc). The SuperLink lives in one namespace, the nodes in another;
under each fault training completes and nothing accepted is lost (every round aggregates
the replies it accepted and the run finishes). Namespaces and processes are removed in a
``finally``, whatever happens."""

import json

import pytest
from conftest import needs_flower

from chaos import netns
from fedkit.flower.deploy import LocalDeployment

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.chaos_deploy,
    pytest.mark.root,
    pytest.mark.slow,
    needs_flower,
    pytest.mark.timeout(1800),
]


def needs(*tools):
    missing = netns.missing_tools(*tools)
    return pytest.mark.skipif(bool(missing), reason=", ".join(missing))


FAULTS = {
    "loss-10%": (lambda topo: netns.random_loss(topo, 0.1), ("ip", "iptables")),
    "resets": (netns.resets, ("ip", "iptables")),
    "bandwidth-cap": (netns.bandwidth_cap, ("ip", "tc")),
}


@pytest.mark.parametrize(
    "fault", [pytest.param(f, marks=needs(*FAULTS[f][1])) for f in sorted(FAULTS)]
)
def test_training_completes_under_fault(fault, tmp_path):
    with netns.topology() as topo:
        d = LocalDeployment(
            tmp_path / "run",
            nodes=3,
            host="0.0.0.0",
            advertise=netns.SERVER_IP,
            server_wrap=topo.in_server(),
            node_wrap=topo.in_nodes(),
        )
        try:
            d.start()
            FAULTS[fault][0](topo)
            if fault == "resets":  # resets stop all traffic: heal after a while
                import time

                time.sleep(5)
                netns.heal(topo)
            run_id = d.submit(
                {
                    "rounds": 2,
                    "task-clients": 3,
                    "min-nodes": 3,
                    "checkpoint-dir": str(tmp_path / "run" / "checkpoints"),
                    "log-dir": str(tmp_path / "run" / "logs"),
                }
            )
            assert d.wait(run_id, timeout=1500) == "finished:completed"
        finally:
            d.close()
    record = json.loads((tmp_path / "run" / "logs" / "record.json").read_text())
    assert [m["round"] for m in record["metrics"]] == [1, 2]
    assert all(m["accepted"] == m["valid"] and not m["quorum_missed"] for m in record["metrics"])


@needs("ip", "iptables")
def test_partition_and_heal(tmp_path):
    import time

    with netns.topology() as topo:
        d = LocalDeployment(
            tmp_path / "run",
            nodes=3,
            host="0.0.0.0",
            advertise=netns.SERVER_IP,
            server_wrap=topo.in_server(),
            node_wrap=topo.in_nodes(),
        )
        try:
            d.start()
            netns.partition(topo)
            run_id = d.submit(
                {
                    "rounds": 2,
                    "task-clients": 3,
                    "min-nodes": 3,
                    "checkpoint-dir": str(tmp_path / "run" / "checkpoints"),
                    "log-dir": str(tmp_path / "run" / "logs"),
                }
            )
            time.sleep(10)
            netns.heal(topo)
            assert d.wait(run_id, timeout=1500) == "finished:completed"
        finally:
            d.close()
