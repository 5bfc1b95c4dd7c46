"""POST /translate and /translate/batch: the tiny translator's learned pairs, the answers equal the artifact's
own, n-best and alignments, limits with errors naming the field, and decoding batched across requests, step by
step."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from model.translator.decode import BeamSearch
from model.translator.predictor import TranslatorModel, load_translator
from tests.app.conftest import PARALLEL, Artifacts, ClientFactory, metric, serving
from tests.app.test_tagger import SettingsFor


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts) -> TranslatorModel:
    return load_translator(artifacts.translator)


@pytest.mark.parametrize(("source", "target"), PARALLEL)
def test_the_translator_has_learned_its_pairs(client: TestClient, source: str, target: str) -> None:
    r = client.post("/translate", json={"text": source})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["translation"] == target
    assert set(body) == {"translation", "score"} and body["score"] < 0


def test_answers_equal_the_artifacts_own(client: TestClient, reference: TranslatorModel) -> None:
    texts = ["ein Hund spielen .", "zwei Katze läuft ein Buch .", "eine Frau"]
    r = client.post("/translate/batch", json={"texts": texts, "beam": 2, "n_best": 2})
    assert r.status_code == 200, r.text
    assert r.json()["results"] == reference.translate(texts, reference.params(beam=2, n_best=2))


def test_n_best_gives_alternatives_best_first(client: TestClient) -> None:
    body = client.post("/translate", json={"text": PARALLEL[3][0], "beam": 4, "n_best": 3}).json()
    scores = [body["score"], *(a["score"] for a in body["alternatives"])]
    assert len(body["alternatives"]) == 2 and scores == sorted(scores, reverse=True)
    assert len({body["translation"], *(a["translation"] for a in body["alternatives"])}) == 3


def test_alignment_names_the_source_word_of_each_target_subword(client: TestClient) -> None:
    body = client.post("/translate", json={"text": "ein Hund läuft .", "alignment": True}).json()
    words = "ein Hund läuft .".split()
    assert body["translation"] == "a dog runs ."
    assert len(body["alignment"]) >= 4
    for row in body["alignment"]:
        assert set(row) == {"target", "source_word", "source", "weight"}
        assert words[row["source_word"]] == row["source"] and 0 < row["weight"] <= 1


def test_greedy_and_beam_agree_on_what_is_learned(client: TestClient) -> None:
    for beam in (1, 8):
        assert (
            client.post("/translate", json={"text": PARALLEL[0][0], "beam": beam}).json()["translation"]
            == (PARALLEL[0][1])
        )


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"text": "ein Hund", "beam": 9}, "beam", "less than or equal to 8"),
        ({"text": "ein Hund", "beam": 0}, "beam", "greater than or equal to 1"),
        ({"text": "ein Hund", "beam": 2, "n_best": 3}, "n_best", "at most the beam (2)"),
        ({"text": "ein Hund", "n_best": 3}, "n_best", "at most the beam (2)"),  # the model's default beam: 2
        ({"text": "   "}, "text", "non-whitespace"),
        ({"text": "ein Hund", "max_new_tokens": 0}, "max_new_tokens", "greater than or equal to 1"),
        ({"texts": ["ein Hund"]}, "text", "Field required"),
        ({"text": "ein Hund", "beam": "2"}, "beam", "integer"),
    ],
)
def test_bad_options_get_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: str, message: str
) -> None:
    r = client.post("/translate", json=body)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert any(e["loc"][-1] == field and message in e["msg"] for e in detail), detail


def test_limits_name_their_setting(make_client: ClientFactory) -> None:
    c = make_client(max_input_chars=20, max_batch_texts=2, max_new_tokens=5)
    r = c.post("/translate", json={"text": "ein Hund läuft über eine Wiese ."})
    assert r.status_code == 413 and "RNN_MAX_INPUT_CHARS" in r.json()["detail"]
    r = c.post("/translate/batch", json={"texts": ["a", "b", "c"]})
    assert r.status_code == 413 and "RNN_MAX_BATCH_TEXTS" in r.json()["detail"]
    r = c.post("/translate", json={"text": "ein Hund", "max_new_tokens": 6})
    assert r.status_code == 422 and "RNN_MAX_NEW_TOKENS" in r.text
    short = c.post("/translate", json={"text": "ein Hund läuft .", "max_new_tokens": 2, "alignment": True}).json()
    assert short["translation"] == "a dog" and len(short["alignment"]) == 2  # two subwords, then the cap ends it


def test_batch_keeps_input_order(client: TestClient) -> None:
    texts = [source for source, _ in reversed(PARALLEL)]
    r = client.post("/translate/batch", json={"texts": texts})
    assert [x["translation"] for x in r.json()["results"]] == [target for _, target in reversed(PARALLEL)]


def test_requests_in_flight_share_decoding_batches(settings_for: SettingsFor) -> None:
    """Texts of concurrent requests are decoded together (the batch-size histogram sees batches over 1), and each
    answer is its own text's."""

    async def scenario() -> tuple[list[str], str]:
        app = create_app(settings_for(batch_max_wait_ms=50))
        async with serving(app) as c:
            answers = await asyncio.gather(*(c.post("/translate", json={"text": source}) for source, _ in PARALLEL * 3))
            return [a.json()["translation"] for a in answers], (await c.get("/metrics")).text

    translations, metrics = asyncio.run(scenario())
    assert translations == [target for _, target in PARALLEL * 3]
    count = metric(metrics, "rnn_batch_size_count", model="translator")
    assert count is not None and count < len(PARALLEL) * 3


