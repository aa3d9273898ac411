"""A run's configuration as a fingerprint, and what differs between two of them.

A checkpoint stores the configuration of the run that wrote it and its fingerprint (SHA-256
of the canonical JSON); a resumed run with another fingerprint is refused, and the error
lists the settings that differ (:func:`differences`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from fedkit.run.records import jsonable


def canonical(config: Any) -> bytes:
    """``config`` as canonical JSON bytes (sorted keys, no spaces)."""
    return json.dumps(jsonable(config), sort_keys=True, separators=(",", ":")).encode()


def fingerprint(config: Any) -> str:
    """SHA-256 hex digest of :func:`canonical` ``(config)``."""
    return hashlib.sha256(canonical(config)).hexdigest()


def differences(old: Any, new: Any, path: str = "", limit: int = 12) -> list[str]:
    """Up to ``limit`` lines ``path: old -> new`` where the two config trees differ."""
    out: list[str] = []
    _diff(jsonable(old), jsonable(new), path, out, limit)
    return out


def _diff(a: Any, b: Any, path: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{sub}: (absent) -> {_short(b[k])}")
            elif k not in b:
                out.append(f"{sub}: {_short(a[k])} -> (absent)")
            else:
                _diff(a[k], b[k], sub, out, limit)
            if len(out) >= limit:
                return
        return
    if (
        isinstance(a, Sequence)
        and isinstance(b, Sequence)
        and not isinstance(a, str | bytes)
        and not isinstance(b, str | bytes)
        and len(a) == len(b)
    ):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out, limit)
        return
    if a != b:
        out.append(f"{path or '(root)'}: {_short(a)} -> {_short(b)}")


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."
