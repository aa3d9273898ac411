"""A node's worker momentum in Flower's RecordDict (no processes needed)."""

import pytest
import torch
from conftest import needs_flower

from fedkit.flower.node_state import keep_momentum, momentum_before

pytestmark = needs_flower


def test_momentum_round_trips_and_a_repeated_round_mixes_from_the_same_start():
    from flwr.app import RecordDict

    state = RecordDict()
    assert momentum_before(state, 1) is None
    keep_momentum(state, 1, torch.zeros(3), torch.ones(3))
    assert torch.equal(momentum_before(state, 2), torch.ones(3))  # the next round
    assert torch.equal(momentum_before(state, 1), torch.zeros(3))  # a retry of round 1
    keep_momentum(state, 3, torch.ones(3), torch.full((3,), 2.0))
    assert torch.equal(momentum_before(state, 5), torch.full((3,), 2.0))
    with pytest.raises(ValueError, match="round 2 after round 3"):
        momentum_before(state, 2)
