"""POST /generate and /generate/stream: seeds, stop sequences, the SSE format, limits and validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model.generator.predictor import GeneratorModel, load_generator
from model.generator.sampling import SamplingParams, generate
from tests.app.conftest import Artifacts, ClientFactory


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts) -> GeneratorModel:
    return load_generator(artifacts.generator)


def gen(client: TestClient, **payload: Any) -> dict[str, Any]:
    r = client.post("/generate", json=payload)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def sse(client: TestClient, **payload: Any) -> list[dict[str, Any]]:
    """The `data:` events of one /generate/stream answer, in order."""
    r = client.post("/generate/stream", json=payload)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.headers["cache-control"] == "no-cache"
    blocks = [b for b in r.text.split("\n\n") if b]
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks), r.text  # no error events
    return [json.loads(b.removeprefix("data: ")) for b in blocks]


def test_response_fields(client: TestClient) -> None:
    body = gen(client, prompt="First", max_new_tokens=30, seed=3)
    assert set(body) == {"generated_text", "finish_reason", "generated_tokens", "seed"}
    assert body["finish_reason"] == "length"
    assert body["generated_tokens"] == 30
    assert body["seed"] == 3
    assert isinstance(body["generated_text"], str) and 0 < len(body["generated_text"]) <= 30


def test_same_seed_same_text_and_the_cli_agrees(client: TestClient, reference: GeneratorModel) -> None:
    payload = {"prompt": "All:\n", "max_new_tokens": 60, "temperature": 0.9, "top_k": 10, "top_p": 0.95,
               "repetition_penalty": 1.2, "seed": 11}  # fmt: skip
    first, second = gen(client, **payload), gen(client, **payload)
    assert first == second
    params = SamplingParams(max_new_tokens=60, temperature=0.9, top_k=10, top_p=0.95, repetition_penalty=1.2, seed=11)
    expected = generate(reference.network, reference.tokenizer, "All:\n", params)
    assert first["generated_text"] == expected.text  # the service and `python -m model sample` agree
    assert first["generated_tokens"] == expected.tokens


def test_different_seeds_give_different_texts(client: TestClient) -> None:
    texts = {gen(client, max_new_tokens=40, seed=s)["generated_text"] for s in range(4)}
    assert len(texts) > 1


def test_the_returned_seed_reproduces_the_text(client: TestClient) -> None:
    first = gen(client, prompt="First Citizen:", max_new_tokens=50)
    assert isinstance(first["seed"], int) and first["seed"] >= 0
    again = gen(client, prompt="First Citizen:", max_new_tokens=50, seed=first["seed"])
    assert again == first
    other = gen(client, prompt="First Citizen:", max_new_tokens=50)
    assert other["seed"] != first["seed"]  # a fresh random seed each time


def test_greedy_needs_no_seed(client: TestClient) -> None:
    a = gen(client, prompt="Speak", max_new_tokens=40, temperature=0)
    b = gen(client, prompt="Speak", max_new_tokens=40, temperature=0)
    assert a["generated_text"] == b["generated_text"]


def test_stop_sequence_ends_the_text_and_is_excluded(client: TestClient) -> None:
    full = gen(client, prompt="All:", max_new_tokens=120, seed=5)["generated_text"]
    stop = full[30:33]
    cut = full.find(stop)
    assert 0 <= cut <= 30
    body = gen(client, prompt="All:", max_new_tokens=120, seed=5, stop=[stop, "\x00never"])
    assert body["finish_reason"] == "stop_sequence"
    assert body["generated_text"] == full[:cut]
    assert stop not in body["generated_text"]
    assert cut + len(stop) <= body["generated_tokens"] < 120


def test_stop_sequence_never_reached_finishes_by_length(client: TestClient) -> None:
    body = gen(client, max_new_tokens=20, seed=1, stop=["\x00never"])
    assert body["finish_reason"] == "length" and body["generated_tokens"] == 20


def test_max_new_tokens_over_the_limit_is_422_naming_it(make_client: ClientFactory) -> None:
    c = make_client(max_new_tokens=50)
    assert gen(c, max_new_tokens=50, seed=0)["generated_tokens"] == 50
    for route in ("/generate", "/generate/stream"):
        r = c.post(route, json={"max_new_tokens": 51})
        assert r.status_code == 422, r.text
        [error] = r.json()["detail"]
        assert error["loc"] == ["body", "max_new_tokens"]
        assert error["type"] == "less_than_equal"
        assert "50" in error["msg"] and "RNN_MAX_NEW_TOKENS" in error["msg"]
        assert error["input"] == 51


def test_prompt_over_the_char_limit_is_413(make_client: ClientFactory) -> None:
    c = make_client(max_input_chars=10)
    for route in ("/generate", "/generate/stream"):
        r = c.post(route, json={"prompt": "x" * 11, "max_new_tokens": 5})
        assert r.status_code == 413
        assert "prompt" in r.json()["detail"] and "RNN_MAX_INPUT_CHARS" in r.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "field", "kind"),
    [
        ({"temperature": -0.1}, "temperature", "greater_than_equal"),
        ({"top_p": 0}, "top_p", "greater_than"),
        ({"top_p": 1.01}, "top_p", "less_than_equal"),
        ({"top_k": 0}, "top_k", "greater_than_equal"),
        ({"repetition_penalty": 0}, "repetition_penalty", "greater_than_equal"),
        ({"max_new_tokens": 0}, "max_new_tokens", "greater_than_equal"),
        ({"seed": -1}, "seed", "greater_than_equal"),
        ({"seed": 2**53}, "seed", "less_than_equal"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "too_long"),
        ({"stop": [""]}, "stop", "string_too_short"),
        ({"stop": ["x" * 65]}, "stop", "string_too_long"),
        ({"stop": "\n"}, "stop", "list_type"),
        ({"prompt": None}, "prompt", "string_type"),
        ({"temprature": 0.5}, "temprature", "extra_forbidden"),
    ],
)
def test_invalid_parameters_are_422(client: TestClient, payload: dict[str, Any], field: str, kind: str) -> None:
    for route in ("/generate", "/generate/stream"):
        r = client.post(route, json={"max_new_tokens": 5, **payload})
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert any(e["loc"][:2] == ["body", field] and e["type"] == kind for e in detail), detail


@pytest.mark.parametrize("field", ["temperature", "top_p", "repetition_penalty", "top_k"])
@pytest.mark.parametrize(("number", "echoed"), [(b"NaN", "nan"), (b"Infinity", "inf"), (b"-Infinity", "-inf")])
def test_non_finite_numbers_are_422_not_500(client: TestClient, field: str, number: bytes, echoed: str) -> None:
    """Python's json reads NaN and Infinity; the 422 that echoes them back must still be valid JSON."""
    body = b'{"max_new_tokens": 5, "' + field.encode() + b'": ' + number + b"}"
    r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", field]
    assert error["input"] == echoed


