"""The Hugging Face and OpenAI protocols in-process: their error shapes (and this service's, unchanged), the
in-flight and body limits on their routes, the engine's scored tokens, the entity grouping of token
classification, and the OpenAPI document (tests/app/test_clients.py drives them with the real client libraries)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.protocols.hf import TokenClassificationParameters, token_entities
from app.serving.generator import GeneratorEngine
from app.serving.metrics import Metrics
from model.generator.predictor import load_generator
from model.generator.sampling import SamplingParams, log_softmax
from tests.app.conftest import Artifacts, ClientFactory, serving


def test_this_services_errors_keep_their_shape(client: TestClient) -> None:
    flat = client.post("/generate", json={"prompt": "x", "max_new_tokens": 0})
    assert flat.status_code == 422 and flat.json()["detail"][0]["loc"] == ["body", "max_new_tokens"]
    assert client.post("/generate", content=b"{").json()["detail"][0]["type"] == "json_invalid"
    assert client.post("/generate", content=b"").json()["detail"][0]["type"] == "missing"
    bad_utf8 = client.post("/generate", content=b'{"prompt": "\xff"}', headers={"content-type": "application/json"})
    assert bad_utf8.status_code == 400 and bad_utf8.json() == {"detail": "the request body is not valid UTF-8 JSON"}


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"inputs": "x", "parameters": {"temperature": 0}}, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"top_p": 1.0}}, "parameters.top_p"),
        ({"inputs": "x", "parameters": {"grammar": {"type": "regex", "value": "a+"}}}, "parameters.grammar"),
        ({"inputs": "x", "parameters": {"no_such": 1}}, "parameters.no_such"),
        ({"inputs": 3}, "inputs"),
    ],
)
def test_tgi_errors_name_the_parameter_in_tgis_shape(client: TestClient, body: dict[str, Any], where: str) -> None:
    for path in ("/", "/generate", "/generate_stream", "/models/generator"):
        r = client.post(path, json=body)
        assert r.status_code == 422, (path, r.text)
        assert r.json()["error_type"] == "validation" and where in r.json()["error"], (path, r.json())


def test_classification_and_tagging_refuse_blank_and_oversized_inputs(client: TestClient) -> None:
    r = client.post("/models/sentiment", json={"inputs": ["good", "  "]})
    assert r.status_code == 422 and "inputs[1]" in r.json()["error"]
    r = client.post("/models/tagger", json={"inputs": "x" * 2001})
    assert r.status_code == 413 and "RNN_MAX_INPUT_CHARS" in r.json()["error"]
    r = client.post("/predict", json={"inputs": ["a"] * 65})
    assert r.status_code == 413 and "RNN_MAX_BATCH_TEXTS" in r.json()["error"]
    r = client.post("/models/sentiment", json={"inputs": "good", "parameters": {"max_new_tokens": 3}})
    assert r.status_code == 422 and "max_new_tokens" in r.json()["error"]  # a generation parameter, not its task


def test_model_routes_for_a_missing_model(client: TestClient) -> None:
    for method, path in (("GET", "/models/nothing"), ("POST", "/models/nothing"), ("GET", "/models/nothing/info")):
        r = client.request(method, path, json={"inputs": "x"})
        assert r.status_code == 404 and "nothing" in r.json()["error"] and "error_type" not in r.json()
    card = client.get("/models/tagger").json()
    assert card == next(c for c in client.get("/models").json() if c["name"] == "tagger")


def test_openai_errors_are_400_in_openais_shape(client: TestClient) -> None:
    r = client.post("/v1/completions", json={"model": "generator", "prompt": "x", "n": 0})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "n" and "n:" in error["message"]
    r = client.post("/v1/completions", json={"model": "generator", "prompt": "x", "n": 64, "max_tokens": 1})
    assert r.status_code == 200 and len(r.json()["choices"]) == 64
    r = client.post("/v1/completions", json={"model": "generator", "prompt": ["x", "y"], "n": 64})
    assert r.status_code == 400 and "RNN_MAX_STREAMS" in r.json()["error"]["message"]


def test_the_protocols_routes_are_under_the_body_and_in_flight_limits(make_client: ClientFactory) -> None:
    client = make_client(max_body_bytes=2048)
    big = {"model": "generator", "prompt": "x" * 4000}
    r = client.post("/v1/completions", json=big)
    assert r.status_code == 413 and "RNN_MAX_BODY_BYTES" in r.json()["error"]["message"]
    r = client.post("/", json={"inputs": "x" * 4000})
    assert r.status_code == 413 and r.json()["error_type"] == "validation"


def test_in_flight_limit_covers_post_root_models_and_v1(settings_for: Any) -> None:
    app = create_app(settings_for(max_concurrent_requests=1, max_new_tokens=100_000))

    async def main() -> list[Any]:
        async with serving(app) as c:
            long = asyncio.create_task(c.post("/generate", json={"prompt": "x", "max_new_tokens": 100_000}))
            await asyncio.sleep(0.05)
            answers = [await c.post("/", json={"inputs": "x"}), await c.post("/models/sentiment", json={"inputs": "a"}),
                       await c.post("/v1/completions", json={"model": "generator", "prompt": "x"}),
                       await c.post("/predict", json={"inputs": "good"}),
                       await c.get("/v1/models")]  # fmt: skip
            long.cancel()
            return answers

    root, named, v1, predict, models = asyncio.run(main())  # the last is not a model call: never refused
    assert [r.status_code for r in (root, named, v1, predict)] == [503] * 4
    assert root.json()["error_type"] == "overloaded" and named.json()["error_type"] == "overloaded"
    assert v1.json()["error"]["type"] == "server_error" and root.headers["retry-after"] == "1"
    assert models.status_code == 200


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    assert client.put("/").headers["allow"] == "GET, POST"
    assert client.put("/models/sentiment").headers["allow"] == "GET, POST"
    assert client.get("/generate").headers["allow"] == "POST"


def test_the_engine_scores_tokens_only_for_streams_that_ask(artifacts: Artifacts) -> None:
    model = load_generator(artifacts.generator)

    async def main() -> tuple[Any, Any]:
        engine = GeneratorEngine(model, max_streams=4, metrics=Metrics())
        await engine.start()
        try:
            params = SamplingParams(max_new_tokens=30, seed=3)
            plain, scored = engine.submit("All:", params, streaming=False), engine.submit("All:", params, logprobs=2)
            while not (plain.ended and scored.ended):
                await asyncio.sleep(0.01)
        finally:
            await engine.stop()
        return plain, scored

    plain, scored = asyncio.run(main())
    assert plain.scored == [] and len(scored.scored) == 30
    assert "".join(plain.text) == "".join(scored.text) == "".join(t.text for t in scored.scored)
    streamed = [t for event in _drain(scored) for t in event.tokens]
    assert streamed == scored.scored
    for t in scored.scored:
        assert [i for i, _ in t.top][0] == max(t.top, key=lambda x: x[1])[0] and len(t.top) == 2
        assert t.logprob is not None and t.logprob <= t.top[0][1] + 1e-9
    assert np.isclose(np.exp(log_softmax(np.array([1.0, 2.0, 3.0], np.float32))).sum(), 1.0)


def _drain(stream: Any) -> list[Any]:
    events = []
    while not stream.events.empty():
        events.append(stream.events.get_nowait())
    return events


def test_token_classification_groups_bio_entities() -> None:
    text = "Ann Lee met Bob in Paris"
    words = [("Ann", "B-PER", 0), ("Lee", "I-PER", 4), ("met", "O", 8), ("Bob", "B-PER", 12), ("in", "O", 16),
             ("Paris", "B-LOC", 19)]  # fmt: skip
    tagged = [{"text": w, "tag": tag, "score": 0.5 + i / 20, "start": s, "end": s + len(w)}
              for i, (w, tag, s) in enumerate(words)]  # fmt: skip
    grouped = token_entities(text, tagged, TokenClassificationParameters(), bio=True)
    assert [(g["entity_group"], g["word"], g["start"], g["end"]) for g in grouped] == [
        ("PER", "Ann Lee", 0, 7), ("PER", "Bob", 12, 15), ("LOC", "Paris", 19, 24)
    ]  # fmt: skip
    assert grouped[0]["score"] == pytest.approx((0.5 + 0.55) / 2)
    every = token_entities(text, tagged, TokenClassificationParameters(aggregation_strategy="none"), bio=True)
    assert [e["entity"] for e in every] == ["B-PER", "I-PER", "B-PER", "B-LOC"]  # "O" ignored by default
    kept = TokenClassificationParameters(aggregation_strategy="none", ignore_labels=[])
    assert len(token_entities(text, tagged, kept, bio=True)) == 6


def test_the_openapi_document_has_the_three_protocols_with_examples(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    for path, method in (("/", "post"), ("/generate_stream", "post"), ("/info", "get"), ("/predict", "post"),
                         ("/models/{name}", "post"), ("/v1/completions", "post"), ("/v1/models", "get")):  # fmt: skip
        assert method in paths[path], path
    for name in ("TGIRequest", "CompletionRequest", "ClassificationRequest", "TokenClassificationRequest",
                 "PredictRequest"):  # fmt: skip
        assert schemas[name].get("examples"), name
    generate = paths["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in generate["anyOf"]} == {"GenerateRequest", "TGIRequest"}
    assert schemas["TGIParameters"]["properties"]["grammar"]["enum"] == [None]  # refused: the document says so


def test_a_streamed_completion_of_no_tokens_is_still_a_stream(client: TestClient) -> None:
    body = {"model": "generator", "prompt": "All:", "max_tokens": 0, "echo": True, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    assert r.text.endswith("data: [DONE]\n\n") and '"text": "All:"' in r.text and '"completion_tokens": 0' in r.text
