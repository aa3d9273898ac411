"""Inversion metrics (MSE, PSNR, SSIM, matching, label accuracy) and the PNG grid."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from attacks.inversion import (
    Reconstruction,
    evaluate,
    label_accuracy,
    label_recovery,
    match,
    mse,
    psnr,
    psnr_distribution,
    save_grid,
    ssim,
)


@st.composite
def images(draw, max_b=4, min_side=5, max_side=10):
    b = draw(st.integers(1, max_b))
    h, w = draw(st.integers(min_side, max_side)), draw(st.integers(min_side, max_side))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    return torch.as_tensor(rng.uniform(0, 1, size=(b, 1, h, w)))


def test_psnr_hand_example_and_identity():
    ref = torch.zeros(2, 1, 4, 4)
    x = torch.full((2, 1, 4, 4), 0.1)
    assert torch.allclose(mse(x, ref), torch.full((2,), 0.01, dtype=torch.float64))
    assert torch.allclose(psnr(x, ref), torch.full((2,), 20.0, dtype=torch.float64))
    # a wider data range raises PSNR by 20 log10(range)
    assert torch.allclose(
        psnr(x, ref, data_range=10.0), torch.full((2,), 40.0, dtype=torch.float64)
    )
    assert torch.isinf(psnr(ref, ref)).all()
    assert torch.equal(mse(ref, ref), torch.zeros(2, dtype=torch.float64))


@given(x=images())
def test_ssim_of_an_image_with_itself_is_one(x):
    assert torch.allclose(ssim(x, x), torch.ones(x.shape[0], dtype=torch.float64), atol=1e-12)


@given(x=images(), seed=st.integers(0, 2**31 - 1))
def test_ssim_is_symmetric_bounded_and_drops_with_noise(x, seed):
    rng = np.random.default_rng(seed)
    noise = torch.as_tensor(rng.normal(0, 1, size=x.shape))
    small, large = x + 0.05 * noise, x + 0.5 * noise
    assert torch.allclose(ssim(small, x), ssim(x, small), atol=1e-12)
    assert (ssim(large, x) <= 1 + 1e-12).all()
    assert (ssim(large, x) < ssim(small, x)).all()


def test_ssim_of_constant_images_is_the_luminance_term():
    # no variance anywhere: SSIM = (2cd + C1) / (c² + d² + C1)
    c, d, c1 = 0.2, 0.7, 0.01**2
    full = dict(dtype=torch.float64)
    out = ssim(torch.full((1, 8, 8), c, **full), torch.full((1, 8, 8), d, **full))
    assert out.item() == pytest.approx((2 * c * d + c1) / (c * c + d * d + c1), rel=1e-9)


def _reference_ssim(x: np.ndarray, y: np.ndarray, sigma: float, radius: int) -> float:
    """SSIM the scikit-image way: Gaussian filtering over the whole image (scipy.ndimage,
    reflect mode), then the border of width ``radius`` cropped before averaging."""

    def filt(a):
        return ndimage.gaussian_filter(a, sigma, mode="reflect", truncate=radius / sigma)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[radius:-radius, radius:-radius].mean())


@given(seed=st.integers(0, 2**31 - 1), noise=st.floats(0.01, 1.0))
def test_ssim_matches_a_scipy_reference(seed, noise):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(16, 16))
    y = np.clip(x + noise * rng.normal(size=x.shape), 0, 1)
    for window, sigma in ((5, 1.0), (11, 1.5), (3, 1.5)):
        ours = ssim(
            torch.as_tensor(y)[None], torch.as_tensor(x)[None], window_size=window, sigma=sigma
        )
        ref = _reference_ssim(y, x, sigma, window // 2)
        assert ours.item() == pytest.approx(ref, abs=1e-9)


def test_ssim_matches_scikit_image_when_installed():
    metrics = pytest.importorskip("skimage.metrics")  # optional: not a dependency
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(28, 28))
    y = np.clip(x + 0.2 * rng.normal(size=x.shape), 0, 1)
    ref = metrics.structural_similarity(
        y, x, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0
    )
    ours = ssim(torch.as_tensor(y)[None], torch.as_tensor(x)[None], window_size=11, sigma=1.5)
    assert ours.item() == pytest.approx(ref, abs=1e-7)


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="share a shape"):
        mse(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="data_range"):
        psnr(torch.zeros(1, 4), torch.ones(1, 4), data_range=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        ssim(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4), window_size=5)
    with pytest.raises(ValueError, match="odd"):
        ssim(torch.zeros(1, 8, 8), torch.zeros(1, 8, 8), window_size=4)
    with pytest.raises(ValueError, match="images"):
        ssim(torch.zeros(1, 64), torch.zeros(1, 64))


@given(x=images(max_b=6), data=st.data())
def test_match_undoes_a_permutation(x, data):
    perm = torch.as_tensor(data.draw(st.permutations(range(x.shape[0]))), dtype=torch.int64)
    shuffled = x[perm]
    order = match(shuffled, x)
    assert torch.equal(shuffled[order], x)


def test_label_accuracy_and_recovery_hand_example():
    true = torch.tensor([3, 1, 4])
    predicted = torch.tensor([1, 4, 9])  # reconstruction j paired with original order[j]
    assert label_accuracy(predicted, true) == 0.0
    assert label_accuracy(predicted, true, torch.tensor([2, 0, 1])) == pytest.approx(2 / 3)
    assert label_recovery(predicted, true, 10) == pytest.approx(2 / 3)
    assert label_recovery(torch.tensor([1, 1]), torch.tensor([1, 2]), 3) == 0.5
    with pytest.raises(ValueError, match="label"):
        label_accuracy(torch.tensor([1]), torch.tensor([1, 2]))


def test_evaluate_scores_a_shuffled_perfect_reconstruction():
    rng = np.random.default_rng(1)
    x = torch.as_tensor(rng.uniform(0, 1, size=(3, 1, 8, 8)), dtype=torch.float32)
    y = torch.tensor([7, 2, 5])
    perm = torch.tensor([2, 0, 1])
    rec = Reconstruction(inputs=x[perm], labels=y[perm], history=torch.zeros(1), loss=0.0)
    out = evaluate(rec, x, y)
    assert out["mse"] == 0.0 and math.isinf(out["psnr"])
    assert out["ssim"] == pytest.approx(1.0, abs=1e-12)
    assert out["label_accuracy"] == 1.0
    before = rec.inputs.clone()
    evaluate(rec, x, y)
    assert torch.equal(rec.inputs, before)


def test_psnr_distribution_hand_examples():
    out = psnr_distribution([10.0, 40.0, 35.0, 12.0])
    assert out == {"mean": 24.25, "median": 23.5, "above": 0.5, "n": 4.0}
    assert psnr_distribution(torch.tensor([31.0, 5.0, 90.0]))["median"] == 31.0
    # an exact copy (inf) counts as a success; the median is robust to it, the mean is not
    out = psnr_distribution([math.inf, 50.0, 8.0])
    assert out["median"] == 50.0 and out["above"] == pytest.approx(2 / 3)
    assert math.isinf(out["mean"])
    assert psnr_distribution([20.0, 30.0], threshold=30.0)["above"] == 0.0  # strictly above
    with pytest.raises(ValueError, match="NaN"):
        psnr_distribution([1.0, math.nan])
    with pytest.raises(ValueError, match="at least one"):
        psnr_distribution([])
    with pytest.raises(ValueError, match="threshold"):
        psnr_distribution([1.0], threshold=math.inf)


@given(
    values=st.lists(st.floats(-20, 200, allow_nan=False), min_size=1, max_size=30),
    threshold=st.floats(0, 100),
)
def test_psnr_distribution_properties(values, threshold):
    out = psnr_distribution(values, threshold)
    v = sorted(values)
    assert v[0] <= out["median"] <= v[-1]
    # at least half the values on each side of the median
    assert sum(x <= out["median"] for x in v) >= len(v) / 2
    assert sum(x >= out["median"] for x in v) >= len(v) / 2
    assert out["above"] == sum(x > threshold for x in v) / len(v)
    assert out["mean"] == pytest.approx(sum(v) / len(v), abs=1e-9)
    assert out["n"] == len(v)


def test_evaluate_reports_the_psnr_distribution_over_the_batch():
    rng = np.random.default_rng(3)
    x = torch.as_tensor(rng.uniform(0.2, 0.8, size=(4, 1, 8, 8)))
    offsets = torch.tensor([0.001, 0.01, 0.1, 0.2], dtype=torch.float64)  # 60, 40, 20, 14 dB
    rec = Reconstruction(
        inputs=x + offsets[:, None, None, None],
        labels=torch.arange(4),
        history=torch.zeros(1),
        loss=0.0,
    )
    out = evaluate(rec, x, torch.arange(4))
    per_example = psnr(rec.inputs, x)
    assert out["psnr"] == pytest.approx(float(per_example.mean()))
    assert out["psnr_median"] == pytest.approx(float(per_example.sort().values[1:3].mean()))
    assert out["psnr_above"] == 0.5
    assert evaluate(rec, x, torch.arange(4), threshold=15.0)["psnr_above"] == 0.75


def test_save_grid_writes_a_png_with_one_row_per_tensor(tmp_path):
    from matplotlib.image import imread

    rng = np.random.default_rng(2)
    x = torch.as_tensor(rng.uniform(0, 1, size=(5, 1, 8, 8)))
    one = save_grid(x, x.flip(0), tmp_path / "one.png")
    three = save_grid(
        x, [x, 1 - x, x * 0.5], tmp_path / "sub" / "three.png", row_labels=list("abcd")
    )
    for path in (one, three):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    h1, w1 = imread(one).shape[:2]
    h3, w3 = imread(three).shape[:2]
    assert w1 == w3 and h3 > h1  # same columns, more rows
    with pytest.raises(ValueError, match="shape"):
        save_grid(x, x[:2], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="row_labels"):
        save_grid(x, x, tmp_path / "bad.png", row_labels=["only one"])
