"""POST /tag and /tag/batch: each word's tag from the tiny part-of-speech tagger (where the context decides the
tag), offsets back into the text, the answers equal the artifact's own, limits, micro-batching, timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from app.serving.metrics import Metrics
from app.serving.tagger import TaggerEngine
from model.tagger.predictor import TaggerModel, load_tagger
from model.tasks import TASKS
from tests.app.conftest import TAGGED, Artifacts, ClientFactory, metric, serving

SettingsFor = Callable[..., Settings]


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts) -> TaggerModel:
    return load_tagger(artifacts.tagger)


def tags(answer: dict[str, Any]) -> list[str]:
    return [token["tag"] for token in answer["tokens"]]


def test_text_gets_a_tag_per_word_with_offsets_into_it(client: TestClient) -> None:
    text = "  I saw the saw."  # leading blanks and a full stop against the word: the offsets still fit
    r = client.post("/tag", json={"text": text})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert [t["text"] for t in tokens] == ["I", "saw", "the", "saw", "."]
    assert [t["tag"] for t in tokens] == ["PRON", "VERB", "DET", "NOUN", "PUNCT"]  # "saw" twice, two tags
    for token in tokens:
        assert set(token) == {"text", "start", "end", "tag", "score"}
        assert text[token["start"] : token["end"]] == token["text"]
        assert 0 < token["score"] <= 1
    assert tokens[0]["start"] == 2 and tokens[-1]["end"] == len(text)


def test_tokens_get_a_tag_each_and_no_offsets(client: TestClient) -> None:
    words = ["the", "saw", "saw", "the", "dog", "."]
    r = client.post("/tag", json={"tokens": words})
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert [t["text"] for t in tokens] == words
    assert [t["tag"] for t in tokens] == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    assert all(set(t) == {"text", "tag", "score"} for t in tokens)


@pytest.mark.parametrize(("text", "expected"), TAGGED)
def test_the_tagger_has_learned_its_corpus(client: TestClient, text: str, expected: str) -> None:
    assert tags(client.post("/tag", json={"text": text}).json()) == expected.split()


def test_answers_equal_the_artifact(client: TestClient, reference: TaggerModel) -> None:
    texts = ["a dog saw a saw .", "I saw it", "they saw the dog saw it ."]
    for text, expected in zip(texts, reference.tag_texts(texts), strict=True):
        answer = client.post("/tag", json={"text": text}).json()["tokens"]
        assert [(t["text"], t["start"], t["end"], t["tag"]) for t in answer] == [
            (t["text"], t["start"], t["end"], t["tag"]) for t in expected
        ]
        assert [t["score"] for t in answer] == pytest.approx([t["score"] for t in expected], abs=1e-6)


@pytest.mark.parametrize("body", [{"text": ""}, {"text": " \n\t "}, {"tokens": []}])
def test_nothing_to_tag_is_an_empty_answer(client: TestClient, body: dict[str, Any]) -> None:
    r = client.post("/tag", json=body)
    assert r.status_code == 200 and r.json() == {"tokens": []}


def test_a_batch_keeps_its_order(client: TestClient) -> None:
    texts = ["the dog saw it .", "", "I saw the saw .", "it saw a saw ."]
    r = client.post("/tag/batch", json={"texts": texts})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results == [client.post("/tag", json={"text": text}).json() for text in texts]
    assert [tags(result) for result in results] == [
        "DET NOUN VERB PRON PUNCT".split(),
        [],
        "PRON VERB DET NOUN PUNCT".split(),
        "PRON VERB DET NOUN PUNCT".split(),
    ]
    lists = [text.split() for text in texts]
    r = client.post("/tag/batch", json={"tokens": lists})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == [client.post("/tag", json={"tokens": tokens}).json() for tokens in lists]


LIMITED = {"max_input_chars": 20, "max_batch_texts": 3}


@pytest.mark.parametrize(
    ("path", "body", "says"),
    [
        ("/tag", {"text": "a" * 21}, "text has 21 characters; the limit is 20 (RNN_MAX_INPUT_CHARS)"),
        ("/tag", {"tokens": ["a"] * 21}, "tokens has 21 tokens; the limit is 20 (RNN_MAX_INPUT_CHARS)"),
        ("/tag", {"tokens": ["a", "b" * 21]}, "tokens[1] has 21 characters; the limit is 20 (RNN_MAX_INPUT_CHARS)"),
        ("/tag/batch", {"texts": ["a"] * 4}, "4 texts in one batch; the limit is 3 (RNN_MAX_BATCH_TEXTS)"),
        ("/tag/batch", {"tokens": [["a"]] * 4}, "4 token lists in one batch; the limit is 3 (RNN_MAX_BATCH_TEXTS)"),
        ("/tag/batch", {"texts": ["a", "b" * 21]}, "texts[1] has 21 characters"),
        ("/tag/batch", {"tokens": [["a"], ["b"] * 21]}, "tokens[1] has 21 tokens"),
        ("/tag/batch", {"tokens": [["a", "b" * 21]]}, "tokens[0][1] has 21 characters"),
    ],
)
def test_limits_are_413_naming_the_variable(
    make_client: ClientFactory, path: str, body: dict[str, Any], says: str
) -> None:
    r = make_client(**LIMITED).post(path, json=body)
    assert r.status_code == 413 and says in r.json()["detail"], r.text


def test_the_limits_are_in_the_openapi_document(make_client: ClientFactory) -> None:
    schemas = make_client(**LIMITED).get("/openapi.json").json()["components"]["schemas"]
    single, batch = schemas["TagRequest"], schemas["TagBatchRequest"]
    assert single["oneOf"] == [{"required": ["text"]}, {"required": ["tokens"]}]
    assert single["properties"]["text"]["maxLength"] == 20
    assert single["properties"]["tokens"]["maxItems"] == 20
    assert single["properties"]["tokens"]["items"]["maxLength"] == 20
    assert batch["oneOf"] == [{"required": ["texts"]}, {"required": ["tokens"]}]
    assert batch["properties"]["texts"]["maxItems"] == batch["properties"]["tokens"]["maxItems"] == 3
    assert batch["properties"]["tokens"]["items"]["maxItems"] == 20
    assert single["examples"] and batch["examples"]


def test_concurrent_requests_share_batches_and_keep_their_answers(
    settings_for: SettingsFor, reference: TaggerModel
) -> None:
    sentences = [f"the dog saw {'a saw ' * (i % 4)}." for i in range(24)]

    async def main() -> tuple[list[dict[str, Any]], str]:
        async with serving(create_app(settings_for(batch_max_wait_ms=20))) as c:
            responses = await asyncio.gather(*(c.post("/tag", json={"text": s}) for s in sentences))
            assert all(r.status_code == 200 for r in responses)
            return [r.json() for r in responses], (await c.get("/metrics")).text

    answers, metrics = asyncio.run(main())
    for answer, expected in zip(answers, reference.tag_texts(sentences), strict=True):
        assert tags(answer) == [t["tag"] for t in expected]
    forwards = metric(metrics, "rnn_batch_size_count", model="tagger")
    assert metric(metrics, "rnn_batch_size_sum", model="tagger") == len(sentences)
    assert forwards is not None and forwards < len(sentences)  # sentences were tagged together
    assert metric(metrics, "rnn_queue_depth", model="tagger") == 0


def test_the_engine_keeps_batches_within_the_max_size(artifacts: Artifacts, reference: TaggerModel) -> None:
    sentences = [["the", "dog", "saw"] + ["it"] * (i % 3) for i in range(10)] + [[]]

    async def main() -> tuple[list[list[dict[str, Any]]], Metrics]:
        metrics = Metrics()
        engine = TaggerEngine(load_tagger(artifacts.tagger), max_batch=4, max_wait_ms=20, metrics=metrics)
        engine.warmup()
        await engine.start()
        try:
            return await engine.tag(sentences), metrics
        finally:
            await engine.stop()

    answers, metrics = asyncio.run(main())
    expected = reference.tag_tokens(sentences)
    assert [[(t["text"], t["tag"]) for t in a] for a in answers] == [
        [(t["text"], t["tag"]) for t in e] for e in expected
    ]
    assert answers[-1] == []  # the empty sentence: answered without a forward
    registry = metrics.registry
    count = registry.get_sample_value("rnn_batch_size_count", {"model": "tagger"})
    assert registry.get_sample_value("rnn_batch_size_sum", {"model": "tagger"}) == 10
    assert count is not None and 3 <= count < 10
    assert registry.get_sample_value("rnn_batch_size_bucket", {"model": "tagger", "le": "4.0"}) == count


def test_a_timed_out_request_is_503_and_leaves_nothing_queued(settings_for: SettingsFor) -> None:
    async def main() -> None:
        app = create_app(settings_for(batch_max_wait_ms=300, request_timeout_s=0.05))
        async with serving(app) as c:
            r = await c.post("/tag", json={"text": "I saw it"})
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert "RNN_REQUEST_TIMEOUT_S" in r.json()["detail"]
            await asyncio.sleep(0.4)  # the batcher wakes up, finds the request gone and runs no forward
            assert metric((await c.get("/metrics")).text, "rnn_batch_size_count", model="tagger") == 0
            assert app.state.engines["tagger"].queue.empty()

    asyncio.run(main())


def test_a_model_of_another_kind_or_no_model_by_that_name(client: TestClient) -> None:
    r = client.post("/tag", json={"text": "I saw it", "model": "sentiment"})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "model"] and "sentiment model" in error["msg"] and "tagger model" in error["msg"]
    r = client.post("/tag/batch", json={"texts": ["I saw it"], "model": "nope"})
    assert r.status_code == 404
    assert r.json()["detail"] == f"no model named 'nope'; loaded: {list(TASKS)}"
    assert client.post("/tag", json={"text": "I saw it", "model": "tagger"}).status_code == 200
