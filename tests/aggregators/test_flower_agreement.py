"""Group-1 kernels agree with Flower's aggregation functions (``flwr.server.strategy.aggregate``)
and the Message-API ``MultiKrum`` strategy on random inputs; documented differences are
pinned.

Flower takes a list of ``(layers, num_examples)`` per client; fedkit takes the flat rows
``U[n, d]`` (the clients' layers concatenated) and the weights ``w = num_examples``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.server.strategy.aggregate import (
    aggregate,
    aggregate_bulyan,
    aggregate_krum,
    aggregate_median,
    aggregate_trimmed_avg,
)
from flwr.serverapp.strategy import MultiKrum
from hypothesis import given
from hypothesis import strategies as st

from fedkit import aggregators as agg
from fedkit.aggregators.bulyan import iterated_krum
from fedkit.aggregators.krum import active_sq_distances, rank_rows, sum_of_nearest

DTYPES = {np.float64: torch.float64, np.float32: torch.float32}


@st.composite
def client_results(draw, min_n=1, max_n=12):
    """Flower's input (a list of ``(layers, num_examples)``, two layers per client) and the
    same data as fedkit's ``(U, w)``."""
    n = draw(st.integers(min_n, max_n))
    a, b, c = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    results = [
        (
            [
                rng.normal(0.0, 3.0, size=a).astype(dtype),
                rng.normal(0.0, 3.0, size=(b, c)).astype(dtype),
            ],
            int(rng.integers(1, 200)),
        )
        for _ in range(n)
    ]
    u = torch.as_tensor(
        np.stack([np.concatenate([x.ravel() for x in layers]) for layers, _ in results])
    )
    w = torch.tensor([float(k) for _, k in results], dtype=torch.float64)
    return results, u, w


def flat(layers) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([np.asarray(x).ravel() for x in layers]))


def assert_agrees(ours: torch.Tensor, theirs, u: torch.Tensor) -> None:
    theirs = flat(theirs)
    if u.dtype == torch.float64:
        torch.testing.assert_close(ours, theirs.to(ours.dtype), rtol=1e-10, atol=1e-10)
    else:  # float32 sums in another order
        scale = float(u.abs().max())
        torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-5, atol=1e-5 * scale)


def tie_tolerance(u: torch.Tensor) -> float:
    return 1e-12 if u.dtype == torch.float64 else 1e-4


def same_krum_choice(ours: torch.Tensor, theirs, u: torch.Tensor, f: int) -> None:
    """Krum returns a row: the same row as Flower, or one whose score ties with Flower's pick
    (exact ties, e.g. mutual nearest neighbours with one neighbour, break differently:
    Flower by index; in float32 also ties to float32 precision)."""
    theirs = flat(theirs).to(u.dtype)
    if torch.equal(ours, theirs):
        return
    scores = agg.krum_scores(u.double(), f=f)
    pick = lambda row: int(torch.nonzero((u == row).all(dim=1))[0])  # noqa: E731
    a, b = float(scores[pick(ours)]), float(scores[pick(theirs)])
    assert abs(a - b) <= tie_tolerance(u) * max(a, b)


@given(client_results())
def test_mean_is_flowers_aggregate(problem):
    results, u, w = problem
    assert_agrees(agg.mean(u, w), aggregate(copy.deepcopy(results)), u)


@given(client_results())
def test_median_is_flowers_aggregate_median(problem):
    results, u, _ = problem
    assert_agrees(agg.median(u), aggregate_median(copy.deepcopy(results)), u)


def test_weighted_median_differs_from_flower_which_ignores_weights():
    results = [([np.array([0.0])], 1), ([np.array([1.0])], 1), ([np.array([2.0])], 10)]
    u = torch.tensor([[0.0], [1.0], [2.0]], dtype=torch.float64)
    assert flat(aggregate_median(results)).tolist() == [1.0]
    assert agg.median(u, torch.tensor([1.0, 1.0, 10.0], dtype=torch.float64)).tolist() == [2.0]
    assert agg.median(u).tolist() == [1.0]  # equal weights: Flower's value


