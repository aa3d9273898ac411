"""How well an inversion worked: per-example MSE, PSNR and SSIM against the originals,
label accuracy, and the best one-to-one matching of a reconstructed batch to the true one
(an attacker recovers a batch as a set, in no particular order). PSNR is reported as a
distribution (:func:`psnr_distribution`): an attack either recovers an example (tens of dB)
or does not (single digits), so a mean alone hides how often it works."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from attacks.inversion._common import Reconstruction


def _pair(x: torch.Tensor, ref: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    x, ref = torch.as_tensor(x), torch.as_tensor(ref)
    if x.shape != ref.shape or x.ndim < 2:
        raise ValueError(
            f"{name}: x and ref must share a shape [B, ...], got {tuple(x.shape)} and "
            f"{tuple(ref.shape)}"
        )
    return x.detach().to(torch.float64), ref.detach().to(torch.float64).to(x.device)


def _range(data_range: float) -> float:
    r = float(data_range)
    if not (r > 0 and math.isfinite(r)):
        raise ValueError(f"data_range must be a finite positive number, got {data_range!r}")
    return r


def mse(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each example: ``[B]`` (float64)."""
    x, ref = _pair(x, ref, "mse")
    return (x - ref).pow(2).flatten(1).mean(dim=1)


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio of each example in dB: ``10 log10(R² / MSE)`` with
    ``R = data_range``; ``inf`` for an exact copy."""
    r = _range(data_range)
    return 10.0 * torch.log10(r * r / mse(x, ref))


def psnr_distribution(
    values: torch.Tensor | Sequence[float], threshold: float = 30.0
) -> dict[str, float]:
    """PSNR values in dB (one per example, or per run) summarised: ``mean``, ``median``
    (the mean of the two middle values for an even count), ``above`` (the fraction strictly
    above ``threshold`` dB, the success rate) and ``n``. An exact copy's ``inf`` counts as
    above and makes the mean ``inf``; NaN is refused."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("psnr_distribution needs at least one PSNR value, got none")
    if bool(torch.isnan(v).any()):
        raise ValueError(f"psnr_distribution: values must not be NaN, got {v.tolist()}")
    if not (isinstance(threshold, int | float) and math.isfinite(threshold)):
        raise ValueError(f"threshold must be a finite number of dB, got {threshold!r}")
    ordered = torch.sort(v).values
    n = ordered.numel()
    middle = ordered[(n - 1) // 2 : n // 2 + 1]
    return {
        "mean": float(v.mean()),
        "median": float(middle.mean()) if bool(torch.isfinite(middle).all()) else float(middle[-1]),
        "above": float((v > threshold).double().mean()),
        "n": float(n),
    }


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(
    x: torch.Tensor,
    ref: torch.Tensor,
    data_range: float = 1.0,
    *,
    window_size: int = 5,
    sigma: float = 1.0,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity of each image ``[B, H, W]`` or ``[B, C, H, W]``: ``[B]``.

    Local means, variances and covariance under a Gaussian window (``window_size``,
    ``sigma``; weights sum to 1, population statistics), over every window that fits in
    the image ("valid" positions, as scikit-image does by cropping its filtered maps);
    ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` with
    ``C1 = (k1 R)²``, ``C2 = (k2 R)²``, averaged over positions and channels. The
    defaults (a 5x5 window, σ = 1) suit 8x8 digits, where the usual 11x11 window
    (σ = 1.5) does not fit; use those for 28x28 images and larger.

    Wang et al. 2004, Image Quality Assessment: From Error Visibility to Structural
    Similarity (IEEE TIP).
    """
    x, ref = _pair(x, ref, "ssim")
    if x.ndim == 3:
        x, ref = x.unsqueeze(1), ref.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"ssim needs images [B, H, W] or [B, C, H, W], got {tuple(x.shape)}")
    if not isinstance(window_size, int) or window_size < 1 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd positive int, got {window_size!r}")
    if window_size > min(x.shape[-2:]):
        raise ValueError(f"window_size {window_size} exceeds the image size {tuple(x.shape[-2:])}")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma!r}")
    r = _range(data_range)
    b, c, h, w = x.shape
    window = _gaussian_window(window_size, sigma, x.dtype).to(x.device)[None, None]

    def local(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t.reshape(b * c, 1, h, w), window)

    mu_x, mu_y = local(x), local(ref)
    var_x = local(x * x) - mu_x * mu_x
    var_y = local(ref * ref) - mu_y * mu_y
    cov = local(x * ref) - mu_x * mu_y
    c1, c2 = (k1 * r) ** 2, (k2 * r) ** 2
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).reshape(b, -1).mean(dim=1)


def match(reconstructions: torch.Tensor, originals: torch.Tensor) -> torch.Tensor:
    """The one-to-one pairing with the least total MSE (Hungarian algorithm):
    ``order[i]`` is the reconstruction paired with original ``i``, so
    ``reconstructions[order]`` lines up with ``originals``."""
    from scipy.optimize import linear_sum_assignment  # imported on use: slow

    rec, orig = _pair(reconstructions, originals, "match")
    n = rec.shape[0]
    cost = torch.cdist(orig.reshape(n, -1), rec.reshape(n, -1)).pow(2)
    _, cols = linear_sum_assignment(cost.cpu().numpy())
    return torch.as_tensor(cols, dtype=torch.int64)


def label_accuracy(
    predicted: torch.Tensor, true: torch.Tensor, order: torch.Tensor | None = None
) -> float:
    """Fraction of examples ``i`` with ``predicted[order[i]] == true[i]`` (``order`` from
    :func:`match`; identity when None)."""
    predicted, true = torch.as_tensor(predicted), torch.as_tensor(true)
    if predicted.ndim != 1 or predicted.shape != true.shape or true.numel() == 0:
        raise ValueError(
            f"label_accuracy needs two non-empty [B] label tensors, got "
            f"{tuple(predicted.shape)} and {tuple(true.shape)}"
        )
    if order is not None:
        predicted = predicted[torch.as_tensor(order, dtype=torch.int64)]
    return float((predicted.to(true.device) == true).double().mean())


def label_recovery(predicted: torch.Tensor, true: torch.Tensor, num_classes: int) -> float:
    """Order-free label accuracy: the overlap of the two label multisets over the batch
    size (how many of the batch's labels were recovered, whatever the pairing)."""
    predicted, true = torch.as_tensor(predicted), torch.as_tensor(true)
    if predicted.shape != true.shape or predicted.ndim != 1 or true.numel() == 0:
        raise ValueError("label_recovery needs two non-empty [B] label tensors of one shape")
    a = torch.bincount(predicted.long().cpu(), minlength=num_classes)
    b = torch.bincount(true.long().cpu(), minlength=num_classes)
    return float(torch.minimum(a, b).sum()) / true.numel()


def evaluate(
    reconstruction: Reconstruction,
    originals: torch.Tensor,
    labels: torch.Tensor,
    *,
    data_range: float = 1.0,
    clamp: tuple[float, float] | None = (0.0, 1.0),
    window_size: int = 5,
    sigma: float = 1.0,
    threshold: float = 30.0,
) -> dict[str, float]:
    """Mean MSE, PSNR, SSIM and label accuracy of a reconstructed batch after
    :func:`match`-ing it to the originals, plus the PSNR distribution over the batch's
    examples (:func:`psnr_distribution`): ``psnr_median`` and ``psnr_above``, the fraction
    of examples above ``threshold`` dB. Reconstructions are clamped to ``clamp`` (the valid
    pixel range) first. SSIM is NaN for non-image inputs (fewer than 2 spatial dims).
    """
    rec = reconstruction.inputs
    if rec.shape != originals.shape:
        raise ValueError(
            f"reconstruction {tuple(rec.shape)} and originals {tuple(originals.shape)} differ"
        )
    if clamp is not None:
        rec = rec.clamp(*clamp)
    order = match(rec, originals)
    rec = rec[order]
    image = originals.ndim >= 3 and min(originals.shape[-2:]) >= window_size
    spread = psnr_distribution(psnr(rec, originals, data_range), threshold)
    return {
        "mse": float(mse(rec, originals).mean()),
        "psnr": spread["mean"],
        "psnr_median": spread["median"],
        "psnr_above": spread["above"],
        "ssim": float(ssim(rec, originals, data_range, window_size=window_size, sigma=sigma).mean())
        if image
        else math.nan,
        "label_accuracy": label_accuracy(reconstruction.labels, labels, order),
    }
