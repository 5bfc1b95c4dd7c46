"""Hot reload: POST /admin/reload (API key required) and SIGHUP swap in the artifacts at the configured paths with
no failed request, and a bad new artifact is refused while the old models keep serving."""

from __future__ import annotations

import gc
import shutil
import signal
import threading
import time
import weakref
from collections import Counter
from pathlib import Path

import httpx
import pytest
import torch

from model.artifacts import load_artifact, save_artifact
from model.tasks import TASKS
from tests.app.conftest import Artifacts, ClientFactory, running_server

KEY = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}


def republish(path: Path, nudge: float) -> str:
    """Write the artifact at `path` again, atomically, with slightly different weights; returns its new sha256."""
    old = load_artifact(path)
    state = {k: v + nudge if v.is_floating_point() else v for k, v in old.state_dict.items()}
    save_artifact(path, old.config, state, old.tokenizer)
    return load_artifact(path).sha256


KINDS = tuple(TASKS)


@pytest.fixture
def own_artifacts(artifacts: Artifacts, tmp_path: Path) -> Artifacts:
    """A private copy: these tests rewrite them."""
    copy = Artifacts(*(tmp_path / name for name in KINDS))
    for name in KINDS:
        shutil.copytree(getattr(artifacts, name), getattr(copy, name))
    return copy


def test_admin_routes_are_off_without_an_admin_key(make_client: ClientFactory) -> None:
    for c in (make_client(), make_client(api_key=KEY)):  # an inference key does not turn them on
        r = c.post("/admin/reload", headers=AUTH)
        assert r.status_code == 403 and "RNN_ADMIN_API_KEY" in r.json()["detail"]


