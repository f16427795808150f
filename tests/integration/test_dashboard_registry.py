"""The dashboard's registry in real headless Chromium against `make run`: register a model from
its page, point an alias at it, and see the versions, aliases and history the API records."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pretrainer_client import Client
from tests.conftest import blobs, to_csv
from tests.integration.chromium import Browser, chromium_binary

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(chromium_binary() is None,
                                 reason="chromium is not installed (apt-get install chromium)")]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    b = Browser(tmp_path)
    try:
        yield b
    finally:
        b.close()


def _rows(selector: str) -> str:
    """JS: the text of each cell of the rows under selector, or null while there are none."""
    return (f"(() => {{ const r = [...document.querySelectorAll({selector!r})]; return r.length "
            "? r.map((tr) => [...tr.cells].map((c) => c.textContent)) : null; })()")


def test_register_from_the_model_page_and_point_an_alias(embedded, browser, tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(to_csv(blobs(80)))
    with Client(embedded.base) as c:
        model_id = c.train("kmeans", c.upload(path), {"n_clusters": 2}).model_id
    browser.goto(f"{embedded.base}/ui/#models/{model_id}")
    browser.wait_for("document.querySelector('#register-name') !== null")
    browser.evaluate("document.querySelector('#register-name').value = 'dash'")
    browser.evaluate("document.querySelector('#register').click()")
    versions = browser.wait_for(_rows("#registry-versions tbody tr"))
    assert browser.evaluate("location.hash") == "#registry/dash"
    assert versions[0][:2] == ["1", model_id]
    browser.evaluate("document.querySelector('#alias-name').value = 'production'")
    browser.evaluate("document.querySelector('#alias-set').click()")
    history = browser.wait_for(_rows("#registry-history tbody tr"))
    assert history[0][:4] == ["production", "(new)", "1", "anonymous"]
    entry = embedded.http.get("/v1/registry/dash").json()
    assert entry["aliases"] == {"production": 1} and entry["history"][0]["to_version"] == 1
    browser.goto(f"{embedded.base}/ui/#registry")
    names = browser.wait_for(_rows("#registry-names tbody tr"))
    assert ["dash", "1", "production → 1"] == names[0][:3]
