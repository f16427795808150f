"""Nearest neighbours through `make run`: the index is built by the real worker process, then
asked through the Python client (sync and async), the command line and the dashboard."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.neighbors import NearestNeighbors

from pretrainer_client import AsyncClient, Client, PretrainerError
from tests.conftest import to_csv
from tests.integration.chromium import chromium_binary
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def points(tmp_path_factory) -> tuple[np.ndarray, Path]:
    """Blobs with an id column and a string label per blob: a, b, c, d, id, label."""
    x, y = make_blobs(n_samples=240, n_features=4, centers=3, random_state=2)
    lines = to_csv(x).decode().splitlines()
    names = np.array(["north", "south", "west"])[y]
    path = tmp_path_factory.mktemp("neighbors") / "points.csv"
    path.write_text("\n".join([lines[0] + ",id,label"] + [
        f"{row},p{i},{name}" for i, (row, name) in enumerate(zip(lines[1:], names))]) + "\n")
    return x, path


def test_an_index_built_by_the_worker_answers_the_exact_neighbours(embedded, points, tmp_path):
    x, path = points
    with Client(embedded.base) as c:
        ds = c.upload(path)
        model = c.train("pca", ds, {"n_components": 3}).model_id
        with pytest.raises(PretrainerError) as none_yet:
            c.neighbors(model, x[:1])
        assert none_yet.value.status == 409
        index = c.build_index(model, ds, params={"ef_search": 300}, wait=True)
        assert index.ready and index.n_rows == 240 and index.dim == 3 and index.metric == "l2"
        assert index.id_column == "id" and index.label_column == "label"
        queries = x[[3, 77, 150]] + 0.01
        found = c.neighbors(model, queries, k=5)
        ref = NearestNeighbors(n_neighbors=5).fit(c.embed(model, x))
        distances, rows = ref.kneighbors(c.embed(model, queries))
    assert [[n.row for n in hits] for hits in found] == rows.tolist()
    np.testing.assert_allclose([[n.distance for n in hits] for hits in found], distances,
                               rtol=1e-4, atol=1e-5)
    labels = dict(enumerate(path.read_text().splitlines()[1:]))
    for hits in found:
        for n in hits:
            assert labels[n.row].endswith(f",p{n.row},{n.label}")

    async def ask() -> list:
        async with AsyncClient(embedded.base) as ac:
            return await ac.neighbors(model, queries, k=5, index_id=index.id)
    assert asyncio.run(ask()) == found

    # The command line: the same neighbours, as JSON for scripts.
    queries_csv = tmp_path / "queries.csv"
    queries_csv.write_bytes(to_csv(queries))
    out = json.loads(cli(embedded, "neighbors", model, "--instances", str(queries_csv), "-k",
                         "5", "--json").stdout)
    assert [[n["row"] for n in hits] for hits in out["neighbors"]] == rows.tolist()
    built = json.loads(cli(embedded, "models", "index", model, ds.id, "--metric", "cosine",
                           "--follow", "--json").stdout)
    assert built["status"] == "succeeded" and built["metric"] == "cosine"
    listed = cli(embedded, "models", "indexes", model).stdout
    assert index.id in listed and built["id"] in listed


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed")
def test_the_model_page_builds_an_index_and_finds_neighbours(embedded, points, browser):
    _, path = points
    with Client(embedded.base) as c:
        model = c.train("pca", c.upload(path), {"n_components": 2}).model_id
    browser.goto(f"{embedded.base}/ui/#models/{model}")
    browser.wait_for("!!document.querySelector('#build-index')")
    browser.evaluate("document.querySelector('#build-index').click()")
    # The list polls the build until it ends.
    status = browser.wait_for("(() => { const r = document.querySelector('#indexes tbody tr');"
                              " const s = r && r.cells[1].textContent;"
                              " return ['succeeded', 'failed', 'cancelled'].includes(s) && s;"
                              " })()", timeout=120)
    assert status == "succeeded"
    browser.evaluate("document.querySelector('#find-neighbors').click()")
    rows = browser.wait_for("(() => { const r = [...document.querySelectorAll("
                            "'#neighbors-output tbody tr')]; return r.length ? r.map((tr) => "
                            "[...tr.cells].map((td) => td.textContent)) : null; })()",
                            timeout=60)
    assert [r[1] for r in rows] == ["1", "2", "3", "4", "5"]  # k=5 for the one example row
    assert all(r[4].startswith("p") and r[5] in ("north", "south", "west") for r in rows)