@given(client_results(), st.floats(0.0, 0.49))
def test_trimmed_mean_is_flowers_trimmed_avg_with_f_from_the_proportion(problem, proportion):
    results, u, _ = problem
    n = u.shape[0]
    f = int(proportion * n)  # Flower's convention: cut int(p * n) rows at each end
    assert_agrees(
        agg.trimmed_mean(u, f=f), aggregate_trimmed_avg(copy.deepcopy(results), proportion), u
    )


@given(client_results(min_n=3), st.data())
def test_krum_is_flowers_aggregate_krum(problem, data):
    results, u, _ = problem
    f = data.draw(st.integers(0, (u.shape[0] - 3) // 2))
    same_krum_choice(agg.krum(u, f=f), aggregate_krum(copy.deepcopy(results), f, 0), u, f)


@given(client_results(min_n=3), st.data())
def test_multi_krum_is_flowers_aggregate_krum_with_to_keep(problem, data):
    results, u, w = problem
    n = u.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    ours = agg.multi_krum(u, w, f=f, m=m)  # both weight the kept rows by num_examples
    theirs = aggregate_krum(copy.deepcopy(results), f, m)
    if not _near_tie_at_cut(u, f, m):
        assert_agrees(ours, theirs, u)


def _near_tie_at_cut(u: torch.Tensor, f: int, m: int) -> bool:
    """Rows whose Krum scores tie at the cut (exactly, or to float32 precision in float32)
    may be kept by one and dropped by the other: Flower breaks ties by index (reversed for
    multi-krum), fedkit by the rows' spread. Then the kept sets differ legitimately."""
    scores = torch.sort(agg.krum_scores(u.double(), f=f)).values
    if m >= len(scores):
        return False
    return bool(scores[m] - scores[m - 1] <= tie_tolerance(u) * scores[m])


def test_krum_needs_2f_plus_3_rows_where_flower_clamps():
    """Flower's ``aggregate_krum`` uses ``max(1, n − f − 2)`` neighbours and accepts any n;
    fedkit enforces Krum's assumption n >= 2f + 3 (Blanchard et al. 2017)."""
    rng = np.random.default_rng(0)
    results = [([rng.normal(size=3)], 1) for _ in range(4)]
    u = torch.as_tensor(np.stack([r[0][0] for r in results]))
    assert flat(aggregate_krum(results, 1, 0)).shape == (3,)
    with pytest.raises(ValueError, match=r"2f \+ 3 = 5"):
        agg.krum(u, f=1)


def our_selection_first(results, u: torch.Tensor, f: int):
    """The clients reordered as fedkit's iterated Krum picks them (then the rest). Flower
    breaks exact score ties by index, fedkit by the rows' spread (order-independent); in this
    order both break them the same way, so the algorithms can be compared."""
    picked = iterated_krum(active_sq_distances(u, torch.arange(len(u))), f, len(u) - 2 * f).tolist()
    order = picked + [i for i in range(len(u)) if i not in picked]
    return [copy.deepcopy(results[i]) for i in order]


def near_tie_in_selection(u: torch.Tensor, f: int) -> bool:
    """float32 only: some step of the selection has two lowest float64 scores that differ by
    less than float32 precision (Flower's float32 distances may order them otherwise)."""
    dist = active_sq_distances(u.double(), torch.arange(len(u)))
    left = list(range(len(u)))
    for _ in range(len(u) - 2 * f):
        among = dist[left][:, left]
        k = min(max(1, len(left) - f - 2), len(left) - 1)
        scores = sum_of_nearest(among, k)
        low = torch.sort(scores).values
        if len(low) > 1 and 0 < low[1] - low[0] <= 1e-4 * low[1]:
            return True
        left.pop(int(rank_rows(scores, among)[0]))
    return False


@given(client_results(min_n=3, max_n=12), st.data())
def test_bulyan_is_flowers_aggregate_bulyan(problem, data):
    results, u, _ = problem
    f = data.draw(st.integers(0, (u.shape[0] - 3) // 4))
    theirs = aggregate_bulyan(our_selection_first(results, u, f), f, aggregate_krum, to_keep=0)
    if u.dtype == torch.float64 or not near_tie_in_selection(u, f):
        assert_agrees(agg.bulyan(u, f=f), theirs, u)


def test_bulyan_does_not_depend_on_client_order_where_flower_does():
    """With f = 1 the last Krum steps score rows by one neighbour, so the closest pair always
    ties; Flower keeps the lower index, so its result depends on the client order."""
    rows = [[0.0], [1.1], [2.3], [4.7], [10.0], [10.6], [-20.0]]
    results = [([np.array(r)], 1) for r in rows]
    forward = flat(aggregate_bulyan(copy.deepcopy(results), 1, aggregate_krum, to_keep=0))
    backward = flat(aggregate_bulyan(copy.deepcopy(results[::-1]), 1, aggregate_krum, to_keep=0))
    assert forward.tolist() != backward.tolist()
    u = torch.tensor(rows, dtype=torch.float64)
    ours = agg.bulyan(u, f=1)
    assert torch.equal(agg.bulyan(u.flip(0), f=1), ours)
    theirs = aggregate_bulyan(our_selection_first(results, u, 1), 1, aggregate_krum, to_keep=0)
    assert_agrees(ours, theirs, u)


def test_bulyan_shares_ties_at_the_cut_where_flower_picks_one():
    """Selected 0, 1, 2, 4 (and 10): median 2, beta = 3 nearest: 2, 1, then 0 and 4 tie at
    distance 2. Flower's argpartition keeps one of them; fedkit averages them into the last
    place: (2 + 1 + (0 + 4) / 2) / 3."""
    rows = [[0.0], [1.0], [2.0], [4.0], [10.0], [10.5], [-20.0]]
    results = [([np.array(r)], 1) for r in rows]
    u = torch.tensor(rows, dtype=torch.float64)
    theirs = flat(
        aggregate_bulyan(our_selection_first(results, u, 1), 1, aggregate_krum, to_keep=0)
    )
    assert theirs.item() in (pytest.approx(1.0), pytest.approx(7.0 / 3.0))
    assert agg.bulyan(u, f=1).item() == pytest.approx(5.0 / 3.0)


def multikrum_replies(results) -> list[Message]:
    """One reply Message per client, as a SuperNode would send it (``arrays`` ArrayRecord,
    ``num-examples`` in a MetricRecord); metadata set directly, since no run is active."""
    return [
        Message(
            RecordDict(
                {
                    "arrays": ArrayRecord([np.asarray(x) for x in layers]),
                    "metrics": MetricRecord({"num-examples": k}),
                }
            ),
            metadata=Metadata(
                run_id=1,
                message_id=f"reply-{i}",
                src_node_id=i + 1,
                dst_node_id=0,
                reply_to_message_id=f"instruction-{i}",
                group_id="1",
                created_at=0.0,
                ttl=3600.0,
                message_type="train",
            ),
        )
        for i, (layers, k) in enumerate(results)
    ]


@given(client_results(min_n=3, max_n=10), st.data())
def test_multi_krum_is_flowers_message_api_multikrum(problem, data):
    """``flwr.serverapp.strategy.MultiKrum.aggregate_train`` on Messages holding ArrayRecords
    (selection by Krum scores, then the num-examples-weighted mean of the kept replies)."""
    results, u, w = problem
    n = u.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    m = data.draw(st.integers(1, n))
    strategy = MultiKrum(num_malicious_nodes=f, num_nodes_to_select=m)
    arrays, _ = strategy.aggregate_train(1, multikrum_replies(results))
    theirs = arrays.to_numpy_ndarrays()
    if not _near_tie_at_cut(u, f, m):
        assert_agrees(agg.multi_krum(u, w, f=f, m=m), theirs, u)
