"""The top level of fedkit (docs/api.md, "The top level"): classes at the top level, kernels in
``fedkit.kernels``, the lowercase aliases, key samplers and ``Stragglers`` deprecated."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import warnings

import pytest

import fedkit
import fedkit.kernels
from fedkit import aggregators, filters, optimizers
from fedkit._components import DEPRECATED_ALIASES
from fedkit.core import keys

# docs/api.md states this number; change both together.
TOP_LEVEL_NAMES = 67

SAMPLERS = ("bernoulli", "choice", "generator", "normal", "permutation", "randint", "uniform")

# every component class of REDUCERS / TRANSFORMS / SERVER_TRANSFORMS and its kernel
KERNEL_OF = {
    "Mean": "mean",
    "Median": "median",
    "TrimmedMean": "trimmed_mean",
    "MeaMed": "meamed",
    "GeometricMedian": "geometric_median",
    "Krum": "krum",
    "MultiKrum": "multi_krum",
    "Bulyan": "bulyan",
    "CenteredClipping": "centered_clipping",
    "MDA": "mda",
    "MoNNA": "monna",
    "CAF": "caf",
    "SMEA": "smea",
    "DnC": "dnc",
    "ClippedClustering": "clipped_clustering",
    "SignGuard": "sign_guard",
    "FLTrust": "fltrust",
    "FLAME": "flame",
    "RLR": "rlr",
    "Clip": "clip",
    "ARC": "arc",
    "NNM": "nnm",
    "Bucketing": "bucketing",
    "Sanitize": "sanitize",
    "KrumSelect": "krum_select",
    "FoolsGold": "foolsgold",
    "FLDetector": "fldetector_outliers",
    "ServerLR": "server_lr_step",
    "FedAvgM": "momentum_step",
    "FedAdam": "adam_step",
    "FedYogi": "yogi_step",
    "FedAdagrad": "adagrad_step",
}
COMPONENTS = (*fedkit.REDUCERS, *fedkit.TRANSFORMS, *fedkit.SERVER_TRANSFORMS)


def test_the_top_level_has_the_documented_size_and_no_deprecated_name():
    assert len(fedkit.__all__) == len(set(fedkit.__all__)) == TOP_LEVEL_NAMES
    deprecated = {*DEPRECATED_ALIASES, *SAMPLERS, "Stragglers"}
    assert not deprecated & set(fedkit.__all__)
    for name in ("Chain", "Key", "key", "split", "fold_in", "flatten", "unflatten", "spec_of"):
        assert name in fedkit.__all__
    for name in ("ParamSpec", "RoundContext", "ClientConfig", "History", "ServerState"):
        assert name in fedkit.__all__
    for name in ("Strategy", "PartialWork", "simulate", "REDUCERS", "TRANSFORMS", "kernels"):
        assert name in fedkit.__all__
    assert "SERVER_TRANSFORMS" in fedkit.__all__
    assert {cls.__name__ for cls in COMPONENTS} <= set(fedkit.__all__)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in fedkit.__all__:
            getattr(fedkit, name)


def test_star_import_is_quiet():
    code = (
        "import warnings; warnings.simplefilter('error');"
        "from fedkit import *; import fedkit.kernels, privacy.mechanisms, experiments.build"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", sorted(DEPRECATED_ALIASES))
def test_a_lowercase_alias_warns_and_gives_the_class(name):
    cls, kernel = DEPRECATED_ALIASES[name]
    expected = (
        f"fedkit.{name} is deprecated: use fedkit.{cls.__name__} (the component) or "
        f"fedkit.kernels.{kernel} (the kernel)"
    )
    with pytest.warns(DeprecationWarning, match=re.escape(expected)):
        assert getattr(fedkit, name) is cls
    assert getattr(fedkit, cls.__name__) is cls
    assert kernel in fedkit.kernels.__all__ and KERNEL_OF[cls.__name__] == kernel


def test_every_component_has_a_deprecated_lowercase_alias():
    assert {cls for cls, _ in DEPRECATED_ALIASES.values()} == set(COMPONENTS)


@pytest.mark.parametrize("name", SAMPLERS)
def test_a_sampler_warns_and_gives_the_function_of_fedkit_core_keys(name):
    expected = f"fedkit.{name} is deprecated: use fedkit.core.keys.{name}"
    with pytest.warns(DeprecationWarning, match=re.escape(expected)):
        assert getattr(fedkit, name) is getattr(keys, name)


def test_stragglers_is_a_deprecated_alias_of_partial_work():
    import fedkit.strategy

    with pytest.warns(
        DeprecationWarning, match=r"fedkit\.Stragglers is renamed fedkit\.PartialWork"
    ):
        assert fedkit.Stragglers is fedkit.PartialWork
    with pytest.warns(
        DeprecationWarning, match=r"fedkit\.Stragglers is renamed fedkit\.PartialWork"
    ):
        assert fedkit.strategy.Stragglers is fedkit.strategy.PartialWork
    import chaos

    assert chaos.Stragglers is not fedkit.PartialWork


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_name"):
        fedkit.no_such_name  # noqa: B018
    with pytest.raises(AttributeError):
        fedkit.strategy.no_such_name  # noqa: B018


def test_every_kernel_is_a_callable_of_the_three_packages():
    names = fedkit.kernels.__all__
    assert len(names) == len(set(names))
    homes = (aggregators, filters, optimizers)
    for name in names:
        fn = getattr(fedkit.kernels, name)
        assert callable(fn) and not inspect.isclass(fn), name
        assert name == name.lower()
        home = sys.modules[fn.__module__]
        assert home.__name__.split(".")[1] in ("aggregators", "filters", "optimizers"), name
        assert getattr(home, name) is fn
    # every public function the three packages export is in fedkit.kernels
    exported = {
        name
        for pkg in homes
        for name in getattr(pkg, "__all__", dir(pkg))
        if not name.startswith("_") and inspect.isfunction(getattr(pkg, name))
    }
    assert exported <= set(names)


@pytest.mark.parametrize("cls", COMPONENTS, ids=lambda c: c.__name__)
def test_every_component_has_its_kernel_in_fedkit_kernels(cls):
    name = KERNEL_OF[cls.__name__]
    assert name in fedkit.kernels.__all__
    fn = getattr(fedkit.kernels, name)
    own = getattr(cls, "kernel", None) or getattr(cls, "step_fn", None)
    if own is not None:
        assert own is fn
