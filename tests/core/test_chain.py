"""chain: role checks, state composition, info merging, purity."""

import attrs
import pytest
import torch

import fedkit
from fedkit.core.components import KernelFilter, KernelReducer, ServerTransform, Transform


def _mean(updates, weights=None, *, key=None):
    w = weights / weights.sum()
    return w @ updates


def _drop_negative_first(updates, weights=None, *, key=None):
    keep = updates[:, 0] >= 0
    return updates, torch.where(keep, weights, torch.zeros_like(weights))


@attrs.frozen
class Mean(KernelReducer):
    kernel = staticmethod(_mean)


@attrs.frozen
class DropNegative(KernelFilter):
    kernel = staticmethod(_drop_negative_first)
    reason = "negative"


@attrs.frozen
class Scale(Transform):
    factor: float = 2.0

    def __call__(self, updates, weights, state, key):
        return (updates * self.factor, weights), state, {"scores": {"norm": updates.norm(dim=1)}}


@attrs.frozen
class Momentum(ServerTransform):
    beta: float = 0.5

    def init(self, d):
        return torch.zeros(d)

    def __call__(self, aggregate, weights, state, key):
        m = self.beta * state + aggregate
        return m, m, {"norm": m.norm()}


def test_roles_in_order_accepted():
    c = fedkit.chain(DropNegative(), Scale(), Mean(), Momentum())
    assert len(c.init(3)) == 4


@pytest.mark.parametrize(
    "components, message",
    [
        ((Scale(),), "exactly one reducer, got 0"),
        ((Mean(), Mean()), "exactly one reducer, got 2"),
        ((Mean(), Scale()), "position 1: a transform cannot follow a reducer"),
        ((Momentum(), Mean()), "position 1: a reducer cannot follow a server"),
        ((Scale(), "x", Mean()), "position 1: str is not a fedkit component"),
        ((), "at least one component"),
    ],
)
def test_role_errors_name_position(components, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fedkit.chain(*components)


def test_chain_runs_and_merges_info():
    c = fedkit.chain(DropNegative(), Scale(3.0), Mean(), Momentum(0.5))
    u = torch.tensor([[1.0, 2.0], [-1.0, 5.0], [3.0, 4.0]])
    w = torch.tensor([1.0, 1.0, 3.0])
    state = c.init(2)
    out, state, info = c(u, w, state, fedkit.key(0))
    expected = 3.0 * (1 * u[0] + 3 * u[2]) / 4
    assert torch.allclose(out, expected)
    assert torch.equal(info["rejected"]["negative"], torch.tensor([False, True, False]))
    assert torch.equal(info["accepted"], torch.tensor([True, False, True]))
    assert "1.Scale.norm" in info["scores"]
    assert "3.Momentum.norm" in info
    out2, state2, _ = c(u, w, state, fedkit.key(1))
    assert torch.allclose(out2, 1.5 * expected)  # momentum state carried explicitly
    assert torch.allclose(state2[3], out2)


def test_chain_does_not_mutate_inputs_or_state():
    c = fedkit.chain(DropNegative(), Mean(), Momentum())
    u = torch.tensor([[1.0, 2.0], [-1.0, 5.0]])
    w = torch.tensor([1.0, 2.0])
    state = c.init(2)
    copies = (u.clone(), w.clone(), state[2].clone())
    c(u, w, state, fedkit.key(0))
    assert (
        torch.equal(u, copies[0]) and torch.equal(w, copies[1]) and torch.equal(state[2], copies[2])
    )


def test_chain_checks_shapes_and_state_length():
    c = fedkit.chain(Mean())
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        c(torch.ones(3), None, None, None)
    with pytest.raises(ValueError, match="state has 2 entries"):
        c(torch.ones(2, 3), None, ((), ()), None)
    with pytest.raises(ValueError, match="non-negative"):
        c(torch.ones(2, 3), torch.tensor([1.0, -1.0]), None, None)
