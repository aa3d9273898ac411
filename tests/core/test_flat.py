"""Flat parameters: round trips, views, spec serialisation, clear errors."""

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import fedkit

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)


@st.composite
def tensor_dicts(draw):
    names = draw(
        st.lists(st.text("abcdefgh.", min_size=1, max_size=6), min_size=1, max_size=5, unique=True)
    )
    k = fedkit.key(draw(st.integers(0, 1000)))
    return {
        n: fedkit.core.keys.normal(fedkit.fold_in(k, i), draw(shapes)) for i, n in enumerate(names)
    }


@given(tensor_dicts())
def test_round_trip(tensors):
    flat, spec = fedkit.flatten(tensors)
    assert flat.ndim == 1 and flat.numel() == spec.size == sum(t.numel() for t in tensors.values())
    back = fedkit.unflatten(flat, spec)
    assert list(back) == list(tensors)
    for name, t in tensors.items():
        assert torch.equal(back[name], t)


@given(tensor_dicts())
def test_unflatten_returns_views(tensors):
    flat, spec = fedkit.flatten(tensors)
    for name, view in fedkit.unflatten(flat, spec).items():
        assert view.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()
        assert view.data_ptr() == flat.data_ptr() + spec[name].offset * flat.element_size()


@given(tensor_dicts())
def test_spec_json_round_trip_and_hash(tensors):
    _, spec = fedkit.flatten(tensors)
    again = fedkit.ParamSpec.from_json(spec.to_json())
    assert again == spec and hash(again) == hash(spec)
    json.loads(spec.to_json())


def test_select_subset_recomputes_offsets():
    tensors = {"a": torch.ones(2, 2), "b": torch.zeros(3), "c": torch.full((2,), 5.0)}
    _, spec = fedkit.flatten(tensors)
    sub = spec.select(["c", "a"])
    assert sub.names == ("a", "c")  # kept in the spec's order
    assert sub["c"].offset == 4 and sub.size == 6
    sub_flat, _ = fedkit.flatten(tensors, sub)
    assert torch.equal(fedkit.unflatten(sub_flat, sub)["c"], tensors["c"])
    assert spec.select(lambda n: n != "b") == sub


def test_trainable_subset_of_a_module():
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    _, spec = fedkit.flatten(dict(model.named_parameters()))
    trainable = spec.select([n for n, p in model.named_parameters() if p.requires_grad])
    assert trainable.names == ("1.weight", "1.bias") and trainable.size == 3


def test_mixed_dtypes_promote_and_cast_back_only_when_asked():
    tensors = {"w": torch.ones(2, dtype=torch.float32), "n": torch.tensor([3], dtype=torch.int64)}
    flat, spec = fedkit.flatten(tensors)
    assert flat.dtype == torch.float32 or flat.dtype == torch.float64
    with pytest.raises(TypeError, match=r"'n' has dtype torch\.int64 but the flat vector has"):
        fedkit.unflatten(flat, spec)
    back = fedkit.unflatten(flat, spec, cast=True)
    assert back["n"].dtype == torch.int64 and back["n"].item() == 3


_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@given(a=st.sampled_from(_FLOATS), b=st.sampled_from(_FLOATS), seed=st.integers(0, 1000))
def test_no_entry_is_cast_silently(a, b, seed):
    """An entry whose dtype differs from the flat vector's is refused, naming both dtypes,
    unless cast=True; an entry of the flat's own dtype is always a view."""
    k = fedkit.key(seed)
    tensors = {
        "a": fedkit.core.keys.normal(k, 3, dtype=a),
        "b": fedkit.core.keys.normal(fedkit.fold_in(k, 1), 2, dtype=b),
    }
    flat, spec = fedkit.flatten(tensors)
    mixed = [n for n, t in tensors.items() if t.dtype != flat.dtype]
    if mixed:
        name = mixed[0]
        rule = (
            rf"{name!r} has dtype {tensors[name].dtype} but the flat vector has dtype {flat.dtype}"
        )
        with pytest.raises(TypeError, match=rule.replace(".", r"\.")):
            fedkit.unflatten(flat, spec)
    else:
        storage = flat.untyped_storage().data_ptr()
        for view in fedkit.unflatten(flat, spec).values():
            assert view.untyped_storage().data_ptr() == storage
    back = fedkit.unflatten(flat, spec, cast=True)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t)


def test_wrong_length_and_dtype_are_refused():
    _, spec = fedkit.flatten({"a": torch.ones(3)})
    with pytest.raises(ValueError, match=r"length 4.*expects 3"):
        fedkit.unflatten(torch.ones(4), spec)
    with pytest.raises(TypeError, match=r"dtype torch\.float64, ParamSpec expects torch\.float32"):
        fedkit.unflatten(torch.ones(3, dtype=torch.float64), spec)
    with pytest.raises(TypeError, match=r"dtype torch\.float64, ParamSpec expects torch\.float32"):
        fedkit.unflatten(torch.ones(3, dtype=torch.float64), spec, cast=True)  # only entries
    with pytest.raises(ValueError, match="1-D"):
        fedkit.unflatten(torch.ones(1, 3), spec)
    with pytest.raises(KeyError, match="missing"):
        fedkit.flatten({"b": torch.ones(3)}, spec)
    with pytest.raises(ValueError, match="shape"):
        fedkit.flatten({"a": torch.ones(4)}, spec)


def test_flatten_leaves_inputs_alone():
    t = {"a": torch.arange(4.0)}
    flat, _ = fedkit.flatten(t)
    flat += 1
    assert torch.equal(t["a"], torch.arange(4.0))
