"""Operations: /health, /ready, /models, /metrics, the API key, CORS, and start-up refusing a bad artifact."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import auth
from app.config import Settings
from app.main import create_app
from model.tasks import TASKS
from tests.app.conftest import LABELS, TAGS, Artifacts, ClientFactory, metric

SettingsFor = Callable[..., Settings]
KEY = "test-key-123"


def test_health(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_ready_after_start_up(client: TestClient) -> None:
    r = client.get("/ready")
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_not_ready_without_start_up_and_after_shut_down(settings_for: SettingsFor) -> None:
    app = create_app(settings_for())
    idle = TestClient(app)  # not entered: the lifespan has not run, no model is loaded
    r = idle.get("/ready")
    assert r.status_code == 503
    assert r.json() == {"status": "not ready", "reason": "starting"}
    assert idle.get("/health").status_code == 200  # alive all the same
    r = idle.post("/sentiment", json={"text": "good"})
    assert r.status_code == 503 and "not loaded" in r.json()["detail"]
    r = idle.post("/generate", json={"max_new_tokens": 3})
    assert r.status_code == 503 and "not loaded" in r.json()["detail"]
    r = idle.post("/tag", json={"text": "I saw it"})
    assert r.status_code == 503 and "not loaded" in r.json()["detail"]
    with TestClient(app) as started:
        assert started.get("/ready").status_code == 200
    r = idle.get("/ready")
    assert r.status_code == 503 and r.json()["reason"] == "shutting down"


def test_index_and_openapi(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/sentiment", "/sentiment/batch", "/generate", "/generate/stream", "/tag", "/tag/batch",
            "/models"} <= set(paths)  # fmt: skip


def test_model_cards_match_the_artifacts(client: TestClient, artifacts: Artifacts) -> None:
    r = client.get("/models")
    assert r.status_code == 200
    cards = {card["name"]: card for card in r.json()}
    assert list(cards) == list(TASKS)
    for name in cards:
        path = getattr(artifacts, name)
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        card = cards[name]
        assert set(card) == {"name", "task", "labels", "architecture", "parameters", "metrics", "training_data",
                             "created_at", "sha256", "serving", "preset", "version", "versions", "in_training",
                             "policy"}  # fmt: skip
        assert card["task"] == config["task"]
        assert card["preset"] == config["training"]["preset"]
        # plain artifacts, not directories of versions
        assert (card["version"], card["versions"], card["policy"]) == (None, [], None)
        assert card["architecture"] == config["network"]
        assert card["parameters"] == config["parameters"] > 0
        assert card["training_data"] == config["data"]
        assert card["created_at"] == config["created_at"]
        assert card["sha256"] == hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
        assert card["metrics"] == {k: v for k, v in config["metrics"].items() if k != "samples"}
    assert cards["sentiment"]["task"] == "sentiment" and cards["sentiment"]["labels"] == LABELS
    assert cards["generator"]["task"] == "generation" and cards["generator"]["labels"] is None
    assert cards["tagger"]["task"] == "tagging" and cards["tagger"]["labels"] == TAGS
    assert cards["sentiment"]["architecture"]["cell"] == "lstm" and cards["sentiment"]["architecture"]["bidirectional"]
    assert cards["generator"]["architecture"]["cell"] == "gru"  # the default preset's cell


def test_metrics_count_requests_tokens_and_batches(make_client: ClientFactory) -> None:
    c = make_client()
    for text in ("good", "bad film", "the plot"):
        assert c.post("/sentiment", json={"text": text}).status_code == 200
    assert c.post("/sentiment", json={"text": ""}).status_code == 422
    assert c.post("/sentiment/batch", json={"texts": ["good", "bad"]}).status_code == 200
    tokens = [c.post("/generate", json={"max_new_tokens": n, "seed": 1}).json()["generated_tokens"] for n in (7, 5)]
    assert c.post("/generate/stream", json={"max_new_tokens": 4, "seed": 2}).status_code == 200
    assert c.post("/tag", json={"text": "I saw the saw ."}).status_code == 200
    assert c.post("/tag/batch", json={"tokens": [["I", "saw"], ["a", "dog"], ["it"]]}).status_code == 200
    r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert metric(text, "rnn_requests_total", route="/sentiment", status="200") == 3
    assert metric(text, "rnn_requests_total", route="/sentiment", status="422") == 1
    assert metric(text, "rnn_requests_total", route="/sentiment/batch", status="200") == 1
    assert metric(text, "rnn_requests_total", route="/generate", status="200") == 2
    assert metric(text, "rnn_requests_total", route="/generate/stream", status="200") == 1
    assert metric(text, "rnn_request_duration_seconds_count", route="/sentiment") == 4
    assert (metric(text, "rnn_request_duration_seconds_sum", route="/generate") or 0) > 0
    assert metric(text, "rnn_requests_total", route="/tag", status="200") == 1
    assert metric(text, "rnn_requests_total", route="/tag/batch", status="200") == 1
    assert metric(text, "rnn_batch_size_sum", model="sentiment") == 5  # 3 single texts and a batch of 2
    assert metric(text, "rnn_batch_size_sum", model="tagger") == 4  # a sentence and a batch of 3
    assert metric(text, "rnn_generated_tokens_total", model="generator") == sum(tokens) + 4
    assert metric(text, "rnn_queue_depth", model="sentiment") == metric(text, "rnn_queue_depth", model="tagger") == 0
    assert metric(text, "rnn_generation_active_streams", model="generator") == 0
    assert metric(text, "rnn_requests_in_flight") == 0
    c.get("/nowhere")
    assert metric(c.get("/metrics").text, "rnn_requests_total", route="unmatched", status="404") == 1


PROTECTED: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/sentiment", {"text": "good"}),
    ("POST", "/sentiment/batch", {"texts": ["good"]}),
    ("POST", "/generate", {"max_new_tokens": 3, "seed": 0}),
    ("POST", "/generate/stream", {"max_new_tokens": 3, "seed": 0}),
    ("POST", "/tag", {"text": "I saw it"}),
    ("POST", "/tag/batch", {"tokens": [["I", "saw", "it"]]}),
    ("GET", "/models", None),
    ("GET", "/metrics", None),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/", None),  # the demo page: with a key set, it is for key holders too
]


@pytest.fixture
def keyed(make_client: ClientFactory) -> TestClient:
    return make_client(api_key=KEY)


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer", f"Bearer {KEY}x"])
def test_protected_routes_refuse_a_missing_or_wrong_key(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    r = keyed.request(method, path, json=body, headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["detail"]


@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_protected_routes_accept_the_key(
    keyed: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    r = keyed.request(method, path, json=body, headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 200, r.text
    r = keyed.request(method, path, json=body, headers={"Authorization": f"bearer  {KEY} "})
    assert r.status_code == 200  # the scheme is case-insensitive, surrounding blanks are ignored


def test_health_and_ready_need_no_key(keyed: TestClient) -> None:
    assert keyed.get("/health").status_code == 200
    assert keyed.get("/ready").status_code == 200


def test_the_key_is_checked_before_the_body(keyed: TestClient) -> None:
    assert keyed.post("/sentiment", json={"nonsense": 1}).status_code == 401


def test_every_key_of_a_rotation_opens_the_routes(make_client: ClientFactory) -> None:
    c = make_client(api_key="old-key,new-key")
    for key in ("old-key", "new-key"):
        assert (
            c.post("/sentiment", json={"text": "good"}, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
    assert (
        c.post("/sentiment", json={"text": "good"}, headers={"Authorization": "Bearer old-key,new-key"}).status_code
        == 401
    )


def test_keys_from_files_rotate_in_a_running_app_and_are_never_logged(
    make_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(auth, "RECHECK_S", 0.0)
    keys, admin = tmp_path / "api_keys", tmp_path / "admin_api_keys"
    keys.write_text("old-key\n")
    admin.write_text("admin-key\n")
    with caplog.at_level(logging.DEBUG):
        c = make_client(api_key_file=keys, admin_api_key_file=admin)

        def status(key: str, path: str = "/sentiment") -> int:
            return c.post(path, json={"text": "good"}, headers={"Authorization": f"Bearer {key}"}).status_code

        assert (status("old-key"), status("new-key"), status("admin-key")) == (200, 401, 401)
        keys.write_text("old-key\nnew-key\n")
        os.utime(keys, ns=(1, 1))
        assert (status("old-key"), status("new-key")) == (200, 200)
        keys.write_text("new-key\n")
        assert (status("old-key"), status("new-key")) == (401, 200)
        assert status("new-key", "/admin/reload") == 401 and status("admin-key", "/admin/reload") == 200
    assert caplog.records and not any(k in caplog.text for k in ("old-key", "new-key", "admin-key"))


def test_no_key_set_means_open(client: TestClient) -> None:
    assert client.get("/models", headers={"Authorization": "Bearer anything"}).status_code == 200


PREFLIGHT = {"Origin": "https://a.example", "Access-Control-Request-Method": "POST",
             "Access-Control-Request-Headers": "content-type"}  # fmt: skip


def test_no_cors_headers_by_default(client: TestClient) -> None:
    r = client.post("/sentiment", json={"text": "good"}, headers={"Origin": "https://a.example"})
    assert r.status_code == 200
    assert not any(k.startswith("access-control-") for k in r.headers)
    r = client.options("/sentiment", headers=PREFLIGHT)
    assert not any(k.startswith("access-control-") for k in r.headers)


def test_cors_for_the_configured_origins(make_client: ClientFactory) -> None:
    c = make_client(cors_origins=["https://a.example", "https://b.example"], api_key=KEY)
    r = c.options("/sentiment", headers=PREFLIGHT)  # a preflight carries no key and must still pass
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://a.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    headers = {"Origin": "https://b.example", "Authorization": f"Bearer {KEY}"}
    r = c.post("/sentiment", json={"text": "good"}, headers=headers)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://b.example"
    r = c.post("/sentiment", json={"text": "good"}, headers={**headers, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers


# ---------------------------------------------------------------------------------------------- start-up
def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_a_corrupt_weights_file_stops_start_up(settings_for: SettingsFor, artifacts: Artifacts, tmp_path: Path) -> None:
    broken = _copy(artifacts.sentiment, tmp_path / "sentiment")
    weights = broken / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    app = create_app(settings_for(sentiment_artifact=broken))
    with pytest.raises(Exception, match=r"model\.safetensors is corrupt"):
        TestClient(app).__enter__()
    assert app.state.not_ready


def test_a_missing_artifact_stops_start_up(settings_for: SettingsFor, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-generator"
    app = create_app(settings_for(generator_artifact=missing))
    with pytest.raises(Exception, match="no-such-generator") as info:
        TestClient(app).__enter__()
    assert "does not exist" in str(info.value)


def test_a_missing_file_in_an_artifact_stops_start_up(
    settings_for: SettingsFor, artifacts: Artifacts, tmp_path: Path
) -> None:
    broken = _copy(artifacts.generator, tmp_path / "generator")
    (broken / "tokenizer.json").unlink()
    with pytest.raises(Exception, match=r"tokenizer\.json is missing"):
        TestClient(create_app(settings_for(generator_artifact=broken))).__enter__()


def test_artifacts_swapped_stop_start_up(settings_for: SettingsFor, artifacts: Artifacts) -> None:
    settings = settings_for(sentiment_artifact=artifacts.generator, generator_artifact=artifacts.sentiment)
    with pytest.raises(Exception, match="expected 'sentiment'"):
        TestClient(create_app(settings)).__enter__()
