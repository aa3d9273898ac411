"""Renamed arguments (``fedkit.core.deprecation.renamed_arguments``) and the renames of 0.2.

An old keyword still works, warns (naming the class or function, the old and the new name, and
the release that removes it) and gives exactly what the new name gives; old and new together,
or an unknown keyword, raise ``TypeError``. The decorated attrs classes stay frozen values:
``attrs.fields``, ``attrs.evolve``, pickling and Hydra's ``instantiate`` see the new names.
"""

from __future__ import annotations

import importlib
import pickle
import re
import warnings

import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import fedkit
import privacy.mechanisms as pm
from fedkit import aggregators as agg
from fedkit import filters as flt
from fedkit import optimizers as opt
from fedkit.aggregators.centered_clipping import centered_clipping_with_mask
from fedkit.core.deprecation import renamed_arguments
from privacy.mechanisms.clipping import clip_scales_l1

CRFL_BOUND = {
    "noise_std": 0.01,
    "clip_norm": 1.0,
    "rounds": 10,
    "attack_round": 5,
    "attacker_weight": 0.1,
    "local_steps": 1,
    "lr": 0.1,
    "lipschitz": 1.0,
    "poison_fraction": 0.5,
}

# (class, old name, new name, a valid value, other arguments the class needs)
CLASS_RENAMES = [
    (fedkit.Clip, "max_norm", "clip_norm", 2.0, {}),
    (fedkit.CenteredClipping, "tau", "clip_norm", 0.5, {}),
    (fedkit.ClippedClustering, "max_tau", "max_clip_norm", 10.0, {}),
    (fedkit.FedAdam, "tau", "eps", 1e-3, {}),
    (fedkit.FedYogi, "tau", "eps", 1e-3, {}),
    (fedkit.FedAdagrad, "tau", "eps", 1e-3, {}),
    (fedkit.GeometricMedian, "max_iter", "iters", 7, {}),
    (fedkit.Bucketing, "s", "bucket_size", 3, {}),
    (fedkit.DnC, "filter_frac", "filter_multiplier", 1.5, {"f": 1}),
    (fedkit.FLAME, "lam", "noise_multiplier", 0.01, {}),
    (pm.CRFLBound, "num_attackers", "f", 2, CRFL_BOUND),
]

U = torch.tensor(
    [[1.0, 2.0, 0.0], [3.0, -1.0, 1.0], [0.5, 0.5, 0.5], [-2.0, 1.0, 4.0], [9.0, 9.0, -9.0]],
    dtype=torch.float64,
)
STATE = opt.adaptive_init(3, dtype=torch.float64)
DELTA = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)

# (kernel, call with **{name: value}, old name, new name, value)
KERNEL_RENAMES = [
    (flt.clip, lambda k, **kw: k(U, **kw), "max_norm", "clip_norm", 1.0),
    (flt.clip_scales, lambda k, **kw: k(U, **kw), "max_norm", "clip_norm", 1.0),
    (clip_scales_l1, lambda k, **kw: k(U, **kw), "max_norm", "clip_norm", 1.0),
    (agg.centered_clipping, lambda k, **kw: k(U, iters=2, **kw), "tau", "clip_norm", 1.0),
    (centered_clipping_with_mask, lambda k, **kw: k(U, **kw), "tau", "clip_norm", 1.0),
    (agg.clipped_clustering, lambda k, **kw: k(U, **kw), "max_tau", "max_clip_norm", 2.0),
    (agg.geometric_median, lambda k, **kw: k(U, **kw), "max_iter", "iters", 3),
    (
        fedkit.kernels.weiszfeld_coefficients,
        lambda k, **kw: k(
            U @ U.T, torch.full((5,), 0.2, dtype=torch.float64), tol=0.0, eps=1e-8, **kw
        ),
        "max_iter",
        "iters",
        3,
    ),
    (agg.dnc, lambda k, **kw: k(U, f=1, **kw), "filter_frac", "filter_multiplier", 1.5),
    (
        agg.flame,
        lambda k, **kw: k(U, space="updates", key=fedkit.key(0), **kw),
        "lam",
        "noise_multiplier",
        0.01,
    ),
    (
        agg.flame_round,
        lambda k, **kw: k(U, space="updates", key=fedkit.key(0), **kw).aggregate,
        "lam",
        "noise_multiplier",
        0.01,
    ),
    (
        flt.bucketing,
        lambda k, **kw: k(U, key=fedkit.key(1), **kw),
        "s",
        "bucket_size",
        2,
    ),
    (
        flt.bucket_assignment,
        lambda k, **kw: k(torch.ones(5), key=fedkit.key(1), **kw),
        "s",
        "bucket_size",
        2,
    ),
    (opt.adam_step, lambda k, **kw: k(DELTA, STATE, **kw), "tau", "eps", 1e-3),
    (opt.yogi_step, lambda k, **kw: k(DELTA, STATE, **kw), "tau", "eps", 1e-3),
    (opt.adagrad_step, lambda k, **kw: k(DELTA, STATE, **kw), "tau", "eps", 1e-3),
]


def message(qualname: str, old: str, new: str) -> str:
    return f"{qualname}: argument '{old}' is renamed '{new}'; '{old}' will be removed in 0.3"


def same(a, b) -> bool:
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