def test_a_request_joins_the_steps_of_one_in_flight(settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch) -> None:
    """Step-level batching: a request that arrives while another is decoding joins its search at the next step
    (the first steps decode one text, later ones both; the batch-size histogram, observed as texts join, sees 1
    and then 2), and both answers are their own texts'."""
    real_step = BeamSearch.step
    sizes: list[int] = []
    stepping = threading.Event()

    def step(self: BeamSearch) -> Any:
        sizes.append(len(self))
        stepping.set()
        time.sleep(0.05)  # the first text takes several steps: time for the second to arrive mid-way
        return real_step(self)

    monkeypatch.setattr(BeamSearch, "step", step)
    (long_source, long_target), (short_source, short_target) = PARALLEL[3], PARALLEL[0]

    async def scenario() -> tuple[list[str], str]:
        app = create_app(settings_for(batch_max_wait_ms=0))
        async with serving(app) as c:
            sizes.clear()  # the warm-up's steps
            stepping.clear()

            async def ask(text: str, after_first_step: bool) -> str:
                while after_first_step and not stepping.is_set():
                    await asyncio.sleep(0.005)
                return (await c.post("/translate", json={"text": text, "beam": 2})).json()["translation"]

            answers = await asyncio.gather(ask(long_source, False), ask(short_source, True))
            return list(answers), (await c.get("/metrics")).text

    answers, metrics = asyncio.run(scenario())
    assert answers == [long_target, short_target]
    assert sizes[0] == 1 and 2 in sizes
    assert metric(metrics, "rnn_batch_size_count", model="translator") == 2
    assert metric(metrics, "rnn_batch_size_sum", model="translator") == 3


def test_a_request_that_times_out_mid_search_leaves_the_engine_serving(
    settings_for: SettingsFor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request whose texts are dropped mid-search (its timeout) takes them out of the search: the next
    request gets its own answer, and nothing of the first comes back."""
    real_step = BeamSearch.step
    slow = [True]

    def step(self: BeamSearch) -> Any:
        if slow[0]:
            time.sleep(0.03)
        return real_step(self)

    monkeypatch.setattr(BeamSearch, "step", step)

    async def scenario() -> tuple[int, dict[str, Any]]:
        app = create_app(settings_for(request_timeout_s=0.05))
        async with serving(app) as c:
            first = await c.post("/translate", json={"text": PARALLEL[3][0]})
            await asyncio.sleep(0.1)  # the collector sees the first request gone
            slow[0] = False
            second = await c.post("/translate", json={"text": PARALLEL[1][0]})
            return first.status_code, second.json()

    status, second = asyncio.run(scenario())
    assert status == 503
    assert second["translation"] == PARALLEL[1][1]


def test_the_model_is_listed_with_its_decoding_defaults(client: TestClient) -> None:
    models = {m["name"]: m for m in client.get("/models").json()}
    assert models["translator"]["task"] == "translation"
    assert models["translator"]["architecture"]["cell"] == "gru"
    assert models["translator"]["architecture"]["attention"] in ("multiplicative", "additive", "none")
