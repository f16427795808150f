"""Progress bars for uploads and training (rich when installed, plain lines otherwise)."""

from __future__ import annotations

import sys
import time
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
        self.console: Any = None  # a rich Console to draw on; stderr's when None
        self._bar: Any = None
        self._task: Any = None

    def _columns(self) -> list[Any]:
        return []

    def _bar_columns(self) -> list[Any]:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn

        return [TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                *self._columns()]

    def _start(self) -> Any:
        return self._bar.add_task(self.label, total=None)

    def __enter__(self) -> Any:
        try:
            from rich.console import Console
            from rich.progress import Progress
        except ImportError:
            return self
        self._bar = Progress(*self._bar_columns(), console=self.console or Console(stderr=True))
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


# A followed job's line fits 80 columns: status (9), bar (20), percent (4), "epoch 123/456"
# (13), "ETA 1h02m" (9) and the latest loss, cut to METRICS_WIDTH, with a space between each.
BAR_WIDTH = 20
METRICS_WIDTH = 18


class JobBar(_Bar):
    """Draws a followed job: status, progress, epoch N/total, an ETA and the latest loss."""

    def __init__(self, job_id: str, epochs: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(job_id)
        self.job_id = job_id
        self.epochs = epochs
        self.clock = clock
        self.progress = 0.0
        self.epoch = ""
        self.metrics = ""
        self._started: float | None = None  # when it was first seen running

    def __enter__(self) -> Any:
        print(f"following {self.job_id}", file=sys.stderr)
        return super().__enter__()

    def _bar_columns(self) -> list[Any]:
        from rich.progress import BarColumn, TaskProgressColumn, TextColumn

        return [TextColumn("{task.description}"), BarColumn(bar_width=BAR_WIDTH),
                TaskProgressColumn(), TextColumn("{task.fields[info]}")]

    def _start(self) -> Any:
        return self._bar.add_task("queued", total=1.0, info="")

    def __call__(self, event: Event) -> None:
        """Take one event of the job's stream."""
        data = event.data
        status = data.get("status") if event.event in ("status", "end") else None
        if status == "running" and self._started is None:
            self._started = self.clock()
        if "progress" in data and event.event != "epoch":
            self.progress = max(self.progress, float(data["progress"]))
        if event.event == "epoch":
            self.epoch = epoch_of(data, self.epochs)
            self.metrics = describe_metrics(data, METRICS_WIDTH)
        eta = "" if event.event == "end" else self.eta()
        if self._bar is None:
            if event.event in ("status", "epoch", "end"):
                shown = status or "running"
                print(line(shown, self.progress, self.epoch, eta, self.metrics), file=sys.stderr)
            return
        info = " ".join(p for p in (self.epoch, eta, self.metrics) if p)
        fields: dict[str, Any] = {"completed": self.progress, "info": info}
        if status is not None:
            fields["description"] = status
        self._bar.update(self._task, **fields)

    def eta(self) -> str:
        """'ETA 1m05s' from the time running and the progress so far; 'ETA --' before any."""
        if self._started is None or not 0 < self.progress < 1:
            return "ETA --" if self.progress < 1 else ""
        left = (self.clock() - self._started) * (1 - self.progress) / self.progress
        return f"ETA {duration(left)}"


def line(status: str, progress: float, epoch: str, eta: str, metrics: str) -> str:
    """The plain-text line of a followed job (no rich): at most 80 characters."""
    parts = [f"{status:<9}", f"{progress * 100:3.0f}%", epoch, eta, metrics]
    return " ".join(p for p in parts if p)[:80]


def duration(seconds: float) -> str:
    """'45s', '3m07s', '2h05m': short enough for the bar."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def epoch_of(data: dict[str, Any], total: int | None) -> str:
    """'epoch 3/20' (or 'epoch 3' when the total is not known)."""
    if "epoch" not in data:
        return ""
    return f"epoch {data['epoch']}/{total}" if total else f"epoch {data['epoch']}"


def describe_metrics(data: dict[str, Any], width: int | None = None) -> str:
    """'loss 0.1234 val_loss 0.2345' from an epoch entry; whole pairs only, within width."""
    text = ""
    for k in SHOWN_METRICS:
        if isinstance(data.get(k), (int, float)):
            more = f"{text} {k} {data[k]:.4g}".strip()
            if width is not None and len(more) > width:
                break
            text = more
    return text


def describe(data: dict[str, Any]) -> str:
    """'epoch 3 loss 0.1234 val_loss 0.2345' from an epoch entry (status for a status event)."""
    if "epoch" not in data:
        return str(data.get("status", ""))
    return " ".join(p for p in (f"epoch {data['epoch']}", describe_metrics(data)) if p)
