"""Staging a Flower App from the installed packages (:mod:`fedkit.flower.local.staging`):
the pyproject Flower reads back holds the run config exactly, the packages' source files are
copied without caches, and a re-stage starts from an empty directory."""

from __future__ import annotations

import tomllib

import pytest

from fedkit.flower.local.staging import package_dir, stage_app

CONFIG = {
    "round-deadline": 120.0,
    "min-nodes": 0,
    "signed-replies": True,
    "overrides": 'task=digits out_dir="a b"',
    "path": "C:\\runs\\x",
}


def test_a_staged_app_reads_back_its_run_config_and_holds_the_package_sources(tmp_path):
    dest = tmp_path / "app"
    components = {"serverapp": "experiments.flower_app:server_app"}
    stage_app(dest, packages=["chaos"], components=components, config=CONFIG)
    meta = tomllib.loads((dest / "pyproject.toml").read_text())
    assert meta["tool"]["flwr"]["app"]["config"] == CONFIG
    assert meta["tool"]["flwr"]["app"]["components"] == components
    assert meta["project"]["name"] == "fedkit"
    source = package_dir("chaos")
    expected = {
        p.relative_to(source)
        for pattern in ("*.py", "*.yaml")
        for p in source.rglob(pattern)
        if "__pycache__" not in p.parts
    }
    staged = {p.relative_to(dest / "chaos") for p in (dest / "chaos").rglob("*") if p.is_file()}
    assert staged == expected and expected


def test_restaging_empties_the_directory_first(tmp_path):
    dest = tmp_path / "app"
    stage_app(dest, packages=["chaos"], components={}, config={})
    (dest / "stale.py").write_text("raise SystemExit")
    stage_app(dest, packages=[], components={}, config={"a": 1})
    assert sorted(p.name for p in dest.iterdir()) == ["pyproject.toml"]


def test_a_package_that_is_not_importable_is_named():
    with pytest.raises(ModuleNotFoundError, match="no_such_package"):
        package_dir("no_such_package")