def test_a_tiny_temperature_is_not_a_server_error(client: TestClient) -> None:
    r = client.post("/generate", json={"max_new_tokens": 5, "temperature": 1e-40, "seed": 0})
    assert r.status_code == 200, r.text
    greedy = client.post("/generate", json={"max_new_tokens": 5, "temperature": 0, "seed": 0})
    assert r.json()["generated_text"] == greedy.json()["generated_text"]  # the limit of T -> 0 is greedy


@pytest.mark.parametrize("penalty", [1e-30, 1e30])
def test_extreme_repetition_penalties_are_refused(client: TestClient, penalty: float) -> None:
    r = client.post("/generate", json={"max_new_tokens": 5, "repetition_penalty": penalty})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "repetition_penalty"]


# ---------------------------------------------------------------------------------------------- streaming
def test_stream_events_add_up_to_the_final_text(client: TestClient) -> None:
    events = sse(client, prompt="First Citizen:\n", max_new_tokens=40, seed=9)
    *tokens, last = events
    for event in events:
        assert set(event) == {"token", "generated_text", "details"}
        assert set(event["token"]) == {"text", "index"}
    assert [e["token"]["index"] for e in events] == list(range(len(events)))
    assert all(e["generated_text"] is None and e["details"] is None for e in tokens)
    assert "".join(e["token"]["text"] for e in events) == last["generated_text"]
    assert all(e["token"]["text"] for e in events)  # no empty pieces
    assert last["details"] == {"finish_reason": "length", "generated_tokens": 40, "seed": 9}


@pytest.mark.parametrize(
    "payload",
    [
        {"prompt": "All:", "max_new_tokens": 50, "seed": 21},
        {"prompt": "", "max_new_tokens": 30, "temperature": 0.7, "top_k": 5, "seed": 4},
        {"prompt": "Speak", "max_new_tokens": 1, "seed": 2},
    ],
)
def test_stream_equals_generate(client: TestClient, payload: dict[str, Any]) -> None:
    last = sse(client, **payload)[-1]
    body = gen(client, **payload)
    assert last["generated_text"] == body["generated_text"]
    assert last["details"] == {k: body[k] for k in ("finish_reason", "generated_tokens", "seed")}


def test_stream_without_seed_reports_the_seed_it_used(client: TestClient) -> None:
    last = sse(client, max_new_tokens=25)[-1]
    seed = last["details"]["seed"]
    assert gen(client, max_new_tokens=25, seed=seed)["generated_text"] == last["generated_text"]


def test_stream_stops_at_a_stop_sequence(client: TestClient) -> None:
    full = gen(client, prompt="All:", max_new_tokens=120, seed=5)["generated_text"]
    stop = full[30:33]
    events = sse(client, prompt="All:", max_new_tokens=120, seed=5, stop=[stop])
    last = events[-1]
    assert last["details"]["finish_reason"] == "stop_sequence"
    assert last["generated_text"] == full[: full.find(stop)]
    assert "".join(e["token"]["text"] for e in events) == last["generated_text"]
    assert stop not in last["generated_text"]


def test_stream_that_stops_at_once_has_one_empty_final_event(client: TestClient) -> None:
    first = gen(client, prompt="All:", max_new_tokens=5, seed=8)["generated_text"]
    events = sse(client, prompt="All:", max_new_tokens=5, seed=8, stop=[first[0]])
    assert len(events) == 1
    assert events[0]["token"] == {"text": "", "index": 0}
    assert events[0]["generated_text"] == ""
    assert events[0]["details"]["finish_reason"] == "stop_sequence"


@pytest.mark.parametrize("text", ["a", "\n", '"', "\\", "é", "\ufffd", "\u2028", "\x00", "ab c"])
def test_the_fast_token_event_is_byte_for_byte_the_generic_one(text: str) -> None:
    from app.routes.generator import _token_sse
    from app.routes.sse import sse

    generic = sse({"token": {"text": text, "index": 7}, "generated_text": None, "details": None})
    assert _token_sse(text, 7) == generic
