"""The dashboard at /ui: static HTML, CSS and one small script, shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent.parent / "ui" / "static"


def mount(app: FastAPI) -> None:
    """Serve the dashboard at /ui/ (and send /ui there)."""
    app.add_api_route("/ui", lambda: RedirectResponse("/ui/"), include_in_schema=False)
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
