"""API keys and projects: who may call, and that one project never sees another's data."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api import access
from app.config import Settings
from app.db.migrate import upgrade
from app.db.session import session_scope
from app.main import create_app
from app.runner import run_job
from app.services import keys
from tests.conftest import blobs, to_csv

ALPHA, BETA = "key-alpha-0123456789", "key-beta-0123456789"


def _keyed_settings(tmp_path: Path, **extra) -> Settings:
    s = Settings(data_dir=tmp_path / "data", api_keys=f"alpha:{ALPHA},beta:{BETA}", **extra)
    s.data_dir.mkdir()
    upgrade(s.resolved_database_url)
    return s


@pytest.fixture
def keyed(tmp_path: Path) -> Settings:
    return _keyed_settings(tmp_path)


@pytest.fixture
def api(keyed: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(keyed), raise_server_exceptions=False) as c:
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.parametrize("headers, why", [
    ({}, "missing"),
    ({"Authorization": "Bearer wrong-key"}, "unknown"),
    ({"Authorization": f"Basic {ALPHA}"}, "Bearer"),
    ({"Authorization": "Bearer "}, "Bearer"),
])
def test_without_a_valid_key_every_v1_route_is_401_problem_json(api, headers, why):
    for method, path in (("GET", "/v1/datasets"), ("GET", "/v1/algorithms"),
                         ("POST", "/v1/jobs"), ("GET", "/v1/models/mdl_x")):
        r = api.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.json()
        assert body["status"] == 401 and why in body["detail"]
        assert body["errors"][0]["field"] == "Authorization"


# tus discovery: a browser's CORS preflight is an OPTIONS that never carries credentials, so it
# answers without a key, and only with the protocol's capabilities (versions, extensions, size).
PUBLIC = {("OPTIONS", "/v1/uploads")}


def test_the_public_tus_discovery_tells_nothing_of_any_project(api, keyed):
    r = api.options("/v1/uploads")
    assert r.status_code == 204 and r.content == b""
    assert r.headers["tus-version"] == "1.0.0"
    assert not {"location", "upload-offset", "upload-length"} & set(r.headers)


def _routes(app):
    """The app's routes with included routers flattened (FastAPI >= 0.16x includes lazily)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:
        return list(app.routes)
    return list(iter_route_contexts(app.routes))


def test_every_v1_operation_of_the_route_table_refuses_a_missing_or_wrong_key(api):
    # Read off the app itself, so that a route added later, or one that checks the key in its
    # body rather than through a dependency (predict, embed), cannot slip past unguarded.
    operations = [(method, re.sub(r"{[^}]+}", "x_0", route.path)) for route in _routes(api.app)
                  if (route.path or "").startswith("/v1/") for method in route.methods or ()
                  if (method, route.path) not in PUBLIC]
    assert ("POST", "/v1/models/x_0/predict") in operations and len(operations) > 20
    for headers in ({}, {"Authorization": "Bearer wrong-key"}):
        for method, path in operations:
            r = api.request(method, path, headers=headers, content=b"{}")
            assert r.status_code == 401, (method, path, r.text)
            assert r.headers["content-type"] == "application/problem+json"


def test_the_contract_declares_the_bearer_key_on_every_v1_operation(api):
    paths = api.get("/openapi.json").json()["paths"]
    for path, operations in paths.items():
        for method, operation in operations.items():
            if path.startswith("/v1/") and (method.upper(), path) not in PUBLIC:
                assert operation.get("security") == [{"HTTPBearer": []}], (method, path)
                assert "401" in operation["responses"], (method, path)


def test_probes_docs_and_the_contract_stay_public(api):
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/ui/"):
        assert api.get(path).status_code == 200, path
    schemes = api.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_only_the_hash_and_a_prefix_of_a_key_are_stored(keyed):
    with session_scope(keyed.resolved_database_url) as s:
        row, key = keys.create(session=s, project="gamma")
    # Every byte SQLite holds: the database file and its write-ahead log.
    stored = b"".join(p.read_bytes() for p in keyed.data_dir.glob("pretrainer.db*"))
    assert key.encode() not in stored and keys.digest(key).encode() in stored
    assert row.prefix == key[:11] and len(key) > 40


def test_a_created_key_works_at_once_and_a_revoked_one_is_refused_once_its_belief_ends(
        tmp_path):
    settings = _keyed_settings(tmp_path, key_cache_seconds=0.5)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        with session_scope(settings.resolved_database_url) as s:
            row, key = keys.create(session=s, project="gamma")
        assert api.get("/v1/datasets", headers=bearer(key)).status_code == 200  # never cached
        with session_scope(settings.resolved_database_url) as s:
            keys.revoke(session=s, key_id=row.prefix)
        revoked_at = time.monotonic()
        # Believed for at most key_cache_seconds after its last lookup, then refused for good.
        while api.get("/v1/datasets", headers=bearer(key)).status_code == 200:
            assert time.monotonic() - revoked_at < 0.5 + 0.25
            time.sleep(0.05)
        r = api.get("/v1/datasets", headers=bearer(key))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_with_no_key_cache_a_revoked_key_is_refused_at_once(tmp_path):
    settings = _keyed_settings(tmp_path, key_cache_seconds=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        with session_scope(settings.resolved_database_url) as s:
            row, key = keys.create(session=s, project="gamma")
        assert api.get("/v1/datasets", headers=bearer(key)).status_code == 200
        with session_scope(settings.resolved_database_url) as s:
            keys.revoke(session=s, key_id=row.prefix)
        r = api.get("/v1/datasets", headers=bearer(key))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]


