"""Model kinds are pluggable: one engine registry keyed as model/tasks.py is, and more artifacts served beside the
defaults by configuration alone (RNN_MODELS), each addressed by name with `"model": "<name>"`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import default_names
from app.main import create_app
from app.serving.registry import ENGINES
from model.tasks import TASKS
from tests.app.conftest import LABELS, THREE_LABELS, Artifacts, ClientFactory, clean_settings, metric

LOADED = str([*TASKS, "mine"])


def test_every_kind_has_an_engine_and_a_default_artifact_setting() -> None:
    assert list(ENGINES) == list(TASKS) == list(default_names()) == ["sentiment", "generator", "tagger", "translator"]


@pytest.fixture(scope="module")
def mine(artifacts: Artifacts, three_labels: Path) -> Iterator[TestClient]:
    """The defaults, and a second classifier with labels of its own, called "mine"."""
    with TestClient(create_app(clean_settings(artifacts, models={"mine": three_labels}))) as c:
        yield c


def test_the_extra_model_has_a_card_after_the_defaults(mine: TestClient, three_labels: Path) -> None:
    cards = mine.get("/models").json()
    assert [c["name"] for c in cards] == [*TASKS, "mine"]
    assert cards[4]["task"] == "sentiment" and cards[4]["labels"] == THREE_LABELS
    assert cards[4]["serving"] == cards[0]["serving"]  # runs as the default classifier does
    assert mine.get("/ready").json() == {"status": "ready"}


def test_a_request_names_the_model_that_answers(mine: TestClient) -> None:
    text = "calm0 calm1 the movie"
    default = mine.post("/sentiment", json={"text": text}).json()
    named = mine.post("/sentiment", json={"text": text, "model": "mine"}).json()
    assert sorted(default["probabilities"]) == LABELS
    assert sorted(named["probabilities"]) == THREE_LABELS and named["label"] == "calm"
    assert mine.post("/sentiment", json={"text": text, "model": "sentiment"}).json() == default
    batch = mine.post("/sentiment/batch", json={"texts": [text, "weary0 weary2 a plot"], "model": "mine"}).json()
    assert [r["label"] for r in batch["results"]] == ["calm", "weary"]
    explained = mine.post("/sentiment", json={"text": text, "model": "mine", "explain": True}).json()
    assert explained["label"] == "calm" and [w["token"] for w in explained["explanation"]] == text.split()
    text_metrics = mine.get("/metrics").text
    assert metric(text_metrics, "rnn_batch_size_sum", model="mine") == 4  # its own batcher
    assert metric(text_metrics, "rnn_batch_size_sum", model="sentiment") == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/sentiment", {"text": "good"}),
        ("/sentiment/batch", {"texts": ["good"]}),
        ("/generate", {"max_new_tokens": 3}),
        ("/generate/stream", {"max_new_tokens": 3}),
        ("/tag", {"text": "I saw it"}),
        ("/tag/batch", {"texts": ["I saw it"]}),
    ],
)
def test_an_unknown_name_is_404_listing_the_loaded_ones(mine: TestClient, path: str, body: dict[str, object]) -> None:
    r = mine.post(path, json={**body, "model": "nope"})
    assert r.status_code == 404
    assert r.json() == {"detail": f"no model named 'nope'; loaded: {LOADED}"}


@pytest.mark.parametrize(
    ("path", "body", "model", "kind", "needs"),
    [
        ("/sentiment", {"text": "good"}, "generator", "generator", "sentiment"),
        ("/sentiment/batch", {"texts": ["good"]}, "tagger", "tagger", "sentiment"),
        ("/generate", {"max_new_tokens": 3}, "mine", "sentiment", "generator"),
        ("/generate/stream", {"max_new_tokens": 3}, "sentiment", "sentiment", "generator"),
        ("/tag", {"text": "I saw it"}, "mine", "sentiment", "tagger"),
    ],
)
def test_a_model_of_another_kind_is_422_naming_both(
    mine: TestClient, path: str, body: dict[str, object], model: str, kind: str, needs: str
) -> None:
    r = mine.post(path, json={**body, "model": model})
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "model"]
    assert error["msg"] == f"model '{model}' is a {kind} model; this route needs a {needs} model"


@pytest.mark.parametrize("name", ["Mine", "-x", "a b", "x" * 65, ""])
def test_a_malformed_name_is_422(mine: TestClient, name: str) -> None:
    r = mine.post("/sentiment", json={"text": "good", "model": name})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "model"]


def test_an_extra_model_takes_its_kind_from_its_artifact(make_client: ClientFactory, artifacts: Artifacts) -> None:
    """A second generator (the same artifact, so the same text per seed) and a second tagger, by configuration."""
    c = make_client(models={"gen2": artifacts.generator, "pos": artifacts.tagger})
    body = {"prompt": "All:", "max_new_tokens": 20, "seed": 5}
    assert c.post("/generate", json={**body, "model": "gen2"}).json() == c.post("/generate", json=body).json()
    tagged = c.post("/tag", json={"text": "I saw the saw .", "model": "pos"}).json()
    assert tagged == c.post("/tag", json={"text": "I saw the saw ."}).json()
    assert [card["task"] for card in c.get("/models").json()][4:] == ["generation", "tagging"]


def test_a_bad_extra_artifact_stops_start_up_naming_it(
    make_client: ClientFactory, artifacts: Artifacts, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(artifacts.sentiment, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(Exception, match=r"RNN_MODELS entry 'mine': .*tokenizer\.json is missing"):
        make_client(models={"mine": broken})
    with pytest.raises(Exception, match=r"RNN_MODELS entry 'gone': .*does not exist"):
        make_client(models={"gone": tmp_path / "nowhere"})


def test_a_deployment_without_a_kind_serves_the_others(make_client: ClientFactory) -> None:
    """RNN_TAGGER_ARTIFACT=none: the tagger is not loaded, its routes say why with 404, and the service is ready."""
    c = make_client(tagger_artifact="none")
    assert c.get("/ready").status_code == 200
    assert [card["name"] for card in c.get("/models").json()] == ["sentiment", "generator", "translator"]
    r = c.post("/tag", json={"text": "I saw it"})
    assert r.status_code == 404 and "RNN_TAGGER_ARTIFACT=none" in r.json()["detail"], r.text
    assert c.post("/sentiment", json={"text": "a fine film"}).status_code == 200
