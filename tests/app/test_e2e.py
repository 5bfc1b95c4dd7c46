"""End to end: the real server process (`python -m app`) on a free loopback port, called over HTTP, then stopped
with SIGTERM as a container runtime would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import LABELS, REPO, Artifacts

pytestmark = pytest.mark.slow
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@pytest.fixture
def server(artifacts: Artifacts, tmp_path: Path) -> Iterator[Server]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNN_")}
    env.update(
        PYTHONPATH=str(REPO),
        RNN_HOST=HOST,
        RNN_PORT=str(port),
        RNN_SENTIMENT_ARTIFACT=str(artifacts.sentiment),
        RNN_GENERATOR_ARTIFACT=str(artifacts.generator),
        RNN_TORCH_THREADS="1",
        RNN_LOG_LEVEL="info",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=tmp_path, env=env, stdout=sink, stderr=sink)
    server = Server(proc, f"http://{HOST}:{port}", log)
    try:
        _wait_ready(server, timeout=60)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"the server exited with {server.proc.returncode}:\n{server.output()}"
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/ready did not answer 200 within {timeout} s:\n{server.output()}")


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
