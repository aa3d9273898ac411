"""What an audit reports: the ε lower bound, its confidence and how it was obtained."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.frozen
class AuditResult:
    """An empirical lower bound ``epsilon`` at ``confidence`` (the bound exceeds the true ε
    with probability at most ``1 − confidence``) for the given ``delta``.

    ``method`` is ``"one-run"`` or ``"many-run"``; ``observed`` is what the auditor saw
    (``"released model"``: the server's output every round; ``"client message"``: each
    client's noised update, for local DP); ``details`` holds JSON-ready counts."""

    method: str
    epsilon: float
    confidence: float
    delta: float
    observed: str
    details: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return attrs.asdict(self)
