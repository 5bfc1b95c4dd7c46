"""app/fastpath.py: a model route's request answered by the fast layer gets what FastAPI's pipeline answers, byte
for byte, errors included; the API key, the body limit and the metrics hold on the fast way too."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app import fastpath
from app.config import Settings
from app.fastpath import FastRoutes
from app.main import create_app
from tests.app.conftest import ClientFactory, metric

GENERATE = {"prompt": "ROMEO:", "max_new_tokens": 12, "seed": 3}
REQUESTS: list[tuple[str, dict[str, Any]]] = [
    ("/sentiment", {"text": "a gorgeous , witty film ."}),
    ("/sentiment", {"text": "a gorgeous , witty film .", "explain": True}),
    ("/sentiment/batch", {"texts": ["a gorgeous film .", "dull and far too long ."]}),
    ("/tag", {"text": "I saw the saw ."}),
    ("/tag/batch", {"texts": ["I saw the saw .", "Dogs run ."]}),
    ("/translate", {"text": "Ein Hund läuft ."}),
    ("/translate/batch", {"texts": ["Ein Hund läuft .", "Eine Katze ."]}),
    ("/generate/stream", GENERATE),
    ("/generate_stream", {"inputs": "ROMEO:", "parameters": {"max_new_tokens": 12, "seed": 3}}),
    ("/", {"inputs": "ROMEO:", "parameters": {"max_new_tokens": 12, "seed": 3}}),
    ("/predict", {"inputs": ["a gorgeous film .", "dull ."]}),
    ("/v1/completions", {"model": "generator", "prompt": "ROMEO:", "max_tokens": 12, "seed": 3}),
]


def layer(client: TestClient) -> FastRoutes:
    """The app's FastRoutes layer (the middleware stack is built by the first request)."""
    app: Any = client.app
    node = app.middleware_stack
    while not isinstance(node, FastRoutes):
        node = node.app
    return node


