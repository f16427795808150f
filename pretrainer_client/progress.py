"""Progress bars for uploads and training (rich when installed, plain lines otherwise)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any

from pretrainer_client.types import Event

ProgressFn = Callable[[int, int], None]
SHOWN_METRICS = ("loss", "val_loss", "d_loss", "g_loss")


class _Bar:
    """A rich progress bar with one task, drawn on stderr; nothing when rich is absent."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._bar: Any = None
        self._task: Any = None

    def _columns(self) -> list[Any]:
        return []

    def _start(self) -> Any:
        return self._bar.add_task(self.label, total=None)

    def __enter__(self) -> Any:
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
        except ImportError:
            return self
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                             *self._columns(), console=Console(stderr=True))
        self._bar.__enter__()
        self._task = self._start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.__exit__(kind, exc, tb)


class UploadBar(_Bar):
    """`update(sent, total)` draws the bytes sent so far."""

    def _columns(self) -> list[Any]:
        from rich.progress import DownloadColumn, TransferSpeedColumn

        return [DownloadColumn(), TransferSpeedColumn()]

    def _start(self) -> Any:
        return self._bar.add_task(f"upload {self.label}", total=None)

    def update(self, sent: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=sent, total=total)


class JobBar(_Bar):
    """Draws a followed job: status, progress, and the latest epoch's metrics."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id

    def _columns(self) -> list[Any]:
        from rich.progress import TextColumn

        return [TextColumn("{task.fields[metrics]}")]

    def _start(self) -> Any:
        return self._bar.add_task(f"{self.job_id} queued", total=1.0, metrics="")

    def __call__(self, event: Event) -> None:
        """Take one event of the job's stream."""
        data = event.data
        if self._bar is None:
            if event.event in ("status", "epoch"):
                print(f"{self.job_id} {event.event} {describe(data)}", file=sys.stderr)
            return
        if event.event == "status":
            self._bar.update(self._task, description=f"{self.job_id} {data['status']}",
                             completed=data.get("progress", 0))
        elif event.event == "progress":
            self._bar.update(self._task, completed=data["progress"])
        elif event.event == "epoch":
            self._bar.update(self._task, metrics=describe(data))
        elif event.event == "end":
            self._bar.update(self._task, description=f"{self.job_id} {data['status']}",
                             completed=data["progress"])



def describe(data: dict[str, Any]) -> str:
    """'epoch 3 loss 0.1234 val_loss 0.2345' from an epoch entry (status for a status event)."""
    if "epoch" not in data:
        return str(data.get("status", ""))
    shown = [f"{k} {data[k]:.4g}" for k in SHOWN_METRICS if isinstance(data.get(k), (int, float))]
    return " ".join([f"epoch {data['epoch']}", *shown])
