"""The result of :func:`fedkit.simulate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import save_file

from fedkit.core.flat import ParamSpec
from fedkit.run.records import write_json
from fedkit.strategy import ServerState


@attrs.define(eq=False)
class History:
    """Per-round metrics (``metrics``: list of dicts), the final flat parameters and their
    :class:`ParamSpec`, the final server state, the run's results record (``record``, see
    :mod:`fedkit.run.records`) and events such as server crashes."""

    metrics: list[dict[str, Any]]
    final_params: torch.Tensor
    spec: ParamSpec
    state: ServerState | None = None
    record: dict[str, Any] = attrs.field(factory=dict)
    events: list[dict[str, Any]] = attrs.field(factory=list)

    def series(self, name: str) -> list[Any]:
        """``name`` in every round that has it, e.g. ``history.series("test_accuracy")``."""
        return [m[name] for m in self.metrics if m.get(name) is not None]

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.record.get("final", {}))

    def save(self, path: str | Path, *, params: bool = False) -> Path:
        """Write the results record as JSON to ``path`` (atomically); with ``params`` also
        the final parameters to ``path`` with suffix ``.safetensors``."""
        out = write_json(path, self.record)
        if params:
            save_file(
                {"params": self.final_params.detach().cpu().contiguous()},
                str(out.with_suffix(".safetensors")),
                metadata={"spec": self.spec.to_json()},
            )
        return out

    @staticmethod
    def load_record(path: str | Path) -> dict[str, Any]:
        """Read a results record written by :meth:`save`."""
        return json.loads(Path(path).read_text())
