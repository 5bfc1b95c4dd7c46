"""Hostile and odd input, table-driven, across every endpoint: each case gets a clear 4xx naming the problem, or a
normal answer where the input is odd but valid; never a 5xx. The server is healthy after all of them."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from tests.app.conftest import Artifacts, running_server

JSON = {"content-type": "application/json"}
MB = 1_000_000


@dataclass
class Case:
    id: str
    method: str
    path: str
    body: Any = None  # a JSON-able value, or raw bytes sent as they are
    status: int | set[int] = 200
    says: str = ""  # a fragment the answer must contain
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))


def gen(**fields: Any) -> dict[str, Any]:
    return {"prompt": "ROMEO:", "max_new_tokens": 5, "seed": 1, **fields}


CASES = [
    # --- /sentiment: text
    Case("empty text", "POST", "/sentiment", {"text": ""}, 422, "at least 1 character"),
    Case("whitespace text", "POST", "/sentiment", {"text": " \t\n "}, 422, "non-whitespace"),
    Case("text over the limit", "POST", "/sentiment", {"text": "a" * 2001}, 413, "RNN_MAX_INPUT_CHARS"),
    Case("1 MB text", "POST", "/sentiment", {"text": "a" * MB}, 413, "RNN_MAX_BODY_BYTES"),
    Case("10 MB body", "POST", "/sentiment", b'{"text": "' + b"a" * (10 * MB) + b'"}', 413, "RNN_MAX_BODY_BYTES"),
    Case("invalid JSON", "POST", "/sentiment", b'{"text": "good"', 422, "JSON decode error"),
    Case("not an object", "POST", "/sentiment", ["good"], 422, "valid dictionary"),
    Case("text is a number", "POST", "/sentiment", {"text": 5}, 422, "valid string"),
    Case("text is null", "POST", "/sentiment", {"text": None}, 422, "valid string"),
    Case("missing text", "POST", "/sentiment", {}, 422, "Field required"),
    Case("extra field", "POST", "/sentiment", {"text": "good", "mode": "fast"}, 422, "Extra inputs"),
    Case("explain not a bool", "POST", "/sentiment", {"text": "good", "explain": "maybe"}, 422, "valid boolean"),
    Case("null byte", "POST", "/sentiment", {"text": "good\u0000film"}, 200, "label"),
    Case("lone surrogate", "POST", "/sentiment", b'{"text": "bad \\ud800 film"}', 422, "unicode"),
    Case("invalid UTF-8", "POST", "/sentiment", b'{"text": "bad \xff film"}', 400, "not valid UTF-8"),
    Case(
        "invalid UTF-8, no content type",
        "POST",
        "/sentiment",
        b'{"text": "bad \xff film"}',
        422,
        "valid dictionary",
        headers={},
    ),  # FastAPI reads such a body as bytes: its error echoes them back
    Case("emoji", "POST", "/sentiment", {"text": "what a film 🎬🔥😍"}, 200, "label"),
    Case("CJK", "POST", "/sentiment", {"text": "这部电影很好看"}, 200, "label"),
    Case("right-to-left", "POST", "/sentiment", {"text": "فيلم رائع \u202e evil"}, 200, "label"),
    Case("zero-width", "POST", "/sentiment", {"text": "gr\u200beat\u200d fi\ufeffl m"}, 200, "label"),
    Case("only punctuation", "POST", "/sentiment", {"text": "?!..."}, 200, "label"),
    Case(
        "wrong content type",
        "POST",
        "/sentiment",
        b"text=good",
        422,
        "valid dictionary",
        {"content-type": "application/x-www-form-urlencoded"},
    ),  # fmt: skip
    Case("GET on a POST route", "GET", "/sentiment", None, 405, "Method Not Allowed"),
    # --- /sentiment/batch
    Case("empty batch", "POST", "/sentiment/batch", {"texts": []}, 422, "at least 1 item"),
    Case("oversized batch", "POST", "/sentiment/batch", {"texts": ["good"] * 65}, 413, "RNN_MAX_BATCH_TEXTS"),
    Case("blank text in a batch", "POST", "/sentiment/batch", {"texts": ["good", " "]}, 422, "texts[1]"),
    Case("long text in a batch", "POST", "/sentiment/batch", {"texts": ["good", "a" * 2001]}, 413, "texts[1]"),
    Case("batch not a list", "POST", "/sentiment/batch", {"texts": "good"}, 422, "valid list"),
    Case("batch of numbers", "POST", "/sentiment/batch", {"texts": [1, 2]}, 422, "valid string"),
    Case("lone surrogate in a batch", "POST", "/sentiment/batch", b'{"texts": ["ok", "\\udfff"]}', 422, "surrogate"),
    # --- /generate
    Case("max_new_tokens 0", "POST", "/generate", gen(max_new_tokens=0), 422, "greater than or equal to 1"),
    Case("max_new_tokens negative", "POST", "/generate", gen(max_new_tokens=-3), 422, "greater than or equal"),
    Case("max_new_tokens huge", "POST", "/generate", gen(max_new_tokens=10**12), 422, "RNN_MAX_NEW_TOKENS"),
    Case("max_new_tokens fractional", "POST", "/generate", gen(max_new_tokens=2.5), 422, "valid integer"),
    Case("temperature negative", "POST", "/generate", gen(temperature=-1), 422, "greater than or equal to 0"),
    Case("temperature NaN", "POST", "/generate", b'{"prompt": "a", "temperature": NaN}', 422, '"temperature"'),
    Case("temperature infinite", "POST", "/generate", b'{"prompt": "a", "temperature": Infinity}', 422, "finite"),
    Case("temperature 0 is greedy", "POST", "/generate", gen(temperature=0), 200, "generated_text"),
    Case("top_p 0", "POST", "/generate", gen(top_p=0), 422, "greater than 0"),
    Case("top_p over 1", "POST", "/generate", gen(top_p=1.5), 422, "less than or equal to 1"),
    Case("top_k 0", "POST", "/generate", gen(top_k=0), 422, "greater than or equal to 1"),
    Case("top_k negative", "POST", "/generate", gen(top_k=-5), 422, "greater than or equal to 1"),
    Case("top_k larger than the vocabulary", "POST", "/generate", gen(top_k=10**6), 200, "generated_text"),
    Case("too many stop sequences", "POST", "/generate", gen(stop=list("abcde")), 422, "at most 4"),
    Case("empty stop sequence", "POST", "/generate", gen(stop=[""]), 422, "at least 1 character"),
    Case("seed negative", "POST", "/generate", gen(seed=-1), 422, "greater than or equal to 0"),
    Case("seed over 2**53 - 1", "POST", "/generate", gen(seed=2**53), 422, "less than or equal"),
    Case("repetition penalty 0", "POST", "/generate", gen(repetition_penalty=0), 422, "greater than or equal"),
    Case("prompt over the limit", "POST", "/generate", gen(prompt="a" * 2001), 413, "RNN_MAX_INPUT_CHARS"),
    Case("empty prompt", "POST", "/generate", gen(prompt=""), 200, "generated_text"),
    Case("unknown characters in the prompt", "POST", "/generate", gen(prompt="日本語 🎭"), 200, "generated_text"),
    Case("lone surrogate in the prompt", "POST", "/generate", b'{"prompt": "\\ud83d"}', 422, "surrogate"),
    Case("prompt is a list", "POST", "/generate", gen(prompt=["a"]), 422, "valid string"),
    Case("GET on /generate", "GET", "/generate", None, 405, "Method Not Allowed"),
    # --- /generate/stream
    Case("stream with temperature NaN", "POST", "/generate/stream", b'{"temperature": NaN}', 422, '"temperature"'),
    Case("stream with extra field", "POST", "/generate/stream", gen(stream=True), 422, "Extra inputs"),
    Case("stream, odd but valid", "POST", "/generate/stream", gen(prompt="\u200b\u202e"), 200, "data:"),
    # --- /tag and /tag/batch
    Case("tag: text and tokens", "POST", "/tag", {"text": "a", "tokens": ["a"]}, 422, "exactly one of"),
    Case("tag: neither text nor tokens", "POST", "/tag", {}, 422, "got neither"),
    Case("tag: only a model", "POST", "/tag", {"model": "tagger"}, 422, "exactly one of"),
    Case("tag: text is null", "POST", "/tag", {"text": None}, 422, "valid string"),
    Case("tag: text is a list", "POST", "/tag", {"text": ["a"]}, 422, "valid string"),
    Case("tag: tokens is a string", "POST", "/tag", {"tokens": "I saw it"}, 422, "valid list"),
    Case("tag: tokens of numbers", "POST", "/tag", {"tokens": ["I", 5]}, 422, "valid string"),
    Case("tag: an empty token", "POST", "/tag", {"tokens": ["I", ""]}, 422, "at least 1 character"),
    Case("tag: a blank token", "POST", "/tag", {"tokens": ["I", " \t"]}, 422, "tokens[1]"),
    Case("tag: text over the limit", "POST", "/tag", {"text": "a " * 1001}, 413, "RNN_MAX_INPUT_CHARS"),
    Case("tag: too many tokens", "POST", "/tag", {"tokens": ["a"] * 2001}, 413, "RNN_MAX_INPUT_CHARS"),
    Case("tag: lone surrogate", "POST", "/tag", b'{"text": "I \\ud800 it"}', 422, "surrogate"),
    Case("tag: extra field", "POST", "/tag", {"text": "a", "explain": True}, 422, "Extra inputs"),
    Case("tag: model name malformed", "POST", "/tag", {"text": "a", "model": "No Such"}, 422, "pattern"),
    Case("tag: no model of that name", "POST", "/tag", {"text": "a", "model": "nope"}, 404, "no model named"),
    Case("tag: a model of another kind", "POST", "/tag", {"text": "a", "model": "generator"}, 422, "generator model"),
    Case("tag: odd but valid text", "POST", "/tag", {"text": "日本語 🎭 \u200b?!"}, 200, "tokens"),
    Case("tag: null byte", "POST", "/tag", {"text": "I\u0000saw"}, 200, "tokens"),
    Case("tag batch: empty", "POST", "/tag/batch", {"texts": []}, 422, "at least 1 item"),
    Case(
        "tag batch: texts and tokens", "POST", "/tag/batch", {"texts": ["a"], "tokens": [["a"]]}, 422, "exactly one of"
    ),  # fmt: skip
    Case("tag batch: oversized", "POST", "/tag/batch", {"texts": ["a"] * 65}, 413, "RNN_MAX_BATCH_TEXTS"),
    Case("tag batch: a list not nested", "POST", "/tag/batch", {"tokens": ["a", "b"]}, 422, "valid list"),
    Case("tag batch: an empty token", "POST", "/tag/batch", {"tokens": [["a"], [""]]}, 422, "at least 1 character"),
    Case("tag batch: an empty list", "POST", "/tag/batch", {"tokens": [["a"], []]}, 200, "results"),
    Case("GET on /tag", "GET", "/tag", None, 405, "Method Not Allowed"),
    # --- the rest
    Case("POST on /health", "POST", "/health", {}, 405, "Method Not Allowed"),
    Case("unknown route", "GET", "/nope", None, 404, "Not Found"),
    Case("query string on /ready", "GET", "/ready?verbose=1", None, 200, "ready"),
]


def send(client: TestClient, case: Case) -> Any:
    if isinstance(case.body, bytes):
        return client.request(case.method, case.path, content=case.body, headers=case.headers)
    if case.body is None:
        return client.request(case.method, case.path)
    return client.request(case.method, case.path, content=json.dumps(case.body).encode(), headers=case.headers)


@pytest.fixture(scope="module")
def shared(artifacts: Artifacts) -> Iterator[TestClient]:
    from app.main import create_app
    from tests.app.conftest import clean_settings

    with TestClient(create_app(clean_settings(artifacts)), raise_server_exceptions=False) as client:
        yield client


def test_the_table_is_large_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(shared: TestClient, case: Case) -> None:
    r = send(shared, case)
    expected = case.status if isinstance(case.status, set) else {case.status}
    assert r.status_code in expected, r.text[:500]
    assert case.says in r.text, r.text[:500]
    assert r.status_code < 500


def test_healthy_after_the_table(shared: TestClient) -> None:
    for case in CASES:
        send(shared, case)
    assert shared.get("/ready").status_code == 200
    assert shared.post("/sentiment", json={"text": "a fine film"}).status_code == 200
    assert shared.post("/generate", json={"max_new_tokens": 3}).json()["generated_tokens"] == 3
    assert len(shared.post("/tag", json={"text": "I saw it"}).json()["tokens"]) == 3


def test_a_half_sent_request_does_not_hurt_the_server(artifacts: Artifacts, tmp_path: Path) -> None:
    """A slow client announces a body and sends half of it, then stalls and leaves; others are served meanwhile."""
    with running_server(artifacts, tmp_path) as server:
        address = urlsplit(server.url)
        host, port = address.hostname or "127.0.0.1", address.port or 80
        with socket.create_connection((host, port), timeout=5) as slow:
            slow.sendall(b"POST /sentiment HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"text\": \"half")  # fmt: skip
            time.sleep(0.5)
            import httpx

            assert httpx.post(f"{server.url}/sentiment", json={"text": "good"}, timeout=10).status_code == 200
        # the slow client left mid-body: the server is still healthy
        assert httpx.get(f"{server.url}/ready", timeout=10).status_code == 200
        assert server.proc.poll() is None
