"""Idempotency-Key on POST /v1/jobs and POST /v1/datasets: a retry returns the first result."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from app.db.session import get_sessionmaker
from app.db.tables import IdempotencyKey
from app.services.idempotency import Claim, Once, once
from tests.conftest import blobs, to_csv


def test_a_retried_job_submission_returns_the_first_job(client, settings, blobs_csv):
    ds = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)}).json()["id"]
    body = {"dataset_id": ds, "algorithm": "kmeans", "params": {"n_clusters": 3}}
    first = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    again = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/jobs").json()["total"] == 1
    messages = list((settings.broker_dir / "queue").iterdir())
    assert len(messages) == 1  # the retry enqueued nothing
    other = client.post("/v1/jobs", json=body, headers={"Idempotency-Key": "k-2"})
    assert other.json()["id"] != first.json()["id"]


def test_a_key_reused_with_another_body_is_422(client, blobs_csv):
    ds = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)}).json()["id"]
    client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "kmeans"},
                headers={"Idempotency-Key": "same"})
    r = client.post("/v1/jobs", json={"dataset_id": ds, "algorithm": "pca"},
                    headers={"Idempotency-Key": "same"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "Idempotency-Key"


def test_a_retried_upload_returns_the_first_dataset(client, settings):
    content = to_csv(blobs(100))
    first = client.post("/v1/datasets", files={"file": ("b.csv", content)},
                        headers={"Idempotency-Key": "up-1"})
    again = client.post("/v1/datasets", files={"file": ("b.csv", content)},
                        headers={"Idempotency-Key": "up-1"})
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    assert client.get("/v1/datasets").json()["total"] == 1
    assert len(list((settings.blob_dir / "datasets").iterdir())) == 1


def test_an_empty_key_is_422(client, blobs_csv):
    r = client.post("/v1/datasets", files={"file": ("b.csv", blobs_csv)},
                    headers={"Idempotency-Key": "  "})
    assert r.status_code == 422


@dataclass(frozen=True)
class _Thing:
    id: str


def _claim(session, key: str | None, discarded: list[str], fingerprint="fp") -> Claim[_Thing]:
    return Claim(session=session, project="p", route="things", key=key, fingerprint=fingerprint,
                 load=_Thing, discard=lambda thing: discarded.append(thing.id))


def test_the_loser_of_a_race_on_a_key_answers_with_the_winner_and_discards_its_own(settings):
    """Two calls with one key that both found nothing: the second to commit keeps the first's."""
    make = get_sessionmaker(settings.resolved_database_url)
    discarded: list[str] = []
    with make() as a, make() as b:
        first, second = _claim(a, "k", discarded), _claim(b, "k", discarded)
        assert first.replay() is None and second.replay() is None
        won = first.settle(_Thing("t-1"))
        lost = second.settle(_Thing("t-2"))
    assert won == Once(_Thing("t-1"), created=True)
    assert lost == Once(_Thing("t-1"), created=False)
    assert discarded == ["t-2"]
    with make() as c:
        assert once(_claim(c, "k", discarded), lambda: _Thing("t-3")).resource == _Thing("t-1")


def test_a_recorded_fingerprint_can_come_from_the_resource(settings):
    """An upload's fingerprint is its sha256, known once created: a retry matches by key."""
    make = get_sessionmaker(settings.resolved_database_url)
    with make() as s:
        made = once(_claim(s, "u", [], fingerprint=lambda t: "sha-" + t.id), lambda: _Thing("d"))
        assert made.created
        assert s.get(IdempotencyKey, ("p", "things", "u")).fingerprint == "sha-d"
        again = once(_claim(s, "u", [], fingerprint=lambda t: "other"), lambda: _Thing("e"))
        assert again == Once(_Thing("d"), created=False)


def test_without_a_key_every_call_creates_and_a_failed_commit_discards(settings):
    make = get_sessionmaker(settings.resolved_database_url)
    discarded: list[str] = []
    with make() as s:
        assert once(_claim(s, None, discarded), lambda: _Thing("x")).created
        s.commit = _database_down  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            once(_claim(s, None, discarded), lambda: _Thing("y"))
    assert discarded == ["y"]


def _database_down() -> None:
    raise RuntimeError("the database is down")
