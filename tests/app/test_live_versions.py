"""Live versions (app/versions.py): a new version written into a model's directory is swapped in while the service
serves, with no failed request; every answer names the version that gave it; a version that may not serve is
skipped and counted once; the admin API pins, unpins and loads; removing the newest directory rolls back."""

from __future__ import annotations

import asyncio
import gc
import json
import shutil
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.deps import ANSWERING
from app.main import create_app
from model.__main__ import main as train_main
from model.artifacts import load_artifact, save_artifact
from model.tasks import TASKS
from model.versions import RESERVED
from tests.app.conftest import Artifacts, metric, serving
from tests.helpers import tiny_train_argv

SettingsFor = Callable[..., Settings]
KEY = "s3cret-admin"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = "a fine and moving film"


def write_version(source: Path, out: Path, nudge: float = 0.0) -> str:
    """Version `out` of the artifact at `source`, its weights moved by `nudge` (a different model), written as
    the trainer writes one: atomically, so a poll never sees it half done. Returns its sha256."""
    old = load_artifact(source)
    state = {k: v + nudge if v.is_floating_point() else v for k, v in old.state_dict.items()}
    # the files the model needs beside its weights (a translator's target vocabulary); not the classifier's graph,
    # which the nudged weights no longer match (loading exports a new one)
    needed = {name: (source / name).read_bytes() for name in old.files if name == "target_tokenizer.json"}
    save_artifact(out, old.config, state, old.tokenizer, needed)
    return load_artifact(out).sha256


def wait_for(check: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def card(c: TestClient, name: str = "sentiment") -> dict[str, Any]:
    found: dict[str, Any] = c.get(f"/models/{name}", headers=AUTH).json()
    return found


@pytest.fixture
def shelf(artifacts: Artifacts, tmp_path: Path) -> Path:
    base = tmp_path / "sentiment"
    write_version(artifacts.sentiment, base / "1")
    return base


def test_a_new_version_is_picked_up_and_answers_name_it(settings_for: SettingsFor, shelf: Path,
                                                         artifacts: Artifacts) -> None:  # fmt: skip
    with TestClient(create_app(settings_for(sentiment_artifact=shelf, model_poll_seconds=0.02))) as c:
        first = c.post("/sentiment", json={"text": TEXT})
        assert first.headers["x-model-version"] == "1"
        assert "x-model-version" not in c.post("/tag", json={"text": "I saw it"}).headers  # a plain artifact
        sha = write_version(artifacts.sentiment, shelf / "2", nudge=0.05)
        wait_for(lambda: card(c)["version"] == 2)
        assert (card(c)["sha256"], card(c)["versions"], card(c)["policy"]) == (sha, [1, 2], "latest")
        (shelf / f"{RESERVED}3").touch()  # a trainer is writing version 3 (model/versions.py's new_version)
        assert (card(c)["in_training"], card(c)["preset"]) == ([3], None)  # the tiny artifacts have no preset
        second = c.post("/sentiment", json={"text": TEXT})
        assert second.headers["x-model-version"] == "2"
        assert second.json()["probabilities"] != first.json()["probabilities"]  # another model answers
        metrics = c.get("/metrics").text
        assert metric(metrics, "rnn_model_version", model="sentiment") == 2
        assert metric(metrics, "rnn_model_swaps_total", model="sentiment", outcome="ok") == 1
        assert metric(metrics, "rnn_model_requests_total", model="sentiment", version="1") == 1
        assert metric(metrics, "rnn_model_requests_total", model="sentiment", version="2") == 1
        assert metric(metrics, "rnn_model_requests_total", model="tagger", version="0") == 1


def test_a_version_that_may_not_serve_is_skipped_once_and_removing_the_newest_rolls_back(
    settings_for: SettingsFor, shelf: Path, artifacts: Artifacts, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(settings_for(sentiment_artifact=shelf, model_poll_seconds=0.02))) as c:
        write_version(artifacts.sentiment, shelf / "2", nudge=0.05)
        wait_for(lambda: card(c)["version"] == 2)
        # each put in place whole, as a trainer does: the poller never sees one half written (or not yet corrupt)
        staging = shelf.parent / "staging"
        write_version(artifacts.sentiment, staging / "3", nudge=0.1)
        weights = staging / "3" / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-16])  # corrupt: its manifest no longer verifies
        shutil.copytree(artifacts.generator, staging / "4")  # another task
        (staging / "3").rename(shelf / "3")
        (staging / "4").rename(shelf / "4")
        wait_for(lambda: metric(c.get("/metrics").text, "rnn_model_versions_skipped_total", model="sentiment") == 2)
        polls = [r for r in caplog.records if "now serving" in r.getMessage()]
        time.sleep(0.3)  # a dozen more polls: nothing counted twice, nothing swapped
        assert metric(c.get("/metrics").text, "rnn_model_versions_skipped_total", model="sentiment") == 2
        assert [r for r in caplog.records if "now serving" in r.getMessage()] == polls
        assert card(c)["version"] == 2 and c.post("/sentiment", json={"text": TEXT}).headers["x-model-version"] == "2"
        for n in (4, 3, 2):  # rollback: the newest directory removed
            shutil.rmtree(shelf / str(n))
        wait_for(lambda: card(c)["version"] == 1)
        assert c.post("/sentiment", json={"text": TEXT}).headers["x-model-version"] == "1"
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert any("version 3 skipped" in m and "model.safetensors" in m for m in skipped)
    assert any("version 4 skipped" in m and "'generation' model, not 'sentiment'" in m for m in skipped)


