"""Gradient inversion: reconstruct a client's training batch from what the server sees
of it — one gradient (FedSGD) or a multi-step local update (FedAvg).

Attacks (pure functions of the model, the parameters sent, the observation and a key):
:func:`dlg` (L-BFGS on dummy inputs and soft labels), :func:`idlg` (labels read off the
last layer first, :func:`idlg_labels`), :func:`inverting_gradients` (cosine + total
variation, signed Adam, restarts). Victim-side helpers build observations
(:func:`client_gradient`, :func:`client_update`); :mod:`.metrics` scores a
:class:`Reconstruction` (MSE, PSNR and its distribution, SSIM, label accuracy after the best matching) and
:func:`save_grid` draws originals above reconstructions.
"""

from attacks.inversion._common import (
    Reconstruction,
    as_model_fn,
    client_gradient,
    client_update,
    gradient_estimate,
    last_weight_gradient,
)
from attacks.inversion.dlg import dlg
from attacks.inversion.grid import save_grid
from attacks.inversion.idlg import idlg, idlg_labels, infer_labels
from attacks.inversion.inverting_gradients import (
    cosine_distance,
    inverting_gradients,
    total_variation,
)
from attacks.inversion.metrics import (
    evaluate,
    label_accuracy,
    label_recovery,
    match,
    mse,
    psnr,
    psnr_distribution,
    ssim,
)

__all__ = [
    "Reconstruction",
    "as_model_fn",
    "client_gradient",
    "client_update",
    "cosine_distance",
    "dlg",
    "evaluate",
    "gradient_estimate",
    "idlg",
    "idlg_labels",
    "infer_labels",
    "inverting_gradients",
    "label_accuracy",
    "label_recovery",
    "last_weight_gradient",
    "match",
    "mse",
    "psnr",
    "psnr_distribution",
    "save_grid",
    "ssim",
    "total_variation",
]