# ----------------------------------------------------------------------------- the helper


@renamed_arguments(old="new")
def kernel(x, *, new=1, other=0):
    return (x, new, other)


@renamed_arguments(old="new")
@attrs.frozen
class Value:
    new: int = attrs.field(default=1)
    other: int = 0


@given(st.integers(), st.integers())
def test_a_function_forwards_the_old_keyword_with_a_warning(x, v):
    with pytest.warns(DeprecationWarning, match=re.escape(message("kernel", "old", "new"))):
        assert kernel(x, old=v) == kernel(x, new=v) == (x, v, 0)


@given(st.integers(), st.integers())
def test_a_class_forwards_the_old_keyword_with_a_warning(v, other):
    with pytest.warns(DeprecationWarning, match=re.escape(message("Value", "old", "new"))):
        value = Value(old=v, other=other)
    assert value == Value(new=v, other=other) and value.new == v


def test_the_new_name_and_positional_arguments_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Value(3).new == 3 and Value(new=3) == Value(3)
        assert kernel(0, new=2) == (0, 2, 0)


def test_old_and_new_together_is_a_type_error_naming_both():
    with pytest.raises(TypeError, match=r"'old'.*'new'"):
        kernel(0, old=1, new=2)
    with pytest.raises(TypeError, match=r"'old'.*'new'"):
        Value(old=1, new=2)


def test_an_unknown_keyword_is_still_a_type_error():
    with pytest.raises(TypeError, match="nonsense"):
        kernel(0, nonsense=1)
    with pytest.raises(TypeError, match="nonsense"):
        Value(nonsense=1)


def test_the_class_stays_a_frozen_attrs_value():
    with pytest.warns(DeprecationWarning):
        value = Value(old=5)
    assert [a.name for a in attrs.fields(Value)] == ["new", "other"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        value.new = 1  # type: ignore[misc]
    assert attrs.evolve(value, other=2) == Value(new=5, other=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pickle.loads(pickle.dumps(value)) == value


def test_a_bad_rename_is_refused():
    with pytest.raises(ValueError):
        renamed_arguments(old="old")
    with pytest.raises(ValueError):
        renamed_arguments(old="not a name")


# ------------------------------------------------------------------- the renames of 0.2


@pytest.mark.parametrize(
    ("cls", "old", "new", "value", "extra"),
    CLASS_RENAMES,
    ids=[f"{c.__name__}.{o}" for c, o, *_ in CLASS_RENAMES],
)
def test_a_renamed_field_keeps_its_old_keyword(cls, old, new, value, extra):
    with pytest.warns(DeprecationWarning, match=re.escape(message(cls.__qualname__, old, new))):
        built = cls(**extra, **{old: value})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        expected = cls(**extra, **{new: value})
        assert built == expected and getattr(built, new) == value
        assert new in {a.name for a in attrs.fields(cls)}
        assert old not in {a.name for a in attrs.fields(cls)}
        assert attrs.evolve(built, **{new: value}) == expected
        assert pickle.loads(pickle.dumps(built)) == expected
    with pytest.raises(TypeError, match=rf"'{old}'.*'{new}'"):
        cls(**extra, **{old: value, new: value})
    with pytest.raises(TypeError):
        cls(**extra, no_such_argument=1)


@pytest.mark.parametrize(
    ("fn", "call", "old", "new", "value"),
    KERNEL_RENAMES,
    ids=[f"{k.__name__}.{o}" for k, _, o, *_ in KERNEL_RENAMES],
)
def test_a_renamed_kernel_keyword_keeps_its_old_spelling(fn, call, old, new, value):
    with pytest.warns(DeprecationWarning, match=re.escape(message(fn.__qualname__, old, new))):
        got = call(fn, **{old: value})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert same(got, call(fn, **{new: value}))
    with pytest.raises(TypeError, match=rf"'{old}'.*'{new}'"):
        call(fn, **{old: value, new: value})


def test_hydra_instantiate_accepts_the_new_and_the_old_key():
    from hydra.utils import instantiate

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip = instantiate({"_target_": "fedkit.filters.Clip", "clip_norm": 2.0})
    assert clip == fedkit.Clip(clip_norm=2.0)
    with pytest.warns(DeprecationWarning, match="'max_norm' is renamed 'clip_norm'"):
        old = instantiate({"_target_": "fedkit.filters.Clip", "max_norm": 2.0})
    assert old == clip


def test_check_lam_is_a_deprecated_spelling_of_check_noise_multiplier():
    flame = importlib.import_module("fedkit.aggregators.flame")  # the attribute is the kernel

    with pytest.warns(DeprecationWarning, match="check_noise_multiplier"):
        assert flame.check_lam(0.5) == flame.check_noise_multiplier(0.5) == 0.5


@settings(max_examples=25, deadline=None)
@given(st.floats(0.05, 20.0), st.integers(0, 2**31 - 1))
def test_clip_by_old_and_new_name_agree(clip_norm, seed):
    u = fedkit.core.keys.normal(fedkit.key(seed), (4, 6), dtype=torch.float64)
    with pytest.warns(DeprecationWarning):
        old = flt.clip(u, max_norm=clip_norm)
    new = flt.clip(u, clip_norm=clip_norm)
    assert torch.equal(old[0], new[0]) and torch.equal(old[1], new[1])
