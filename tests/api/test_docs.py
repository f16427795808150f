"""/docs and /redoc render from this machine (no CDN), and / leads to the dashboard."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_the_service(client, page):
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    # Offline means no script, stylesheet or font from another host.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), html
    assert "fonts.googleapis" not in html and "cdn.jsdelivr" not in html
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    assert assets, html
    for url in assets:
        got = client.get(url)
        assert got.status_code == 200, url
        assert len(got.content) > 1000, url  # the bundle itself, not an error page
    assert "/openapi.json" in html


def test_swagger_bundle_is_swagger_ui_and_redoc_is_redoc(client):
    assert b"swagger" in client.get("/docs-assets/swagger-ui-bundle.js").content[:5000].lower()
    assert b"redoc" in client.get("/docs-assets/redoc.standalone.js").content[:5000].lower()


def test_root_redirects_to_the_dashboard(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/ui/"
    assert client.get("/").url.path == "/ui/"


def test_docs_routes_stay_out_of_the_contract(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)
