"""A model's path may be a directory of numbered versions (model/versions.py): the service serves the newest that
verifies, or a pinned one (`path@N`), skips (logs and counts) the others, and its cards say which one serves."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from model.tasks import TASKS
from model.versions import split_pin
from tests.app.conftest import Artifacts, metric

SettingsFor = Callable[..., Settings]


@pytest.fixture
def shelf(artifacts: Artifacts, tmp_path: Path) -> Path:
    """sentiment/1 and /3: the tiny classifier; /2 and /4: corrupt weights and a generator."""
    base = tmp_path / "sentiment"
    for n in (1, 2, 3):
        shutil.copytree(artifacts.sentiment, base / str(n))
    weights = base / "2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16])
    shutil.copytree(artifacts.generator, base / "4")
    return base


def test_the_newest_version_that_verifies_serves_and_the_others_are_counted(
    settings_for: SettingsFor, shelf: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings_for(sentiment_artifact=shelf))) as c:
        cards = {m["name"]: m for m in c.get("/models").json()}
        assert (cards["sentiment"]["version"], cards["sentiment"]["versions"]) == (3, [1, 2, 3, 4])
        assert (cards["generator"]["version"], cards["generator"]["versions"]) == (None, [])  # a plain artifact
        assert c.get("/models/sentiment").json()["version"] == 3
        assert c.post("/sentiment", json={"text": "a fine film"}).status_code == 200
        assert metric(c.get("/metrics").text, "rnn_model_versions_skipped_total", model="sentiment") == 2
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("version 2 skipped" in m and "model.safetensors" in m for m in skipped)
    assert any("version 4 skipped" in m and "'generation' model, not 'sentiment'" in m for m in skipped)


def test_a_pinned_version_serves_and_a_pin_that_cannot_serve_stops_start_up(
    settings_for: SettingsFor, shelf: Path, artifacts: Artifacts
) -> None:
    with TestClient(create_app(settings_for(sentiment_artifact=f"{shelf}@1"))) as c:
        assert c.get("/models/sentiment").json()["version"] == 1
    for pin, message in (
        (2, "version 2 may not serve"),
        (9, r"version 9 is not there \(versions on disk: 1, 2, 3, 4\)"),
    ):
        with pytest.raises(Exception, match=message):
            TestClient(create_app(settings_for(sentiment_artifact=f"{shelf}@{pin}"))).__enter__()
    with pytest.raises(Exception, match="is one artifact, not a directory of versions: it has no version 1"):
        TestClient(create_app(settings_for(sentiment_artifact=f"{artifacts.sentiment}@1"))).__enter__()


def test_a_named_model_may_be_a_pinned_directory_of_versions(settings_for: SettingsFor, shelf: Path) -> None:
    with TestClient(create_app(settings_for(models=f"older={shelf}@1,newest={shelf}"))) as c:
        cards = {m["name"]: m for m in c.get("/models").json()}
        assert (cards["older"]["version"], cards["older"]["task"]) == (1, "sentiment")
        # an RNN_MODELS entry is of whatever kind its artifact is: here the newest that verifies is a generator
        assert (cards["newest"]["version"], cards["newest"]["task"]) == (4, "generation")
        assert c.post("/sentiment", json={"text": "fine", "model": "older"}).status_code == 200


def test_an_empty_directory_of_versions_waits_for_its_first_version(
    settings_for: SettingsFor, tmp_path: Path, artifacts: Artifacts
) -> None:
    """make serve starts the service while the quick versions train: a model whose directory has no version yet
    answers 503 (naming it) and keeps /ready at 503, the others serve, and its first version is picked up."""
    base = tmp_path / "sentiment"
    base.mkdir()
    with TestClient(create_app(settings_for(sentiment_artifact=base, model_poll_seconds=0.02))) as c:
        r = c.post("/sentiment", json={"text": "a fine film"})
        assert r.status_code == 503 and "not loaded yet: no version in" in r.json()["detail"], r.text
        assert r.headers["retry-after"] == "5"
        ready = c.get("/ready")
        assert ready.status_code == 503 and "waiting for the first version of: sentiment" in ready.json()["reason"]
        assert c.post("/tag", json={"text": "I saw it"}).status_code == 200
        assert [m["name"] for m in c.get("/models").json()] == [kind for kind in TASKS if kind != "sentiment"]
        shutil.copytree(artifacts.sentiment, tmp_path / ".1.tmp")
        (tmp_path / ".1.tmp").rename(base / "1")  # as save_artifact publishes one
        deadline = time.monotonic() + 30
        while c.get("/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert c.post("/sentiment", json={"text": "a fine film"}).headers["x-model-version"] == "1"
        assert [m["name"] for m in c.get("/models").json()] == list(TASKS)
    (base / "1").rename(tmp_path / "gone")
    with pytest.raises(Exception, match="no version may serve"):  # versions there, none usable: an error
        (base / "2").mkdir()
        TestClient(create_app(settings_for(sentiment_artifact=base))).__enter__()


def test_a_pin_is_a_trailing_at_and_a_version_number() -> None:
    assert split_pin(Path("artifacts/sentiment@3")) == (Path("artifacts/sentiment"), 3)
    assert split_pin(Path("artifacts/sentiment")) == (Path("artifacts/sentiment"), None)
    assert split_pin(Path("odd@name/model")) == (Path("odd@name/model"), None)
    assert split_pin(Path("artifacts/s@0")) == (Path("artifacts/s@0"), None)  # versions start at 1
