"""/docs and /redoc from assets shipped in a package (they render offline); / leads to /ui/."""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

# Swagger UI's and ReDoc's bundles (with their licences) as the fastapi-offline package ships them.
ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"
PREFIX = "/docs-assets"


def _swagger(app: FastAPI) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                               title=f"{app.title} - Swagger UI",
                               swagger_js_url=f"{PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{PREFIX}/swagger-ui.css",
                               swagger_favicon_url=f"{PREFIX}/favicon.png")


def _redoc(app: FastAPI) -> HTMLResponse:
    return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json",
                          title=f"{app.title} - ReDoc",
                          redoc_js_url=f"{PREFIX}/redoc.standalone.js",
                          redoc_favicon_url=f"{PREFIX}/favicon.png", with_google_fonts=False)


def mount(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets from this machine, and send / to /ui/."""
    app.mount(PREFIX, StaticFiles(directory=ASSETS), name="docs-assets")
    app.add_api_route("/docs", lambda: _swagger(app), include_in_schema=False)
    app.add_api_route("/redoc", lambda: _redoc(app), include_in_schema=False)
    app.add_api_route("/", lambda: RedirectResponse("/ui/"), include_in_schema=False)
