"""Properties every group-2 kernel must have: order, absent rows, identical rows, robustness,
purity, components. Kernel-specific examples and reference agreement live in their files."""

from __future__ import annotations

import inspect

import attrs
import pytest
import torch
from group2_cases import BY_NAME, CASES, key_for, largest_f, rows
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import permutations, positive_weights, updates

import fedkit
from fedkit import aggregators as agg
from fedkit.replies import Reply

names = [c.name for c in CASES]
seeds = st.integers(0, 2**31 - 1)


def close(a: torch.Tensor, b: torch.Tensor, scale: float = 1.0) -> None:
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-7 * max(1.0, scale))


@pytest.mark.parametrize("name", [c.name for c in CASES if c.permutation_invariant])
@given(data=st.data(), u=updates(min_n=3, max_n=9), seed=seeds)
def test_permutation_invariant(name, data, u, seed):
    case = BY_NAME[name]
    n = u.shape[0]
    if name == "clipped_clustering":
        # Ties decide merges: in d <= 2 cosines often tie (all equal in d = 1), and with
        # even n the clusters can tie in size.
        assume(u.shape[1] >= 3)
        if n % 2 == 0:
            u, n = u[:-1], n - 1
    w = data.draw(positive_weights(n))
    perm = data.draw(permutations(n))
    f, key = largest_f(n), key_for(seed)
    out = case.call(u, w, f, key)
    close(case.call(u[perm], w[perm], f, key), out, float(u.abs().max()))


@pytest.mark.parametrize("name", names)
@given(
    data=st.data(),
    u=updates(min_n=3, max_n=8),
    seed=seeds,
    junk=st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300]),
)
def test_zero_weight_rows_are_absent(name, data, u, seed, junk):
    case = BY_NAME[name]
    n, d = u.shape
    w = data.draw(positive_weights(n))
    extra = data.draw(st.integers(1, 3))
    where = data.draw(
        st.lists(st.integers(0, n + extra - 1), min_size=extra, max_size=extra, unique=True)
    )
    big = torch.full((n + extra, d), junk, dtype=u.dtype)
    big_w = torch.zeros(n + extra, dtype=w.dtype)
    live = [i for i in range(n + extra) if i not in where]
    big[live] = u
    big_w[live] = w
    f, key = largest_f(n), key_for(seed)
    out = case.call(big, big_w, f, key)
    assert torch.isfinite(out).all()
    close(out, case.call(u, w, f, key), float(u.abs().max()))


@pytest.mark.parametrize("name", names)
@given(n=st.integers(1, 9), d=st.integers(1, 12), seed=seeds, data=st.data())
def test_identical_rows_give_that_row(name, n, d, seed, data):
    case = BY_NAME[name]
    row = rows(seed, 1, d)[0]
    w = data.draw(positive_weights(n))
    out = case.call(row.expand(n, d).clone(), w, largest_f(n), key_for(seed))
    close(out, row, float(row.abs().max()))


@pytest.mark.parametrize("name", [c.name for c in CASES if c.robustness is not None])
@given(data=st.data(), n=st.integers(3, 9), d=st.integers(1, 10), seed=seeds)
def test_outliers_do_not_drag_the_output(name, data, n, d, seed):
    case = BY_NAME[name]
    f = largest_f(n)
    bad = data.draw(st.integers(0, f if case.max_outliers is None else min(f, case.max_outliers)))
    u = rows(seed, n, d)
    honest = u[: n - bad]  # row 0 stays honest: MoNNA's pivot
    u[n - bad :] = 1e6 * rows(seed + 1, bad, d, scale=1.0)  # huge outliers, random directions
    w = data.draw(positive_weights(n))
    out = case.call(u, w, f, key_for(seed))
    tol = 1e-6 * float(honest.abs().max())
    if case.robustness == "hull":
        assert (out >= honest.min(0).values - tol).all() and (
            out <= honest.max(0).values + tol
        ).all()
    elif case.robustness == "hull0":
        lo = honest.min(0).values.clamp(max=0.0)
        hi = honest.max(0).values.clamp(min=0.0)
        assert (out >= lo - tol).all() and (out <= hi + tol).all()
    else:
        assert float(out.norm()) <= float(honest.norm(dim=1).max()) * (1 + 1e-9)


@pytest.mark.parametrize("name", names)
@given(u=updates(min_n=3, max_n=8), seed=seeds, data=st.data())
def test_inputs_unchanged(name, u, seed, data):
    case = BY_NAME[name]
    w = data.draw(positive_weights(u.shape[0]))
    w[0] = 0.0
    u[0] = float("nan")
    u_before, w_before = u.clone(), w.clone()
    case.call(u, w, largest_f(u.shape[0] - 1), key_for(seed))
    torch.testing.assert_close(u, u_before, rtol=0, atol=0, equal_nan=True)
    assert torch.equal(w, w_before)


@pytest.mark.parametrize("name", names)
def test_float32_input_gives_float32_output(name):
    u = rows(0, 7, 5).to(torch.float32)
    out = BY_NAME[name].call(u, None, 2, key_for(0))
    assert out.dtype == torch.float32 and out.shape == (5,)


