"""Helpers added for the group-2 kernels: subset enumeration, coordinate sampling, Gram
centring, the f check."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from strategies import keys

import fedkit
from fedkit.aggregators._subsets import argmin_subset_weights, count_subsets, removal_masks
from fedkit.core.rows import check_f, gram, pairwise_sq_distances, sample_coordinates


@given(m=st.integers(1, 12), data=st.data())
def test_removal_masks_enumerate_every_subset_once(m, data):
    f = data.draw(st.integers(0, m))
    batch = data.draw(st.integers(1, 50))
    masks = torch.cat(list(removal_masks(m, f, batch)))
    assert masks.shape == (math.comb(m, f), m)
    assert (masks.sum(dim=1) == f).all()
    seen = {tuple(torch.nonzero(r).flatten().tolist()) for r in masks}
    assert seen == set(itertools.combinations(range(m), f))


def test_count_subsets_budget():
    assert count_subsets(10, 3, 120, "x") == 120
    with pytest.raises(ValueError, match=r"C\(10, 3\) = 120"):
        count_subsets(10, 3, 119, "x")


def test_argmin_subset_weights_averages_exact_ties_across_batches():
    removed = torch.tensor([[True, False, False], [False, True, False], [False, False, True]])
    w = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    batches = [(torch.tensor([2.0, 1.0]), removed[:2]), (torch.tensor([1.0]), removed[2:])]
    # tied subsets {0, 2} (weights 1, 2) and {0, 1}: coefficients (1/3, 0, 2/3) and (1/2, 1/2, 0)
    coeffs = argmin_subset_weights(iter(batches), w)
    torch.testing.assert_close(coeffs, torch.tensor([5 / 12, 1 / 4, 1 / 3], dtype=torch.float64))


@given(k=keys, d=st.integers(2, 5000), data=st.data())
def test_sample_coordinates_are_distinct_sorted_and_keyed(k, d, data):
    size = data.draw(st.integers(1, d - 1))
    coords = sample_coordinates(k, d, size, "test")
    assert coords.shape == (size,) and coords.dtype == torch.int64
    assert (coords[1:] > coords[:-1]).all() and coords[0] >= 0 and coords[-1] < d
    assert torch.equal(coords, sample_coordinates(k, d, size, "test"))


def test_sample_coordinates_is_uniform_enough_and_needs_a_key_only_to_sample():
    counts = torch.zeros(200)
    for s in range(2000):  # the O(size) path: 5 of 200
        counts[sample_coordinates(fedkit.key(s), 200, 5, "test")] += 1
    # each coordinate is expected 50 times; a 4-sigma band (sd ~ 7)
    assert counts.min() >= 22 and counts.max() <= 78
    assert sample_coordinates(None, 10, 10, "test") is None
    with pytest.raises(ValueError, match="test samples 3 of 10 coordinates: it needs a key"):
        sample_coordinates(None, 10, 3, "test")


@pytest.mark.parametrize("center", ["mean", "row", "none"])
def test_gram_centrings(center):
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5], [2.0, 2.0]], dtype=torch.float64)
    g = gram(x, center=center)
    if center == "none":
        torch.testing.assert_close(g, x @ x.T)
    dist = torch.cdist(x, x) ** 2
    sq = torch.diagonal(g)
    torch.testing.assert_close(sq[:, None] + sq[None, :] - 2 * g, dist)
    with pytest.raises(ValueError, match="center"):
        gram(x, center="median")


def test_row_centring_keeps_float32_precision_next_to_a_huge_row():
    base = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    x = torch.cat([base + 1000.0, torch.full((1, 3), 1e7)])  # float32
    dist = pairwise_sq_distances(x, center="row")
    torch.testing.assert_close(dist[:3, :3], torch.cdist(base, base).double() ** 2)


def test_check_f():
    check_f(2, 5, "k")
    with pytest.raises(ValueError, match="k: needs more than 2f active rows"):
        check_f(2, 4, "k")
    with pytest.raises(ValueError, match="non-negative int"):
        check_f(True, 5, "k")
