"""A rich progress bar over a run's rounds (on stderr): round, latest accuracy, ETA. rich is
imported only when a bar is shown (it is not a dependency of the core)."""

from __future__ import annotations

import sys
from typing import Any


class RoundProgress:
    """Context manager; ``enabled=None`` shows the bar only when stderr is a terminal."""

    def __init__(
        self, total: int, done: int = 0, enabled: bool | None = None, label: str = "rounds"
    ):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.total, self.done, self.label = total, done, label
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> RoundProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("acc {task.fields[acc]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(
                self.label, total=self.total, completed=self.done, acc="-"
            )
        return self

    def update(self, metrics: dict[str, Any]) -> None:
        if self._bar is None:
            return
        acc = metrics.get("test_accuracy")
        fields = {} if acc is None else {"acc": f"{acc:.4f}"}
        self._bar.update(self._task, completed=int(metrics["round"]), **fields)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None