def test_reload_needs_the_admin_key(make_client: ClientFactory) -> None:
    c = make_client(api_key="inference-key", admin_api_key=KEY)
    assert c.post("/admin/reload").status_code == 401
    assert c.post("/admin/reload", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = c.post("/admin/reload", headers={"Authorization": "Bearer inference-key"})  # an inference key cannot
    assert r.status_code == 401 and "RNN_ADMIN_API_KEY" in r.json()["detail"]
    assert c.post("/sentiment", json={"text": "good"}, headers=AUTH).status_code == 401  # nor the reverse
    assert c.post("/admin/reload", headers=AUTH).status_code == 200


def _own(own: Artifacts, **overrides: object) -> dict[str, object]:
    return {"admin_api_key": KEY, "sentiment_artifact": own.sentiment, "generator_artifact": own.generator,
            "tagger_artifact": own.tagger, **overrides}  # fmt: skip


def test_reload_swaps_in_every_new_artifact_and_refuses_a_bad_one(
    make_client: ClientFactory, own_artifacts: Artifacts, tmp_path: Path
) -> None:
    mine = tmp_path / "mine"
    shutil.copytree(own_artifacts.sentiment, mine)
    c = make_client(**_own(own_artifacts, models={"mine": mine}))
    before = {m["name"]: m["sha256"] for m in c.get("/models", headers=AUTH).json()}
    assert list(before) == [*TASKS, "mine"]
    new = {"sentiment": republish(own_artifacts.sentiment, 0.01), "tagger": republish(own_artifacts.tagger, 0.01),
           "mine": republish(mine, 0.02)}  # fmt: skip
    assert all(new[name] != before[name] for name in new)
    r = c.post("/admin/reload", headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["models"] == [
        {"name": "sentiment", "task": "sentiment", "sha256": new["sentiment"]},
        {"name": "generator", "task": "generation", "sha256": before["generator"]},
        {"name": "tagger", "task": "tagging", "sha256": new["tagger"]},
        {"name": "translator", "task": "translation", "sha256": before["translator"]},
        {"name": "mine", "task": "sentiment", "sha256": new["mine"]},
    ]
    assert {m["name"]: m["sha256"] for m in c.get("/models", headers=AUTH).json()} == {**before, **new}
    assert c.post("/tag", json={"text": "I saw it"}, headers=AUTH).status_code == 200
    assert c.post("/sentiment", json={"text": "fine", "model": "mine"}, headers=AUTH).status_code == 200
    # a truncated weights file, in any one of them: refused, naming the file; the reloaded models keep serving
    weights = mine / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    r = c.post("/admin/reload", headers=AUTH)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "model.safetensors" in detail and "'mine'" in detail and "previous models" in detail
    assert {m["name"]: m["sha256"] for m in c.get("/models", headers=AUTH).json()} == {**before, **new}
    assert c.post("/sentiment", json={"text": "still fine"}, headers=AUTH).status_code == 200
    assert c.post("/sentiment", json={"text": "still fine", "model": "mine"}, headers=AUTH).status_code == 200
    assert c.get("/ready").status_code == 200
    metrics = c.get("/metrics", headers=AUTH).text
    assert 'rnn_model_reloads_total{outcome="ok"} 1.0' in metrics
    assert 'rnn_model_reloads_total{outcome="refused"} 1.0' in metrics


def test_the_loaded_heap_is_frozen_and_a_reload_frees_the_previous_models(
    make_client: ClientFactory, own_artifacts: Artifacts
) -> None:
    """Start-up freezes the loaded heap (full collections then skip it); a reload collects the previous engines
    before it freezes the new ones, so a reload does not leave the old models behind, even in a reference cycle."""
    c = make_client(**_own(own_artifacts))
    assert gc.get_freeze_count() > 0
    engines = c.app.state.engines  # type: ignore[attr-defined]
    old = [weakref.ref(engine) for engine in engines.values()] + [weakref.ref(engines["generator"].step)]
    engines["generator"].itself = engines["generator"]  # a reference cycle: only the collector frees it
    del engines
    assert c.post("/admin/reload", headers=AUTH).status_code == 200
    assert all(ref() is None for ref in old)
    assert c.post("/sentiment", json={"text": "still fine"}, headers=AUTH).status_code == 200


def test_reloads_under_load_fail_no_request(own_artifacts: Artifacts, tmp_path: Path) -> None:
    """A real server under steady load from four clients: a reload by POST and another by SIGHUP, each onto a new
    artifact, while every request keeps succeeding."""
    env = {"RNN_ADMIN_API_KEY": KEY, "RNN_MAX_NEW_TOKENS": "5000"}
    with running_server(own_artifacts, tmp_path, log_level="warning", env=env) as server:
        statuses: Counter[int] = Counter()
        stop = threading.Event()

        def client(i: int) -> None:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=30) as c:
                while not stop.is_set():
                    if i == 3:
                        r = c.post("/tag", json={"text": f"the dog saw {i} saws"})
                    elif i % 2:
                        r = c.post("/sentiment", json={"text": f"a fine film {i}"})
                    else:
                        r = c.post("/generate", json={"max_new_tokens": 200, "seed": i})
                    statuses[r.status_code] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            sha = republish(own_artifacts.sentiment, 0.01)
            r = httpx.post(f"{server.url}/admin/reload", headers=AUTH, timeout=60)
            assert r.status_code == 200, r.text
            time.sleep(0.3)
            sha2 = republish(own_artifacts.generator, 0.01)
            server.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                cards = httpx.get(f"{server.url}/models", headers=AUTH, timeout=10).json()
                if {m["name"]: m["sha256"] for m in cards}["generator"] == sha2:
                    break
                time.sleep(0.1)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        cards = {m["name"]: m["sha256"] for m in httpx.get(f"{server.url}/models", headers=AUTH).json()}
        tagger = load_artifact(own_artifacts.tagger).sha256
        translator = load_artifact(own_artifacts.translator).sha256
        assert cards == {"sentiment": sha, "generator": sha2, "tagger": tagger, "translator": translator}, (
            server.output()
        )
        assert set(statuses) == {200}, (statuses, server.output())
        assert sum(statuses.values()) > 20


def test_nudged_weights_change_the_artifact(own_artifacts: Artifacts) -> None:
    before = load_artifact(own_artifacts.sentiment)
    republish(own_artifacts.sentiment, 0.5)
    after = load_artifact(own_artifacts.sentiment)
    assert after.sha256 != before.sha256
    name = next(k for k, v in before.state_dict.items() if v.is_floating_point())
    assert torch.allclose(after.state_dict[name], before.state_dict[name] + 0.5)
