"""The server's node registry: client ids are the server's, kept across restarts; a client
is never given to two nodes."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedkit.flower.registry import NodeRegistry, RegistryError


@given(
    st.lists(st.integers(1, 2**63), unique=True, max_size=12),
    st.integers(0, 10),
)
def test_new_nodes_get_the_lowest_free_ids_in_node_order(nodes, num_clients):
    reg = NodeRegistry()
    added = reg.assign(nodes, num_clients)
    assert added == sorted(nodes)[: min(len(nodes), num_clients)]
    assert sorted(reg.nodes.values()) == list(range(len(added)))
    assert all(reg.client_of(n) == i for i, n in enumerate(sorted(added)))
    again = reg.assign(nodes, num_clients)  # nothing changes for known nodes
    assert again == []


def test_assignments_survive_a_restart_and_provisioning_wins(tmp_path):
    path = tmp_path / "registry.json"
    reg = NodeRegistry.load(path)
    reg.provision({70: 1, 50: 0})
    reg.assign([10, 50, 70], 3)  # node 10 gets the free client 2
    back = NodeRegistry.load(path)
    assert back.nodes == {50: 0, 70: 1, 10: 2}
    assert back.node_of(2) == 10 and back.client_of(99) is None


def test_one_client_for_two_nodes_is_refused(tmp_path):
    reg = NodeRegistry()
    reg.provision({1: 0})
    with pytest.raises(RegistryError, match="client 0 is assigned to nodes 1 and 2"):
        reg.provision({2: 0})
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "other"}')
    with pytest.raises(RegistryError, match=r"expected fedkit\.registry/1"):
        NodeRegistry.load(bad)
