"""Client DP-SGD: per-example clipping and Gaussian noise on each local step.

Two implementations give the same clipped gradient sum on the same batch:

* :mod:`privacy.dpsgd.functional` — ``torch.func`` per-sample gradients (``vmap(grad)``),
  pure, usable under an outer ``vmap`` over clients (batch as a Poisson mask);
* :mod:`privacy.dpsgd.opacus_path` — Opacus's ``GradSampleModule`` + ``DPOptimizer``.

:class:`DPSGD` is the setting a ``ClientConfig(dp_sgd=...)`` carries (it implements
:class:`fedkit.protocols.DPSGDSetting`); the simulation engines run it with
:func:`fedkit.client_dp.dp_local_step`, the clipped sums from the backend its ``backend``
field picks (:meth:`DPSGD.grad_backend`: :class:`fedkit.client_dp.TorchFuncBackend`, whose
clipping :mod:`privacy.dpsgd.functional` shares, or :class:`OpacusBackend`).
:func:`dpsgd_gradient` is one private gradient outside the engines (either backend).
"""

from privacy.dpsgd.config import BACKENDS, DPSGD
from privacy.dpsgd.functional import (
    clip_factors,
    clipped_grad_sum,
    clipped_grad_sum_of,
    model_loss,
    noisy_grad,
    per_sample_grads,
    per_sample_grads_of,
    per_sample_norms,
    privatize,
)
from privacy.dpsgd.opacus_backend import OpacusBackend, opacus_per_example_grads
from privacy.dpsgd.opacus_path import (
    check_opacus_compatible,
    opacus_clipped_grad_sum,
    opacus_noisy_grad,
)
from privacy.dpsgd.sampling import poisson_batch, poisson_mask
from privacy.dpsgd.step import dpsgd_gradient

__all__ = [
    "BACKENDS",
    "DPSGD",
    "OpacusBackend",
    "check_opacus_compatible",
    "clip_factors",
    "clipped_grad_sum",
    "clipped_grad_sum_of",
    "dpsgd_gradient",
    "model_loss",
    "noisy_grad",
    "opacus_clipped_grad_sum",
    "opacus_noisy_grad",
    "opacus_per_example_grads",
    "per_sample_grads",
    "per_sample_grads_of",
    "per_sample_norms",
    "poisson_batch",
    "poisson_mask",
    "privatize",
]
