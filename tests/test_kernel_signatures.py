"""One kernel signature (docs/api.md): a kernel of a reducer or a row transform is
``name(updates, weights=None, *, <hyperparameters>, key=...)`` and a server-side kernel is
``name(delta_or_aggregate, state?, *, <hyperparameters>)``: everything after the data is
keyword-only, so a call names what it sets. Checked on every component's kernel in
``fedkit.kernels`` and on the privacy mechanisms' kernels."""

from __future__ import annotations

import inspect

import pytest
from test_public_api import KERNEL_OF

import fedkit
import fedkit.kernels
from privacy.mechanisms import adaptive, clipping, crfl, fixed_mean, gaussian, local

ROW_KERNELS = [
    getattr(fedkit.kernels, KERNEL_OF[cls.__name__])
    for cls in (*fedkit.REDUCERS, *fedkit.TRANSFORMS)
    if KERNEL_OF[cls.__name__] != "fldetector_outliers"  # scores in, not rows
]
PRIVACY_ROW_KERNELS = [clipping.clip_rows, fixed_mean.fixed_denominator_mean, local.local_dp]
# the adaptive clip's bound is state, passed positionally after the rows (as an optimizer's)
PRIVACY_STATEFUL_ROW_KERNELS = [adaptive.adaptive_clip, adaptive.adaptive_clip_mean]
SERVER_KERNELS = [
    getattr(fedkit.kernels, KERNEL_OF[cls.__name__]) for cls in fedkit.SERVER_TRANSFORMS
]
PRIVACY_SERVER_KERNELS = [gaussian.gaussian_noise, crfl.crfl_step]


def params(fn):
    return list(inspect.signature(fn).parameters.values())


def keyword_only_after(fn, positional: int) -> None:
    ps = params(fn)
    kinds = [p.kind for p in ps[:positional]]
    assert all(k is inspect.Parameter.POSITIONAL_OR_KEYWORD for k in kinds), fn.__name__
    rest = [p.name for p in ps[positional:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert not rest, f"{fn.__qualname__}: {rest} should be keyword-only"


@pytest.mark.parametrize("fn", ROW_KERNELS + PRIVACY_ROW_KERNELS, ids=lambda f: f.__qualname__)
def test_row_kernels_take_updates_then_optional_weights_then_keywords(fn):
    first, second = params(fn)[:2]
    assert (first.name, second.name) == ("updates", "weights"), fn.__qualname__
    assert second.default is None, f"{fn.__qualname__}: weights must default to None"
    keyword_only_after(fn, 2)


@pytest.mark.parametrize("fn", PRIVACY_STATEFUL_ROW_KERNELS, ids=lambda f: f.__qualname__)
def test_stateful_row_kernels_take_their_state_third(fn):
    assert [p.name for p in params(fn)[:3]] == ["updates", "weights", "clip_norm"]
    keyword_only_after(fn, 3)


@pytest.mark.parametrize("fn", SERVER_KERNELS, ids=lambda f: f.__qualname__)
def test_optimizer_steps_take_delta_and_state_then_keywords(fn):
    assert [p.name for p in params(fn)[:2]] == ["delta", "state"], fn.__qualname__
    keyword_only_after(fn, 2)


@pytest.mark.parametrize("fn", PRIVACY_SERVER_KERNELS, ids=lambda f: f.__qualname__)
def test_privacy_server_kernels_take_the_aggregate_then_keywords(fn):
    assert params(fn)[0].name == "aggregate"
    keyword_only_after(fn, 1)


@pytest.mark.parametrize(
    "fn", ROW_KERNELS + PRIVACY_ROW_KERNELS + PRIVACY_SERVER_KERNELS, ids=lambda f: f.__qualname__
)
def test_a_kernel_that_draws_randomness_takes_a_key_keyword(fn):
    names = {p.name for p in params(fn)}
    assert not names & {"seed", "rng", "generator"}, f"{fn.__qualname__}: randomness via key="