def test_a_believed_key_is_not_looked_up_again(api, keyed, monkeypatch):
    assert api.get("/v1/datasets", headers=bearer(ALPHA)).status_code == 200
    looked_up = []
    real = keys.resolve
    monkeypatch.setattr(keys, "resolve", lambda **kw: looked_up.append(1) or real(**kw))
    for _ in range(5):
        assert api.get("/v1/datasets", headers=bearer(ALPHA)).status_code == 200
    assert looked_up == []  # within key_cache_seconds (1 s by default)
    # An unknown key is never believed: each try asks the database and is refused.
    for _ in range(2):
        assert api.get("/v1/datasets", headers=bearer("not-a-key")).status_code == 401
    assert looked_up == [1, 1]


def test_revoked_seeded_key_stays_revoked_after_a_restart(api, keyed):
    # A key seeded from PRETRAINER_API_KEYS can be revoked too, and a restart does not revive it.
    with session_scope(keyed.resolved_database_url) as s:
        seeded = [k for k in keys.list_(session=s, project="beta")]
        keys.revoke(session=s, key_id=seeded[0].id)
    with TestClient(create_app(keyed)) as again:
        assert again.get("/v1/datasets", headers=bearer(BETA)).status_code == 401
        assert again.get("/v1/datasets", headers=bearer(ALPHA)).status_code == 200


def test_open_without_keys_on_loopback_only(settings, monkeypatch):
    monkeypatch.setattr(access, "OPEN_RECHECK_SECONDS", 0.0)
    with TestClient(create_app(settings)) as c:
        assert c.get("/v1/datasets").status_code == 200  # the embedded default: open
        with session_scope(settings.resolved_database_url) as s:
            _, key = keys.create(session=s, project="first")
        # Once a key exists the API is no longer open, and the key names its project.
        assert c.get("/v1/datasets").status_code == 401
        assert c.get("/v1/datasets", headers=bearer(key)).status_code == 200
    wide = settings.model_copy(update={"host": "0.0.0.0"})
    with session_scope(settings.resolved_database_url) as s:
        keys.revoke(session=s, key_id=keys.list_(session=s)[0].id)
    with TestClient(create_app(wide)) as c:  # started anyway (not through the CLI): still closed
        assert c.get("/v1/datasets").status_code == 401


