"""POST /sentiment and /sentiment/batch: the answers equal the artifact's own predictions; limits and validation."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from model.sentiment.predictor import SentimentModel, load_sentiment
from tests.app.conftest import LABELS, Artifacts, ClientFactory

TEXTS = [
    "the movie was good and lovely",
    "dull , boring and awful acting",
    "a plot",
    "superb brilliant story , great film",
    "the film was dreadful",
]


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts) -> SentimentModel:
    """The classifier loaded straight from its artifact, as `python -m model predict` would."""
    return load_sentiment(artifacts.sentiment)


def assert_same(got: dict[str, Any], expected: dict[str, Any], tol: float = 1e-6) -> None:
    assert got["label"] == expected["label"]
    assert got["score"] == pytest.approx(expected["score"], abs=tol)
    assert got["probabilities"].keys() == expected["probabilities"].keys()
    for label, p in expected["probabilities"].items():
        assert got["probabilities"][label] == pytest.approx(p, abs=tol)


@pytest.mark.parametrize("text", TEXTS)
def test_answer_is_a_consistent_distribution(client: TestClient, text: str) -> None:
    r = client.post("/sentiment", json={"text": text})
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"label", "score", "probabilities"}  # no explanation unless asked
    probs = body["probabilities"]
    assert sorted(probs) == LABELS
    assert math.isclose(sum(probs.values()), 1.0, abs_tol=1e-6)
    assert all(0.0 <= p <= 1.0 for p in probs.values())
    assert body["score"] == max(probs.values())
    assert body["label"] == max(probs, key=probs.__getitem__)


@pytest.mark.parametrize("text", TEXTS)
def test_answer_equals_the_artifact_prediction(client: TestClient, reference: SentimentModel, text: str) -> None:
    r = client.post("/sentiment", json={"text": text})
    assert_same(r.json(), reference.predict([text])[0])


def test_the_model_has_learned_the_cue_words(client: TestClient) -> None:
    """The tiny model is trained on sentences whose cue words decide the label; the service must keep that."""
    good = client.post("/sentiment", json={"text": "good great lovely superb brilliant"}).json()
    bad = client.post("/sentiment", json={"text": "bad awful poor boring dull"}).json()
    assert good["probabilities"]["positive"] > bad["probabilities"]["positive"]


def test_explain_false_has_no_explanation(client: TestClient) -> None:
    body = client.post("/sentiment", json={"text": TEXTS[0], "explain": False}).json()
    assert "explanation" not in body


def test_explain_gives_one_weight_per_word(client: TestClient, reference: SentimentModel) -> None:
    text = "  the movie\twas  good\n, lovely  "
    r = client.post("/sentiment", json={"text": text, "explain": True})
    assert r.status_code == 200
    body = r.json()
    assert_same(body, reference.predict([text])[0])  # explaining does not change the answer
    explanation = body["explanation"]
    assert [e["token"] for e in explanation] == text.split()
    # a word's weight is how much the predicted label's probability drops without it (leave-one-out)
    index = LABELS.index(body["label"])
    without_good = "  the movie\twas  \n, lovely".strip()
    drop = body["score"] - float(reference.predict_proba([without_good])[0, index])
    assert explanation[3]["token"] == "good"
    assert explanation[3]["weight"] == pytest.approx(drop, abs=1e-5)
    assert all(isinstance(e["weight"], float) for e in explanation)


def test_explain_a_single_word(client: TestClient) -> None:
    body = client.post("/sentiment", json={"text": "good", "explain": True}).json()
    assert [e["token"] for e in body["explanation"]] == ["good"]


def _detail(r: Any) -> list[dict[str, Any]]:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail
    for error in detail:
        assert {"loc", "msg", "type"} <= set(error)
    return list(detail)


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({"text": ""}, ["body", "text"], "string_too_short"),
        ({"text": "   \n\t"}, ["body", "text"], "value_error"),
        ({}, ["body", "text"], "missing"),
        ({"text": 5}, ["body", "text"], "string_type"),
        ({"text": ["a"]}, ["body", "text"], "string_type"),
        ({"text": "good", "explain": "maybe"}, ["body", "explain"], "bool_type"),
        ({"text": "good", "mood": "happy"}, ["body", "mood"], "extra_forbidden"),
    ],
)
def test_invalid_request_is_422_in_fastapi_format(client: TestClient, payload: Any, loc: list[str], kind: str) -> None:
    detail = _detail(client.post("/sentiment", json=payload))
    assert any(e["loc"] == loc and e["type"] == kind for e in detail), detail


def test_malformed_json_is_422(client: TestClient) -> None:
    r = client.post("/sentiment", content=b'{"text": "good"', headers={"content-type": "application/json"})
    assert _detail(r)[0]["type"] == "json_invalid"


def test_a_nan_text_is_422(client: TestClient) -> None:
    r = client.post("/sentiment", content=b'{"text": NaN}', headers={"content-type": "application/json"})
    assert _detail(r)[0]["input"] == "nan"


def test_text_at_the_limit_is_served_and_over_it_is_413(make_client: ClientFactory) -> None:
    c = make_client(max_input_chars=40)
    assert c.post("/sentiment", json={"text": "good " * 8}).status_code == 200  # exactly 40 characters
    r = c.post("/sentiment", json={"text": "good " * 8 + "x"})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "41" in detail and "40" in detail and "RNN_MAX_INPUT_CHARS" in detail


def _chunks(payload: bytes, size: int = 256) -> Iterator[bytes]:
    for start in range(0, len(payload), size):
        yield payload[start : start + size]


def test_body_over_the_byte_limit_is_413(make_client: ClientFactory) -> None:
    c = make_client(max_body_bytes=1024, max_input_chars=100_000)
    payload = b'{"text": "' + b"good " * 400 + b'"}'
    r = c.post("/sentiment", content=payload, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json()["detail"] == "request body exceeds 1024 bytes (RNN_MAX_BODY_BYTES)"
    # without a content-length (chunked upload) the limit holds while the body is read
    r = c.post("/sentiment", content=_chunks(payload), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "RNN_MAX_BODY_BYTES" in r.json()["detail"]
    # and a small chunked body still goes through
    r = c.post("/sentiment", content=_chunks(b'{"text": "good film"}', 4), headers={"content-type": "application/json"})
    assert r.status_code == 200 and r.json()["label"] in LABELS


def test_batch_answers_in_input_order_equal_single_answers(client: TestClient, reference: SentimentModel) -> None:
    texts = TEXTS + [TEXTS[0]]  # a duplicate gets the same answer
    r = client.post("/sentiment/batch", json={"texts": texts})
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == len(texts)
    for text, result in zip(texts, results, strict=True):
        assert "explanation" not in result
        assert_same(result, client.post("/sentiment", json={"text": text}).json())
        assert_same(result, reference.predict([text])[0])


def test_batch_of_one(client: TestClient) -> None:
    r = client.post("/sentiment/batch", json={"texts": ["good"]})
    assert_same(r.json()["results"][0], client.post("/sentiment", json={"text": "good"}).json())


def test_batch_over_the_text_count_limit_is_413(make_client: ClientFactory) -> None:
    c = make_client(max_batch_texts=3)
    assert len(c.post("/sentiment/batch", json={"texts": ["good"] * 3}).json()["results"]) == 3
    r = c.post("/sentiment/batch", json={"texts": ["good"] * 4})
    assert r.status_code == 413
    detail = r.json()["detail"]
    assert "4 texts" in detail and "3" in detail and "RNN_MAX_BATCH_TEXTS" in detail


def test_batch_text_over_the_char_limit_is_413_naming_it(make_client: ClientFactory) -> None:
    c = make_client(max_input_chars=10)
    r = c.post("/sentiment/batch", json={"texts": ["good", "x" * 11]})
    assert r.status_code == 413
    assert "texts[1]" in r.json()["detail"] and "RNN_MAX_INPUT_CHARS" in r.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "loc", "kind"),
    [
        ({"texts": []}, ["body", "texts"], "too_short"),
        ({"texts": ["good", " "]}, ["body", "texts"], "value_error"),
        ({"texts": "good"}, ["body", "texts"], "list_type"),
        ({"texts": ["good", 3]}, ["body", "texts", 1], "string_type"),
        ({}, ["body", "texts"], "missing"),
        ({"texts": ["good"], "explain": True}, ["body", "explain"], "extra_forbidden"),
    ],
)
def test_invalid_batch_is_422(client: TestClient, payload: Any, loc: list[Any], kind: str) -> None:
    detail = _detail(client.post("/sentiment/batch", json=payload))
    assert any(e["loc"] == loc and e["type"] == kind for e in detail), detail


def test_blank_batch_text_names_its_index(client: TestClient) -> None:
    detail = _detail(client.post("/sentiment/batch", json={"texts": ["good", " "]}))
    assert "texts[1]" in detail[0]["msg"]


TEXTS = ["a gorgeous , moving film", "a dull and tedious mess", "fine", "not bad at all"]


def test_an_int8_classifier_serves_close_to_the_float_one(make_client: ClientFactory) -> None:
    exact = make_client(runtime="torch").post("/sentiment/batch", json={"texts": TEXTS}).json()["results"]
    c = make_client(runtime="torch", quantize="int8", ensemble_threads=2)
    runner = c.app.state.engines["sentiment"].model.runner  # type: ignore[attr-defined]
    assert [m for m in runner.modules() if "quantized" in type(m).__module__]  # the LSTMs and linear layers
    fast = c.post("/sentiment/batch", json={"texts": TEXTS}).json()["results"]
    for a, b in zip(exact, fast, strict=True):
        assert abs(a["score"] - b["score"]) < 0.05 and a["label"] == b["label"]


@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_onnx_runtime_serves_what_torch_serves(make_client: ClientFactory, quantize: str) -> None:
    pytest.importorskip("onnxruntime")
    torch_client = make_client(runtime="torch", quantize=quantize)
    onnx_client = make_client(runtime="onnx", quantize=quantize, onnx_threads=2)
    assert onnx_client.get("/models").json()[0]["serving"] == {"runtime": "onnx", "quantize": quantize,
                                                              "forwards": "process"}  # fmt: skip
    assert torch_client.get("/models").json()[0]["serving"] == {"runtime": "torch", "quantize": quantize,
                                                               "forwards": "thread"}  # fmt: skip
    reference = torch_client.post("/sentiment/batch", json={"texts": TEXTS}).json()["results"]
    served = onnx_client.post("/sentiment/batch", json={"texts": TEXTS}).json()["results"]
    tolerance = 1e-5 if quantize == "none" else 0.05  # int8: each runtime quantizes its own way
    for a, b in zip(reference, served, strict=True):
        assert a["label"] == b["label"] and abs(a["score"] - b["score"]) < tolerance
    explained = onnx_client.post("/sentiment", json={"text": TEXTS[0], "explain": True}).json()
    assert [w["token"] for w in explained["explanation"]] == TEXTS[0].split()


def test_the_classifier_serves_its_artifacts_graph_without_an_export(
    make_client: ClientFactory, artifacts: Artifacts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trainer ships the ONNX graph in the artifact (model/sentiment/onnx_runtime.py): loading, and so a live swap,
    exports nothing. An artifact without one is exported as it loads (tests/app/test_live_versions.py's
    versions are written without it)."""
    pytest.importorskip("onnx")
    from model.sentiment import onnx_runtime

    assert (artifacts.sentiment / onnx_runtime.GRAPH).is_file()

    def no_export(*args: Any) -> bytes:
        raise AssertionError("exported although the artifact has its graph")

    monkeypatch.setattr(onnx_runtime, "export", no_export)
    c = make_client(runtime="onnx", onnx_threads=2)
    assert c.get("/models").json()[0]["serving"]["runtime"] == "onnx"
    assert c.post("/sentiment", json={"text": TEXTS[0]}).json()["label"] in LABELS


def test_auto_runtime_is_onnx_when_installed(client: TestClient) -> None:
    from model.sentiment.onnx_runtime import available

    [sentiment, generator, tagger, translator] = client.get("/models").json()
    assert sentiment["serving"]["runtime"] == ("onnx" if available() else "torch")
    assert generator["serving"]["runtime"] == "numpy"
    assert generator["serving"]["blas_threads"] in (1, 2, os.cpu_count())  # app/serving/threads.py
    assert tagger["serving"] == {"runtime": "torch"}
    assert translator["serving"] == {"runtime": "torch", "beam": 2}
