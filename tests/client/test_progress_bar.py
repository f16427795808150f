"""The bar `follow(progress=True)` and `pretrainer train --follow` draw: epoch N/total, an ETA,
at most 80 columns, and a progress that never moves back."""

from __future__ import annotations

import io

from rich.console import Console

from pretrainer_client.progress import JobBar, duration, line
from pretrainer_client.types import Event

JOB = "job_0123456789abcdef0123456789abcdef"  # as long as a real id


def _draw(events: list[tuple[float, Event]], epochs: int | None) -> tuple[JobBar, str]:
    now = [0.0]
    bar = JobBar(JOB, epochs=epochs, clock=lambda: now[0])
    out = io.StringIO()
    bar.console = Console(file=out, width=80, force_terminal=False)
    with bar:
        for at, event in events:
            now[0] = at
            bar(event)
    return bar, out.getvalue()


def test_the_bar_shows_epoch_of_total_and_an_eta_within_80_columns():
    events = [(0.0, Event("status", {"status": "running", "progress": 0.0})),
              (30.0, Event("progress", {"progress": 0.25})),
              (30.0, Event("epoch", {"epoch": 5, "loss": 0.123456, "val_loss": 0.25,
                                     "d_loss": 1.5, "g_loss": 2.5}))]
    _, text = _draw(events, epochs=20)
    last = text.rstrip("\n").splitlines()[-1]
    assert "running" in last and "25%" in last
    assert "epoch 5/20" in last
    assert "ETA 1m30s" in last  # 30 s for a quarter: 90 s left
    assert "loss 0.1235" in last
    assert all(len(row) <= 80 for row in text.splitlines())


def test_progress_never_moves_back_and_the_eta_ends_with_the_job():
    events = [(0.0, Event("status", {"status": "running", "progress": 0.0})),
              (10.0, Event("progress", {"progress": 0.5})),
              (11.0, Event("progress", {"progress": 0.2})),  # a resumed try counts again
              (12.0, Event("epoch", {"epoch": 1000, "loss": 1e-9}))]
    bar, _ = _draw(events, epochs=1000)
    assert bar.progress == 0.5
    assert bar.eta() == "ETA 12s"
    bar(Event("end", {"status": "succeeded", "progress": 1.0}))
    assert bar.progress == 1.0 and bar.eta() == ""


def test_without_a_total_or_progress_the_bar_says_what_it_knows():
    _, text = _draw([(0.0, Event("status", {"status": "queued", "progress": 0.0})),
                       (1.0, Event("epoch", {"epoch": 3, "loss": 0.5}))], epochs=None)
    assert "epoch 3 " in text.splitlines()[-1] and "ETA --" in text.splitlines()[-1]


def test_the_plain_line_fits_80_columns_and_durations_are_short():
    assert len(line("cancelled", 0.5, "epoch 10000/10000", "ETA 99h59m",
                    "loss 0.1234 val_loss 0.5678")) <= 80
    assert [duration(s) for s in (5, 65, 3 * 3600 + 120)] == ["5s", "1m05s", "3h02m"]