@pytest.fixture
def fast_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths the fast layer answered itself (its replays of the normal way included)."""
    calls: list[str] = []
    answer = FastRoutes._answer

    async def counted(self: FastRoutes, fast: Any, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await answer(self, fast, scope, receive, send)

    monkeypatch.setattr(fastpath.FastRoutes, "_answer", counted)
    yield calls


def answer(client: TestClient, path: str, body: Any, **kwargs: Any) -> tuple[int, bytes, list[tuple[str, str]]]:
    """Status, body and headers (without the date) of one POST; OpenAI's completion id and creation time, which
    differ from one request to the next, are blanked."""
    sent = kwargs.pop("content", None)
    if sent is None:
        r = client.post(path, json=body, **kwargs)
    else:
        r = client.post(path, content=sent, **kwargs)
    content = re.sub(rb'"created":\d+', b'"created":0', re.sub(rb'"cmpl-[0-9a-f]+"', b'"cmpl"', r.content))
    return r.status_code, content, [(k, v) for k, v in r.headers.multi_items() if k != "date"]


def test_each_model_route_answers_on_the_fast_way_what_fastapi_answers(
    make_client: ClientFactory, fast_calls: list[str]
) -> None:
    client = make_client()
    for path, body in REQUESTS:
        layer(client).routes.pop(path, None)
        normal = answer(client, path, body)  # the normal way; the layer learns the route from it
        assert normal[0] == 200, (path, normal)
        assert layer(client).routes[path] is not None, path
        assert answer(client, path, body) == normal, path
    assert fast_calls == [path for path, _ in REQUESTS]


BAD: list[tuple[str, dict[str, Any]]] = [
    ("/sentiment", {"content": b"{not json"}),
    ("/sentiment", {"content": b'{"text": "\xff\xfe"}'}),
    ("/sentiment", {"content": b'{"text": "a film"}', "headers": {"content-type": "text/plain"}}),
    ("/sentiment", {"content": b"", "headers": {"content-type": "application/json"}}),
    ("/sentiment", {"content": b"[" * 100_000 + b"]" * 100_000, "headers": {"content-type": "application/json"}}),
    ("/sentiment", {"json": {"text": 3}}),
    ("/sentiment", {"json": {"text": "   "}}),
    ("/sentiment", {"json": {"text": "a film", "extra": 1}}),
    ("/sentiment", {"json": {"text": "a film", "model": "nope"}}),
    ("/sentiment", {"json": {"text": "a film", "model": "generator"}}),
    ("/sentiment", {"json": {"text": "x" * 5000}}),
    ("/sentiment/batch", {"json": {"texts": ["a"] * 100}}),
    ("/tag", {"json": {"text": "a", "tokens": ["a"]}}),
    ("/generate/stream", {"json": {"prompt": "ROMEO:", "max_new_tokens": 10**6}}),
    ("/v1/completions", {"json": {"model": "generator", "prompt": "A", "max_tokens": -1}}),
    ("/", {"json": {"inputs": "A", "parameters": {"temperature": -1.0}}}),
]


@pytest.mark.parametrize(("path", "request_args"), BAD, ids=[f"{p} {i}" for i, (p, _) in enumerate(BAD)])
def test_a_bad_request_gets_fastapis_own_error_on_a_learned_route(
    make_client: ClientFactory, path: str, request_args: dict[str, Any]
) -> None:
    client = make_client(max_input_chars=1000, max_batch_texts=64, max_new_tokens=100)
    body = request_args.pop("json", None)
    normal = answer(client, path, body, **request_args)  # before the layer knows the route: the normal way
    good = dict(REQUESTS)[path]
    assert client.post(path, json=good).status_code == 200  # the route is learned
    assert layer(client).routes[path] is not None
    assert answer(client, path, body, **request_args) == normal
    assert 400 <= normal[0] < 500


def test_the_api_key_is_checked_on_the_fast_way(make_client: ClientFactory, fast_calls: list[str]) -> None:
    client = make_client(api_key="secret-key")
    good = {"Authorization": "Bearer secret-key"}
    assert client.post("/sentiment", json={"text": "a film"}, headers=good).status_code == 200
    assert layer(client).routes["/sentiment"] is not None
    wrong = client.post("/sentiment", json={"text": "a film"}, headers={"Authorization": "Bearer wrong"})
    missing = client.post("/sentiment", json={"text": "a film"})
    assert wrong.status_code == missing.status_code == 401, (wrong.text, missing.text)
    assert "RNN_API_KEY" in missing.json()["detail"]
    assert client.post("/sentiment", json={"text": "a film"}, headers=good).status_code == 200
    assert fast_calls == ["/sentiment"] * 3


def test_a_body_over_the_limit_without_a_length_gets_413_on_the_fast_way(
    make_client: ClientFactory, fast_calls: list[str]
) -> None:
    client = make_client(max_body_bytes=1024)
    assert client.post("/sentiment", json={"text": "a film"}).status_code == 200

    def chunks() -> Iterator[bytes]:  # no content-length: the limits layer counts what arrives
        yield b'{"text": "'
        yield b"a" * 2000
        yield b'"}'

    r = client.post("/sentiment", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "RNN_MAX_BODY_BYTES" in r.json()["detail"]
    assert fast_calls == ["/sentiment"]
    assert client.get("/health").status_code == 200


def test_the_metrics_count_what_the_fast_way_answers(make_client: ClientFactory, fast_calls: list[str]) -> None:
    client = make_client()
    for _ in range(3):
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200
    assert client.post("/sentiment", json={"text": 3}).status_code == 422
    text = client.get("/metrics").text
    assert metric(text, "rnn_requests_total", route="/sentiment", status="200") == 3
    assert metric(text, "rnn_requests_total", route="/sentiment", status="422") == 1
    assert metric(text, "rnn_model_requests_total", model="sentiment") == 3
    assert fast_calls == ["/sentiment"] * 3  # the first request taught the layer the route


def test_an_unhandled_error_gets_the_normal_ways_500_on_the_fast_way(
    settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, fast_calls: list[str]
) -> None:
    with TestClient(create_app(settings_for()), raise_server_exceptions=False) as client:
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200  # the route is learned
        learned = layer(client).routes["/sentiment"]
        engine: Any = client.app.state.engines["sentiment"]  # type: ignore[attr-defined]

        async def broken(texts: list[str]) -> list[dict[str, Any]]:
            raise ZeroDivisionError("a bug, not the client's mistake")

        monkeypatch.setattr(engine, "classify", broken)
        fast = answer(client, "/sentiment", {"text": "a film"})
        layer(client).routes["/sentiment"] = None  # the normal way: Starlette's error layer answers
        normal = answer(client, "/sentiment", {"text": "a film"})
        layer(client).routes["/sentiment"] = learned
        assert fast == normal and fast[0] == 500, (fast, normal)
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 500
        text = client.get("/metrics").text
    assert metric(text, "rnn_requests_total", route="/sentiment", status="500") == 3
    assert fast_calls == ["/sentiment"] * 2


@pytest.mark.parametrize("opentelemetry", [False, True])
def test_fastapi_traces_requests_only_with_rnn_opentelemetry_and_a_traced_request_goes_the_normal_way(
    make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch, fast_calls: list[str], opentelemetry: bool
) -> None:
    sdk = pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans = InMemorySpanExporter()
    provider = sdk.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    looked: list[object] = []

    def configured() -> object:  # as if the process had set one up
        looked.append(provider)
        return provider

    monkeypatch.setattr(trace, "get_tracer_provider", configured)
    client = make_client(opentelemetry=opentelemetry)
    for _ in range(3):
        assert client.post("/sentiment", json={"text": "a film"}).status_code == 200
    named = [s.name for s in spans.get_finished_spans() if "/sentiment" in s.name]
    if opentelemetry:  # each request traced, FastAPI's way, the route's operation span included
        assert len(named) >= 3 and bool(looked), named
        assert fast_calls == []
    else:  # FastAPI never looked for a provider; the fast layer answered all but the first request
        assert named == [] and looked == []
        assert fast_calls == ["/sentiment"] * 2
