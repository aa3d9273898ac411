"""Clipped clustering: the merge loop against scikit-learn, clipping, tie rules, hand example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedkit.aggregators import clipped_clustering


def sklearn_majority(x: np.ndarray) -> set[int]:
    """Reference split: average-linkage clustering of 1 - cos with scikit-learn."""
    from sklearn.cluster import AgglomerativeClustering  # slow import: only when used

    norms = np.linalg.norm(x, axis=1)
    dist = 1.0 - (x @ x.T) / np.outer(norms, norms)
    np.fill_diagonal(dist, 0.0)
    labels = (
        AgglomerativeClustering(n_clusters=2, metric="precomputed", linkage="average")
        .fit(dist)
        .labels_
    )
    big = int(np.argmax(np.bincount(labels)))
    return set(np.nonzero(labels == big)[0].tolist())


@pytest.mark.parametrize("seed", range(15))
def test_selected_cluster_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 16)) | 1  # odd: no size tie
    x = rng.normal(size=(n, 6))
    flip = int(rng.integers(0, n // 2 + 1))
    x[:flip] = -x[:flip] * 3 + rng.normal(size=(flip, 6))
    chosen = sklearn_majority(x)
    norms = np.linalg.norm(x, axis=1)
    tau = np.median(norms)
    clipped = x * np.minimum(1.0, tau / norms)[:, None]
    expected = clipped[sorted(chosen)].mean(axis=0)
    np.testing.assert_allclose(clipped_clustering(torch.tensor(x)).numpy(), expected, atol=1e-12)


def test_hand_example():
    # Row 3 points the other way: the majority {0, 1, 2} is averaged. The median norm is
    # sqrt(1.01) = the norms of rows 1 and 2, so nothing in the majority is clipped.
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, -0.1], [-5.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(clipped_clustering(x), torch.tensor([1.0, 0.0], dtype=torch.float64))


def test_rows_are_clipped_to_the_median_norm_and_max_tau():
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [8.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    # clusters {0, 1, 2} and {3}; median norm 1.5: the majority becomes 1, 1.5, 1.5
    assert clipped_clustering(x)[0].item() == pytest.approx(4.0 / 3.0)
    assert clipped_clustering(x, max_clip_norm=0.5)[0].item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="max_clip_norm"):
        clipped_clustering(x, max_clip_norm=0.0)


def test_equal_sized_clusters_go_to_the_heavier_then_to_row_zero():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.1], [-1.0, 0.0], [-1.0, 0.1]], dtype=torch.float64)
    assert clipped_clustering(x)[0].item() > 0  # tie: the cluster of row 0
    heavy = torch.tensor([1.0, 1.0, 1.0, 2.0], dtype=torch.float64)
    assert clipped_clustering(x, heavy)[0].item() < 0
    # two rows: two singleton clusters, the first wins
    two = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    assert clipped_clustering(two)[0].item() == pytest.approx(1.0)
