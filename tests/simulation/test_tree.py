"""Nested states round-trip through safetensors + JSON, bits included."""

from __future__ import annotations

import json
from collections import namedtuple

import attrs
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fedkit
from fedkit.core.tree import decode, encode, from_bytes, to_bytes
from fedkit.protocols import FaultKind
from fedkit.strategy import ServerState

Moments = namedtuple("Moments", ["m", "v"])


@attrs.frozen(eq=False)
class AdamLike:
    m: torch.Tensor
    v: torch.Tensor
    t: int
    _secret: float = 0.5


def same(a, b) -> bool:
    """Structural equality with bit-exact tensors (NaN equals NaN)."""
    if isinstance(a, torch.Tensor):
        return (
            isinstance(b, torch.Tensor)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(
                a.view(-1).view(torch.uint8) if a.numel() else a,
                b.view(-1).view(torch.uint8) if b.numel() else b,
            )
        )
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if attrs.has(type(a)):
        return type(a) is type(b) and all(
            same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a))
        )
    if isinstance(a, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return type(b) is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def roundtrip(tree):
    skeleton, blob = to_bytes(tree)
    skeleton = json.loads(json.dumps(skeleton))  # the skeleton survives JSON
    return from_bytes(skeleton, blob)


def test_component_and_server_states_round_trip():
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=7), dtype=torch.float32)
    chain_state = (
        (),
        (torch.zeros(7), torch.tensor(3, dtype=torch.int64)),
        AdamLike(m=x * 2, v=x.abs(), t=4, secret=0.25),
        Moments(m=x, v=x.double()),
        {"count": 2, "flags": torch.tensor([True, False])},
    )
    tree = {
        "state": ServerState(round=5, params=x, chain_state=chain_state),
        "key": fedkit.key(7),
        "dtype": torch.bfloat16,
        "kind": FaultKind.STALE,
        "numbers": [1, 2.5, float("nan"), float("inf"), -float("inf"), None, "text", True],
        "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(1.25, dtype=torch.float64),
    }
    back = roundtrip(tree)
    assert same(tree, back)
    assert back["state"].chain_state[2]._secret == 0.25
    assert back["key"] == fedkit.key(7)


def test_tensors_are_copied_not_shared():
    x = torch.arange(4.0)
    skeleton, tensors = encode((x[1:3], x))
    tensors["t0"][0] = 99.0
    assert x[1] == 1.0
    assert decode(skeleton, tensors)[1] is tensors["t1"]


def test_unsupported_leaf_names_its_place():
    with pytest.raises(TypeError, match=r"object at root\.a\[1\]"):
        encode({"a": (1, object())})
    with pytest.raises(TypeError, match="non-string keys"):
        encode({1: 2})


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.tuples(
        st.integers(0, 3),
        st.integers(0, 2**31),
        st.sampled_from(["float32", "float64", "int64", "bool"]),
    ).map(
        lambda a: torch.as_tensor(np.random.default_rng(a[1]).normal(size=a[0]) * 100).to(
            fedkit.core.flat.dtype_from_name(a[2])
        )
    ),
)
trees = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.text(max_size=4), inner, max_size=3),
    ),
    max_leaves=12,
)


@given(trees)
def test_any_tree_round_trips(tree):
    assert same(tree, roundtrip(tree))
