"""The model registry against `make run` (real API, real worker): register versions, move an
alias and see predictions follow it, the 409 that keeps an aliased model, from the Python client
(sync and async) and from the command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from pretrainer_client import AsyncClient, Client, PretrainerError
from tests.conftest import blobs, to_csv
from tests.integration.test_cli import cli

pytestmark = pytest.mark.integration
X = blobs(150)  # 4 columns a-d, like the README's demo/blobs.csv
NEW = X[:12] + 0.2


def sklearn_predict(k: int, rows: object = NEW) -> list[int]:
    """What the job's pipeline (standardize, k-means) predicts for rows, by scikit-learn."""
    model = make_pipeline(StandardScaler(), KMeans(n_clusters=k, random_state=0, n_init="auto"))
    return model.fit(X).predict(np.asarray(rows)).tolist()


@pytest.fixture(scope="module")
def trained(embedded, tmp_path_factory) -> tuple[str, str]:
    """Two k-means models (k=2, k=3) trained by the real worker."""
    path: Path = tmp_path_factory.mktemp("registry") / "x.csv"
    path.write_bytes(to_csv(X))
    with Client(embedded.base) as c:
        ds = c.upload(path)
        ids = [c.train("kmeans", ds, {"n_clusters": k, "random_state": 0}).model_id
               for k in (2, 3)]
    return ids[0], ids[1]


def test_alias_moves_and_409s_with_the_client(embedded, trained):
    first, second = trained
    with Client(embedded.base) as c:
        assert c.register("churn", first).version == 1
        assert c.register("churn", second).version == 2
        c.set_alias("churn", "production", 1)
        assert c.predict("churn@production", NEW).predictions.tolist() == sklearn_predict(2)
        c.set_alias("churn", "production", 2)  # serves the new version from the next call
        assert c.predict("churn@production", NEW).predictions.tolist() == sklearn_predict(3)
        assert c.model("churn@production").id == second
        with pytest.raises(PretrainerError) as refused:
            c.delete_model("churn@production")
        assert refused.value.status == 409 and "churn@production" in refused.value.detail
        entry = c.registry("churn")
    assert [(m.from_version, m.to_version) for m in entry.history] == [(None, 1), (1, 2)]
    assert entry.aliases == {"production": 2} and entry.latest_version == 2

    async def flow():
        async with AsyncClient(embedded.base) as c:
            await c.set_alias("churn", "production", 1)
            emb = await c.embed("churn@1", NEW)
            await c.delete_alias("churn", "production")
            return emb, await c.registry("churn"), (await c.registry_names()).items
    emb, after, names = asyncio.run(flow())
    with Client(embedded.base) as c:
        np.testing.assert_allclose(emb, c.embed(first, NEW))
    assert [(m.from_version, m.to_version) for m in after.history][-2:] == [(2, 1), (1, None)]
    assert "churn" in [n.name for n in names]


def test_register_alias_show_and_refused_delete_from_the_command_line(embedded, trained,
                                                                      tmp_path):
    first, _ = trained
    out = json.loads(cli(embedded, "models", "register", "fraud", first, "--json").stdout)
    assert out["version"] == 1 and out["model_id"] == first
    assert "fraud@production -> version 1" in cli(embedded, "models", "alias", "fraud",
                                                    "production", "1").stdout
    shown = json.loads(cli(embedded, "registry", "show", "fraud", "--json").stdout)
    assert shown["aliases"] == {"production": 1} and shown["history"][0]["to_version"] == 1
    assert "production" in cli(embedded, "registry", "show", "fraud").stdout
    queries = tmp_path / "q.csv"
    queries.write_bytes(to_csv(NEW))
    pred = json.loads(cli(embedded, "predict", "fraud@production", str(queries),
                          "--json").stdout)
    assert pred["predictions"] == sklearn_predict(2)
    refused = cli(embedded, "models", "delete", first, check=False)
    assert refused.returncode == 1 and "fraud@production (version 1)" in refused.stderr
    assert cli(embedded, "models", "unalias", "fraud", "production").returncode == 0
    missing = cli(embedded, "models", "show", "fraud@production", check=False)
    assert missing.returncode == 1 and "no alias 'production'" in missing.stderr


def test_the_readme_registry_walkthrough_runs_as_written(embedded, trained):
    """The README's Model registry block, against make run, with a name of its own."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n### Model registry\n", 1)[1]
    section = section.split("\n## ", 1)[0].split("\n### ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0].replace("churn", "readme")
    env = {"PATH": os.environ["PATH"], "PRETRAINER_URL": embedded.base, "MODEL": trained[0]}
    out = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], capture_output=True,
                         text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) if line.startswith("{") else line for line in out.stdout.split()]
    assert lines[0] == {"name": "readme", "version": 1, "model_id": trained[0]}
    assert lines[1] == {"alias": "production", "version": 1, "updated_by": "anonymous"}
    assert lines[2] == {"predictions": sklearn_predict(2, [[1.0, 4.2, -2.0, 3.3]])}
    assert lines[3] == {"alias": "production", "from_version": None, "to_version": 1,
                        "by": "anonymous"}
    assert lines[4] == "409"


def test_simultaneous_registrations_over_http_on_redis_and_postgresql(production, tmp_path):
    """`pretrainer up` on PostgreSQL: eight registrations of one name at once get versions 1-8,
    and the model an alias then points at cannot be deleted."""
    path = tmp_path / "x.csv"
    path.write_bytes(to_csv(X))
    with Client(production.base) as c:
        model_id = c.train("kmeans", c.upload(path), {"n_clusters": 2, "random_state": 0}).model_id

    def register(_: int) -> int:
        with Client(production.base) as c:
            return c.register("pg", model_id).version
    with ThreadPoolExecutor(8) as pool:
        versions = sorted(pool.map(register, range(8)))
    assert versions == list(range(1, 9))
    with Client(production.base) as c:
        c.set_alias("pg", "production", 8)
        assert c.predict("pg@production", NEW).predictions.tolist() == sklearn_predict(2)
        with pytest.raises(PretrainerError) as refused:
            c.delete_model(model_id)
        assert refused.value.status == 409 and "pg@production (version 8)" in refused.value.detail