@pytest.mark.parametrize("name", names)
@pytest.mark.parametrize(
    ("updates_", "weights", "error"),
    [
        (torch.zeros(4), None, ValueError),  # not [n, d]
        (torch.zeros(4, 3, dtype=torch.int64), None, TypeError),  # not floating
        (torch.zeros(0, 3), None, ValueError),  # no rows
        (torch.zeros(4, 3), torch.zeros(4), ValueError),  # every weight zero
        (torch.zeros(4, 3), torch.ones(5), ValueError),  # weights of the wrong length
        (torch.zeros(4, 3), torch.tensor([1.0, -1.0, 1.0, 1.0]), ValueError),  # negative
    ],
)
def test_bad_inputs_raise(name, updates_, weights, error):
    with pytest.raises(error):
        BY_NAME[name].call(updates_, weights, 1, key_for(0))


@pytest.mark.parametrize("kernel", [agg.mda, agg.monna, agg.caf, agg.smea, agg.dnc])
def test_too_few_active_rows_for_f(kernel):
    u = rows(0, 6, 3)
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])  # 4 active rows
    with pytest.raises(ValueError, match="2f"):
        kernel(u, w, f=2, key=key_for(0))
    with pytest.raises(ValueError, match="non-negative int"):
        kernel(u, w, f=-1, key=key_for(0))
    kernel(u, w, f=1, key=key_for(0))  # 4 > 2: fine


COMPONENTS = [
    agg.MDA,
    agg.MoNNA,
    agg.CAF,
    agg.SMEA,
    agg.DnC,
    agg.ClippedClustering,
    agg.SignGuard,
]


@pytest.mark.parametrize("component", COMPONENTS)
def test_component_fields_are_the_kernel_hyperparameters(component):
    params = inspect.signature(component.kernel).parameters
    hyper = {p for p, v in params.items() if v.kind is inspect.Parameter.KEYWORD_ONLY} - {"key"}
    assert {f.name for f in attrs.fields(component)} == hyper
    assert component.role is fedkit.Role.REDUCER


@pytest.mark.parametrize(
    "component",
    [
        agg.MDA(f=1),
        agg.MoNNA(f=1, pivot=2),
        agg.CAF(f=2),
        agg.SMEA(f=1),
        agg.DnC(f=1, sub_dim=2),
        agg.ClippedClustering(),
        agg.SignGuard(coord_frac=0.5),
    ],
)
def test_component_calls_its_kernel_in_a_chain(component):
    u, w, key = rows(3, 7, 4), torch.linspace(1.0, 2.0, 7, dtype=torch.float64), key_for(3)
    chain = fedkit.chain(component)
    out, _state, info = chain(u, w, chain.init(4), key)
    (inner_key,) = fedkit.split(key, 1)
    expected = type(component).kernel(u, w, key=inner_key, **fedkit.hyperparameters(component))
    assert torch.equal(out, expected)
    assert info["accepted"].all()


def _context(n: int, reference: torch.Tensor | None) -> fedkit.RoundContext:
    return fedkit.RoundContext(
        round=1,
        clients=torch.arange(n),
        num_clients=n,
        params=torch.zeros(reference.numel() if reference is not None else 1),
        reference=reference,
    )


def test_fltrust_component_takes_the_servers_reference_not_a_row():
    clients, ref = rows(4, 5, 3), rows(5, 1, 3)[0]
    w = torch.ones(5, dtype=torch.float64)
    out, _, info = agg.FLTrust()(clients, w, (), None, context=_context(5, ref))
    assert torch.equal(out, agg.fltrust(clients, None, reference=ref))
    cos = torch.nn.functional.cosine_similarity(clients, ref[None], dim=1)
    torch.testing.assert_close(info["scores"]["trust"], cos.clamp(min=0.0))
    assert torch.equal(info["rejected"]["fltrust"], cos <= 0)
    with pytest.raises(ValueError, match="root_examples"):
        agg.FLTrust()(clients, w, (), None, context=_context(5, None))
    with pytest.raises(ValueError, match="context"):
        agg.FLTrust()(clients, w, (), None)


def test_a_distrusted_reply_is_reported_rejected_by_the_strategy():
    """A client pointing away from the server's update gets trust 0: its reply must not
    be counted accepted (the old component reported every reply accepted)."""
    strategy = fedkit.Strategy(server=agg.FLTrust(), root_examples=10)
    state = strategy.init(torch.zeros(2, dtype=torch.float64))
    replies = [
        Reply(
            client=0, round=1, update=torch.tensor([1.0, 0.1], dtype=torch.float64), num_examples=1
        ),
        Reply(
            client=1, round=1, update=torch.tensor([-5.0, 0.0], dtype=torch.float64), num_examples=1
        ),
    ]
    ref = torch.tensor([1.0, 0.0], dtype=torch.float64)
    _, info = strategy.round(state, replies, None, clients=torch.tensor([0, 1]), reference=ref)
    assert info.accepted_clients == (0,)
    assert info.rejected == {"fltrust": 1}


def test_trust_anchor_components_need_root_examples():
    with pytest.raises(ValueError, match="root_examples"):
        fedkit.Strategy(server=agg.FLTrust())
    with pytest.raises(ValueError, match="root_examples"):
        fedkit.Strategy(server=agg.MoNNA(f=1))
    fedkit.Strategy(server=agg.MoNNA(f=1, pivot=0))  # a row pivot needs no root data


def test_monna_server_pivot_is_the_reference_and_not_averaged():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.2, 0.0]], dtype=torch.float64)
    ref = torch.tensor([0.1, 0.0], dtype=torch.float64)
    out, _, _ = agg.MoNNA(f=1)(u, None, (), None, context=_context(4, ref))
    torch.testing.assert_close(out, torch.tensor([0.4, 0.0], dtype=torch.float64))
    torch.testing.assert_close(out, agg.monna(u, f=1, pivot=ref))