def test_a_swapped_out_engine_of_every_kind_is_freed_without_the_cycle_collector(
    settings_for: SettingsFor, artifacts: Artifacts, tmp_path: Path
) -> None:
    """A swap collects only the objects made since the last freeze (app/loading.py's settle_heap): the old engine
    was frozen at start-up, so only reference counting can free it, and a reference cycle would keep it, its
    model and its network for the life of the process."""
    shelves = {kind: tmp_path / kind for kind in TASKS}
    for kind, shelf in shelves.items():
        write_version(getattr(artifacts, kind), shelf / "1")
    paths = {f"{kind}_artifact": shelf for kind, shelf in shelves.items()}
    with TestClient(create_app(settings_for(**paths, model_poll_seconds=0.02))) as c:
        assert gc.get_freeze_count() > 0
        engines = c.app.state.engines  # type: ignore[attr-defined]
        old = {kind: [weakref.ref(e), weakref.ref(e.model), weakref.ref(e.model.network)]
               for kind, e in engines.items()}  # fmt: skip
        del engines
        c.post("/sentiment", json={"text": TEXT})
        c.post("/tag", json={"text": "I saw it"})
        c.post("/generate", json={"inputs": "First", "parameters": {"max_new_tokens": 5}})
        c.post("/translate", json={"text": "ein Hund läuft .", "beam": 2, "alignment": True})
        for kind, shelf in shelves.items():
            write_version(getattr(artifacts, kind), shelf / "2", nudge=0.05)
        wait_for(lambda: all(card(c, kind)["version"] == 2 for kind in shelves))
        wait_for(lambda: all(ref() is None for refs in old.values() for ref in refs), seconds=10)


def test_a_finished_requests_scope_lets_go_of_the_engine_that_answered(settings_for: SettingsFor) -> None:
    """uvicorn keeps a keep-alive connection's last scope until the connection's next request: a scope that still
    named its engine kept a swapped-out version resident for as long as a client's connection stayed idle."""
    app = create_app(settings_for())
    scope: dict[str, Any] = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/sentiment", "raw_path": b"/sentiment", "query_string": b"", "root_path": "",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": json.dumps({"text": TEXT}).encode(), "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        async with serving(app):
            await app(scope, receive, send)

    asyncio.run(main())
    assert sent[0]["status"] == 200 and json.loads(sent[1]["body"])["label"]
    assert ANSWERING not in scope


