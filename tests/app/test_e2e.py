"""End to end: the real server process (`python -m app`) on a free loopback port, called over HTTP, then stopped
with SIGTERM as a container runtime would."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import LABELS, THREE_LABELS, Artifacts, Server, running_server

pytestmark = pytest.mark.slow


@pytest.fixture
def server(artifacts: Artifacts, three_labels: Path, tmp_path: Path) -> Iterator[Server]:
    """The three default models, and a second classifier named "mine" by RNN_MODELS."""
    with running_server(artifacts, tmp_path, env={"RNN_MODELS": f"mine={three_labels}"}) as running:
        yield running


def test_the_server_serves_and_stops_cleanly_on_sigterm(server: Server) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        r = c.post("/sentiment", json={"text": "a good and lovely film", "explain": True})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] in LABELS and len(body["explanation"]) == 5

        r = c.post("/generate", json={"prompt": "All:", "max_new_tokens": 40, "seed": 7})
        assert r.status_code == 200, r.text
        generated = r.json()
        assert generated["generated_tokens"] == 40 and generated["seed"] == 7

        events = []
        with c.stream("POST", "/generate/stream", json={"prompt": "All:", "max_new_tokens": 40, "seed": 7}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line.removeprefix("data: ")))
        assert [e["token"]["index"] for e in events] == list(range(len(events)))
        assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"]
        assert events[-1]["generated_text"] == generated["generated_text"]  # one process, one answer per seed

        r = c.post("/tag", json={"text": "They saw a saw."})
        assert r.status_code == 200, r.text
        assert [(t["text"], t["tag"]) for t in r.json()["tokens"]] == [
            ("They", "PRON"), ("saw", "VERB"), ("a", "DET"), ("saw", "NOUN"), (".", "PUNCT")
        ]  # fmt: skip
        r = c.post("/tag/batch", json={"tokens": [["the", "dog", "saw", "it"], ["I", "saw"]]})
        assert [[t["tag"] for t in result["tokens"]] for result in r.json()["results"]] == [
            ["DET", "NOUN", "VERB", "PRON"], ["PRON", "VERB"]
        ]  # fmt: skip

        assert [card["name"] for card in c.get("/models").json()] == [
            "sentiment",
            "generator",
            "tagger",
            "translator",
            "mine",
        ]
        r = c.post("/sentiment", json={"text": "weary0 weary1 a film", "model": "mine"})
        assert r.status_code == 200 and sorted(r.json()["probabilities"]) == THREE_LABELS
        assert c.post("/sentiment", json={"text": "good", "model": "nope"}).status_code == 404

        assert c.post("/sentiment", json={"text": " "}).status_code == 422
        assert c.get("/health").json() == {"status": "ok"}

        # SIGTERM while a stream is in flight: the stream still finishes, then the process exits 0
        with c.stream("POST", "/generate/stream", json={"max_new_tokens": 1000, "seed": 3}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: ")
            server.proc.send_signal(signal.SIGTERM)
            rest = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert rest[-1]["details"] == {"finish_reason": "length", "generated_tokens": 1000, "seed": 3}
    try:
        code = server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the server did not stop within 10 s of SIGTERM:\n{server.output()}")
    assert code == 0, f"exit code {code} after SIGTERM:\n{server.output()}"
    assert "Application shutdown complete" in server.output()