def test_up_on_all_interfaces_without_keys_refuses_to_start_and_says_why(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "PRETRAINER_DATA_DIR": str(tmp_path / "d")}
    out = subprocess.run([sys.executable, "-m", "app.cli", "up", "--host", "0.0.0.0"],
                         env=env, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    assert "refusing to serve on 0.0.0.0 without API keys" in out.stderr
    assert "pretrainer keys create" in out.stderr


def test_keys_cli_create_list_revoke(tmp_path, monkeypatch, capsys):
    from app.cli import main
    from app.config import get_settings

    monkeypatch.setenv("PRETRAINER_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setattr("logging.basicConfig", lambda **_: None)

    def cli(*args: str) -> tuple[int, str, str]:
        code = main(["keys", *args])
        out = capsys.readouterr()
        return code, out.out, out.err

    try:
        code, key, note = cli("create", "--project", "acme", "--name", "ci")
        key = key.strip()
        assert code == 0 and re.fullmatch(r"pt_[A-Za-z0-9_-]{40,}", key) and "shown once" in note
        listed = cli("list")[1]
        assert key[:11] in listed and key not in listed and "acme" in listed and "active" in listed
        assert cli("revoke", key[:11])[0] == 0
        assert "revoked" in cli("list", "--project", "acme")[1]
        code, _, err = cli("create", "--project", "no spaces please")
        assert code == 2 and "project" in err
    finally:
        get_settings.cache_clear()


# ---- isolation: every endpoint, another project's id answers exactly as a missing id ----------


def _own(api: TestClient, settings: Settings, key: str) -> dict[str, str]:
    """A dataset, a finished job with its model, and a queued job, all of one project."""
    h = bearer(key)
    ds = api.post("/v1/datasets", files={"file": ("b.csv", to_csv(blobs(60)))}, headers=h).json()
    job = api.post("/v1/jobs", headers=h, json={"dataset_id": ds["id"], "algorithm": "kmeans",
                                                "params": {"n_clusters": 3}}).json()
    run_job(job["id"], settings=settings, worker="test")
    model = api.get(f"/v1/jobs/{job['id']}", headers=h).json()["model_id"]
    queued = api.post("/v1/jobs", headers=h,
                      json={"dataset_id": ds["id"], "algorithm": "pca"}).json()
    return {"ds": ds["id"], "job": job["id"], "model": model, "queued": queued["id"]}


# (method, path template, JSON body): every /v1 route that takes an id.
ENDPOINTS = [
    ("GET", "/v1/datasets/{ds}", None),
    ("GET", "/v1/datasets/{ds}/download", None),
    ("GET", "/v1/datasets/{ds}/export.csv", None),
    ("DELETE", "/v1/datasets/{ds}", None),
    ("POST", "/v1/jobs", {"dataset_id": "{ds}", "algorithm": "kmeans"}),
    ("POST", "/v1/jobs", {"dataset_id": "{own_ds}", "algorithm": "transfer", "target": "a",
                          "params": {"backbone": "model:{model}"}}),
    ("GET", "/v1/jobs/{job}", None),
    ("GET", "/v1/jobs/{job}/events", None),
    ("POST", "/v1/jobs/{queued}/cancel", None),
    ("GET", "/v1/jobs/{job}/plots/loss.png", None),
    ("GET", "/v1/models/{model}/plots/embedding.png", None),
    ("GET", "/v1/models/{model}/plots/confusion.png", None),
    ("GET", "/v1/models/{model}", None),
    ("POST", "/v1/models/{model}/predict", {"instances": [[0, 0, 0, 0]]}),
    ("POST", "/v1/models/{model}/embed", {"instances": [[0, 0, 0, 0]]}),
    ("POST", "/v1/models/{model}/generate", {"n": 1}),
    ("GET", "/v1/models/{model}/embedding", None),
    ("POST", "/v1/models/{model}/reproduce", None),
    ("DELETE", "/v1/models/{model}", None),
]


def _fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict]]:
    """One API with two projects' data for the whole matrix (nothing here may change it)."""
    settings = _keyed_settings(tmp_path_factory.mktemp("iso"))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c, {"alpha": _own(c, settings, ALPHA), "beta": _own(c, settings, BETA)}


@pytest.mark.parametrize("method, template, body", ENDPOINTS,
                         ids=[f"{m} {p} {(b or {}).get('algorithm', '')}".strip()
                              for m, p, b in ENDPOINTS])
def test_another_projects_id_is_answered_as_a_missing_one(shared, method, template, body):
    api, two_projects = shared
    alpha, own = two_projects["alpha"], {"own_ds": two_projects["beta"]["ds"]}
    missing = {k: v.split("_")[0] + "_" + "0" * 32 for k, v in alpha.items()} | own
    alpha = alpha | own
    foreign = api.request(method, template.format(**alpha), json=_fill(body, alpha),
                          headers=bearer(BETA))
    absent = api.request(method, template.format(**missing), json=_fill(body, missing),
                         headers=bearer(BETA))
    expected = 422 if template == "/v1/jobs" else 404  # an id in a body is a field error
    assert foreign.status_code == absent.status_code == expected, foreign.text
    unmask = foreign.text
    for name, value in alpha.items():
        unmask = unmask.replace(value, missing[name])
    assert "dataset_id" in unmask or "backbone" in unmask or "does not exist" in unmask
    assert unmask == absent.text  # not a byte that tells "exists elsewhere" from "never existed"
    # …and nothing of alpha's changed: its own key still sees it all, the queued job still queued.
    h = bearer(ALPHA)
    assert api.get(f"/v1/datasets/{alpha['ds']}", headers=h).status_code == 200
    assert api.get(f"/v1/models/{alpha['model']}", headers=h).status_code == 200
    assert api.get(f"/v1/jobs/{alpha['queued']}", headers=h).json()["status"] == "queued"
    assert api.get("/v1/jobs", headers=bearer(BETA)).json()["total"] == 2  # no job was created


def test_lists_show_only_the_callers_own(shared):
    api, two_projects = shared
    for project, key in (("alpha", ALPHA), ("beta", BETA)):
        own = two_projects[project]
        for resource, ids in (("datasets", {own["ds"]}), ("jobs", {own["job"], own["queued"]}),
                              ("models", {own["model"]})):
            page = api.get(f"/v1/{resource}", headers=bearer(key)).json()
            assert {item["id"] for item in page["items"]} == ids and page["total"] == len(ids)


def test_an_idempotency_key_is_per_project(api):
    content = to_csv(blobs(50))
    first = api.post("/v1/datasets", files={"file": ("b.csv", content)},
                     headers={**bearer(ALPHA), "Idempotency-Key": "same"}).json()
    other = api.post("/v1/datasets", files={"file": ("b.csv", content)},
                     headers={**bearer(BETA), "Idempotency-Key": "same"}).json()
    assert other["id"] != first["id"]
    assert api.get(f"/v1/datasets/{other['id']}", headers=bearer(BETA)).status_code == 200