def test_the_admin_api_pins_unpins_and_loads(settings_for: SettingsFor, shelf: Path, artifacts: Artifacts) -> None:
    write_version(artifacts.sentiment, shelf / "2", nudge=0.05)
    (shelf / "3").mkdir()  # an incomplete version: no artifact files
    settings = settings_for(sentiment_artifact=shelf, model_poll_seconds=0, admin_api_key=KEY)  # no poller
    with TestClient(create_app(settings)) as c:
        assert card(c)["version"] == 2
        r = c.put("/admin/models/sentiment/pin", json={"version": 1}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert (r.json()["version"], r.json()["policy"]) == (1, "pinned 1")
        assert c.post("/sentiment", json={"text": TEXT}).headers["x-model-version"] == "1"
        for version, status, message in ((3, 422, "version 3 refused"), (9, 422, "version 9 is not there")):
            r = c.put("/admin/models/sentiment/pin", json={"version": version}, headers=AUTH)
            assert r.status_code == status and message.split()[-1] in r.json()["detail"], r.text
        assert (card(c)["version"], card(c)["policy"]) == (1, "pinned 1")  # unchanged by the refusals
        write_version(artifacts.sentiment, shelf / "4", nudge=0.1)
        r = c.post("/admin/models/sentiment/load", headers=AUTH)  # the policy (pinned) wants 1 still
        assert (r.status_code, r.json()["version"]) == (200, 1)
        r = c.delete("/admin/models/sentiment/pin", headers=AUTH)
        assert (r.status_code, r.json()["version"], r.json()["policy"]) == (200, 4, "latest")
        write_version(artifacts.sentiment, shelf / "5", nudge=0.2)
        assert card(c)["version"] == 4  # polling is off
        r = c.post("/admin/models/sentiment/load", headers=AUTH)
        assert (r.status_code, r.json()["version"], r.json()["versions"]) == (200, 5, [1, 2, 3, 4, 5])
        assert c.put("/admin/models/tagger/pin", json={"version": 1}, headers=AUTH).status_code == 409
        assert c.put("/admin/models/nope/pin", json={"version": 1}, headers=AUTH).status_code == 404
        assert c.put("/admin/models/sentiment/pin", json={"version": 0}, headers=AUTH).status_code == 422
        assert c.post("/admin/models/sentiment/load").status_code == 401


def test_a_pin_in_the_path_holds_until_the_admin_api_unpins_it(
    settings_for: SettingsFor, shelf: Path, artifacts: Artifacts
) -> None:
    write_version(artifacts.sentiment, shelf / "2", nudge=0.05)
    settings = settings_for(sentiment_artifact=f"{shelf}@1", model_poll_seconds=0.02, admin_api_key=KEY)
    with TestClient(create_app(settings)) as c:
        write_version(artifacts.sentiment, shelf / "3", nudge=0.1)
        time.sleep(0.2)
        assert (card(c)["version"], card(c)["policy"]) == (1, "pinned 1")
        assert c.delete("/admin/models/sentiment/pin", headers=AUTH).json()["version"] == 3
        c.post("/admin/reload", headers=AUTH)  # a reload keeps the admin API's policy
        assert (card(c)["version"], card(c)["policy"]) == (3, "latest")


async def _stream(c: httpx.AsyncClient, seed: int) -> tuple[str | None, str, float]:
    """One /generate/stream answer: the version its header names, its final text (every event well formed) and
    when it ended."""
    payload = {"prompt": "First", "max_new_tokens": 1000, "seed": seed}
    async with c.stream("POST", "/generate/stream", json=payload) as r:
        assert r.status_code == 200
        body = (await r.aread()).decode()
    blocks = [b for b in body.split("\n\n") if b]
    assert all(b.startswith("data: ") for b in blocks), body  # no error event
    text = json.loads(blocks[-1].removeprefix("data: "))["generated_text"]
    return r.headers.get("x-model-version"), text, time.monotonic()


def test_swaps_under_load_fail_no_request_and_streams_finish_on_their_version(
    settings_for: SettingsFor, artifacts: Artifacts, tmp_path: Path
) -> None:
    """Requests, batches and streams in flight while three sentiment versions and one generator version are
    swapped in by the poller: no request fails, the answers for one text are the same within a version and differ
    between versions (each answer came from exactly one), and streams begun on the old generator finish on it,
    after the swap, with the text that version alone gives."""
    sentiment, generator = tmp_path / "sentiment", tmp_path / "generator"
    write_version(artifacts.sentiment, sentiment / "1")
    write_version(artifacts.generator, generator / "1")
    app = create_app(settings_for(sentiment_artifact=sentiment, generator_artifact=generator, model_poll_seconds=0.01))
    answers: dict[str, list[Any]] = defaultdict(list)
    statuses: list[int] = []

    async def main() -> tuple[dict[int, str], list[tuple[str | None, str, float]], float, tuple[Any, ...]]:
        async with serving(app) as c:
            alone = {seed: (await _stream(c, seed))[1] for seed in (1, 2)}  # what version 1 alone writes
            done = asyncio.Event()

            async def client(i: int) -> None:
                while not done.is_set():
                    if i % 3 == 2:
                        r = await c.post("/sentiment/batch", json={"texts": [TEXT, "dull"]})
                        result = r.json()["results"][0] if r.status_code == 200 else None
                    else:
                        r = await c.post("/sentiment", json={"text": TEXT})
                        result = r.json() if r.status_code == 200 else None
                    statuses.append(r.status_code)
                    answers[r.headers.get("x-model-version", "none")].append(result and result["probabilities"])

            clients = [asyncio.create_task(client(i)) for i in range(6)]
            streams = [asyncio.create_task(_stream(c, seed)) for seed in (1, 2)]
            old = app.state.engines["generator"]
            while len(old.active) < 2:  # the streams have begun on generator version 1
                await asyncio.sleep(0.001)
            # Version 1 steps no further until version 2 serves, so that its streams are in flight across the swap
            # however fast this machine generates and however slowly it loads.
            released = asyncio.Event()
            pause = old._yield

            async def held() -> bool:
                await released.wait()
                return await pause()

            old._yield = held
            await asyncio.to_thread(write_version, artifacts.generator, generator / "2", 0.3)
            while app.state.engines["generator"].version != 2:
                await asyncio.sleep(0.001)
            swapped = time.monotonic()
            released.set()
            for n in (2, 3, 4):
                await asyncio.to_thread(write_version, artifacts.sentiment, sentiment / str(n), 0.05 * n)
                while app.state.engines["sentiment"].version != n:
                    await asyncio.sleep(0.01)
                await asyncio.sleep(0.05)
            done.set()
            await asyncio.gather(*clients)
            finished = await asyncio.gather(*streams)
            return alone, finished, swapped, await _stream(c, 1)

    alone, finished, swapped, after = asyncio.run(main())
    assert set(statuses) == {200} and len(statuses) > 50
    assert set(answers) == {"1", "2", "3", "4"}
    distinct = {version: {json.dumps(a, sort_keys=True) for a in got} for version, got in answers.items()}
    assert all(len(d) == 1 for d in distinct.values()), distinct  # one version, one answer
    assert len(set.union(*distinct.values())) == 4  # and each version its own
    assert [(v, text) for v, text, _ in finished] == [("1", alone[1]), ("1", alone[2])]
    assert all(ended > swapped for _, _, ended in finished)  # they were in flight across the swap
    assert after[0] == "2" and after[1] != alone[1]  # the new generator answers what follows


def test_the_trainer_hands_its_new_version_to_the_running_service(settings_for: SettingsFor, tmp_path: Path) -> None:
    """make serve's hand-off: `python -m model train … --new-version` writes the next version while the service
    runs, and the service serves it with no restart, its card naming the preset."""
    argv = [*tiny_train_argv("sentiment", tmp_path), "--new-version"]  # --out tmp_path/sentiment, quick preset
    assert train_main(argv) == 0
    with TestClient(create_app(settings_for(sentiment_artifact=tmp_path / "sentiment", model_poll_seconds=0.02))) as c:
        assert (card(c)["version"], card(c)["preset"]) == (1, "quick")
        assert train_main([*argv, "--seed", "1"]) == 0
        wait_for(lambda: card(c)["version"] == 2)
        assert card(c)["versions"] == [1, 2] and card(c)["in_training"] == []
        assert c.post("/sentiment", json={"text": TEXT}).headers["x-model-version"] == "2"
