"""The Flower App directory a deployment submits, written from the installed packages.

``flwr run APP`` builds a FAB from ``APP/pyproject.toml`` and the files under ``APP``. A
deployment does not assume a source checkout: :func:`stage_app` writes a ``pyproject.toml``
(project, app components, run-config defaults) and copies the Python and YAML files of the
named packages from wherever they are imported from (a checkout, an editable install or a
wheel in site-packages). Staging also keeps ``flwr run`` fast: it walks only these files,
not a repository with its ``.venv`` (~60k files, a minute per submission).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import attrs

PATTERNS = ("*.py", "*.yaml")


def toml_value(value: Any) -> str:
    """A Python scalar as a TOML value (``flwr run --run-config`` files, pyproject)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    if ('"' in text or "\\" in text) and "'" not in text and "\n" not in text:
        return f"'{text}'"  # a TOML literal string: Flower's --node-config parser takes no escapes
    return json.dumps(text)


def package_dir(name: str) -> Path:
    """Where the top-level package ``name`` is imported from."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {name!r} is not importable from this Python")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "0.0.0"


def pyproject(components: Mapping[str, str], config: Mapping[str, Any]) -> str:
    """The Flower App's ``pyproject.toml``: ``components`` (``serverapp``/``clientapp`` →
    ``module:attr``) and the run config's keys with their defaults."""
    lines = [
        "[project]",
        'name = "fedkit"',
        f'version = "{_version("fedkit")}"',
        'description = "fedkit strategies as a Flower App"',
        'license = "Apache-2.0"',
        f'dependencies = ["flwr=={_version("flwr")}"]',
        "",
        "[tool.flwr.app]",
        'publisher = "fedkit"',
        "",
        "[tool.flwr.app.components]",
        *(f"{k} = {toml_value(v)}" for k, v in components.items()),
        "",
        "[tool.flwr.app.config]",
        *(f"{json.dumps(k)} = {toml_value(v)}" for k, v in config.items()),
    ]
    return "\n".join(lines) + "\n"


def stage_app(
    dest: str | Path,
    *,
    packages: Sequence[str],
    components: Mapping[str, str],
    config: Mapping[str, Any],
) -> Path:
    """Write the Flower App into ``dest`` (emptied first): :func:`pyproject` and the
    ``*.py`` / ``*.yaml`` files of ``packages``; returns ``dest``."""
    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    (dest / "pyproject.toml").write_text(pyproject(components, config))
    for name in packages:
        src = package_dir(name)
        for pattern in PATTERNS:
            for path in src.rglob(pattern):
                rel = path.relative_to(src)
                if "__pycache__" in rel.parts or not path.is_file():
                    continue
                target = dest / name / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return dest


@attrs.frozen
class AppSource:
    """What a deployment submits: the packages the FAB carries, the app's components and
    its run-config defaults."""

    packages: tuple[str, ...] = attrs.field(converter=tuple)
    components: Mapping[str, str]
    config: Mapping[str, Any]

    def stage(self, dest: str | Path) -> Path:
        return stage_app(
            dest, packages=self.packages, components=self.components, config=self.config
        )
