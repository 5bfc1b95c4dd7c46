"""The clients people already have, unmodified, against the real server (`python -m app` on 127.0.0.1):
`huggingface_hub.InferenceClient` (TGI's generation, the Inference API's text and token classification, endpoint
info) and the `openai` SDK (completions, models), with the API key passed each client's usual way. What each
answers is checked against the service's own routes and against the model itself (log-probabilities)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError, OverloadedError, ValidationError

from model.generator.predictor import GeneratorModel, load_generator
from model.generator.sampling import id_to_text
from model.tasks import TASKS
from tests.app.conftest import LABELS, PARALLEL, Artifacts, Server, running_server

pytestmark = pytest.mark.slow
KEY = "client-test-key"


@pytest.fixture(scope="module")
def server(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(artifacts, tmp_path_factory.mktemp("clients"), log_level="warning") as running:
        yield running


@pytest.fixture(scope="module")
def hf(server: Server) -> InferenceClient:
    return InferenceClient(base_url=server.url, api_key=None)


@pytest.fixture(scope="module")
def oa(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def reference(artifacts: Artifacts) -> GeneratorModel:
    return load_generator(artifacts.generator)


def model_logprobs(model: GeneratorModel, prompt: str, generated_ids: list[int]) -> list[float]:
    """The model's own log-probability of each generated token after the prompt (a torch forward, not the
    service's NumPy stepper)."""
    ids = model.tokenizer.encode(prompt, add_special_tokens=False).ids + generated_ids
    with torch.inference_mode():
        logits, _ = model.network(torch.tensor([ids]))
    lp = torch.log_softmax(logits[0].double(), -1).numpy()
    start = len(ids) - len(generated_ids)
    return [float(lp[t - 1, ids[t]]) for t in range(start, len(ids))]


# ------------------------------------------------------------------------------------ huggingface_hub: TGI
def test_text_generation_plain_is_the_services_own_answer_for_the_seed(hf: InferenceClient, server: Server) -> None:
    text = hf.text_generation("All:", max_new_tokens=30, do_sample=True, seed=5)
    assert isinstance(text, str) and text
    assert hf.text_generation("All:", max_new_tokens=30, do_sample=True, seed=5) == text
    ours = httpx.post(f"{server.url}/generate", json={"prompt": "All:", "max_new_tokens": 30, "seed": 5}).json()
    assert ours["generated_text"] == text  # no stop sequence: the same text through this service's own route
    tgi = httpx.post(f"{server.url}/generate", json={"inputs": "All:", "parameters": {"max_new_tokens": 30,
                     "do_sample": True, "seed": 5}}).json()  # fmt: skip
    assert tgi == {"generated_text": text}  # TGI's POST /generate: an object; POST /: a list of one


def test_text_generation_is_greedy_unless_asked_to_sample_as_tgi_is(hf: InferenceClient) -> None:
    greedy = hf.text_generation("All:", max_new_tokens=20, details=True)
    assert greedy.details is not None and greedy.details.seed is None
    assert hf.text_generation("All:", max_new_tokens=20, seed=99) == greedy.generated_text  # a seed alone: greedy
    sampled = hf.text_generation("All:", max_new_tokens=20, temperature=0.7, seed=1, details=True)
    assert sampled.details is not None and sampled.details.seed == 1  # a temperature samples


def test_details_report_each_token_with_the_models_real_logprob(hf: InferenceClient, reference: GeneratorModel) -> None:
    out = hf.text_generation("All:", max_new_tokens=25, do_sample=True, seed=11, details=True)
    d = out.details
    assert d is not None
    assert (d.finish_reason, d.generated_tokens, d.seed) == ("length", 25, 11)
    assert "".join(t.text for t in d.tokens) == out.generated_text
    table = id_to_text(reference.tokenizer)
    assert [table[t.id] for t in d.tokens] == [t.text for t in d.tokens]
    expected = model_logprobs(reference, "All:", [t.id for t in d.tokens])
    np.testing.assert_allclose([t.logprob for t in d.tokens], expected, atol=1e-4)
    vocab = reference.tokenizer.get_vocab()
    assert [t.special for t in d.tokens] == [t.id in (vocab["[PAD]"], vocab["[UNK]"]) for t in d.tokens]


def test_decoder_input_details_and_top_n_tokens(hf: InferenceClient, reference: GeneratorModel) -> None:
    out = hf.text_generation("All:", max_new_tokens=6, do_sample=True, seed=2, details=True,
                             decoder_input_details=True, top_n_tokens=3)  # fmt: skip
    d = out.details
    assert d is not None
    assert "".join(t.text for t in d.prefill) == "All:" and d.prefill[0].logprob is None
    ids = [t.id for t in d.prefill]
    np.testing.assert_allclose([t.logprob for t in d.prefill[1:]], model_logprobs(reference, "A", ids[1:]), atol=1e-4)
    assert d.top_tokens is not None and len(d.top_tokens) == 6
    for top, token in zip(d.top_tokens, d.tokens, strict=True):  # the client leaves these as dicts
        assert len(top) == 3 and top[0]["logprob"] >= top[1]["logprob"] >= top[2]["logprob"]
        assert token.logprob <= top[0]["logprob"] + 1e-9


def test_streaming_gives_the_same_text_token_by_token(hf: InferenceClient) -> None:
    plain = hf.text_generation("All:", max_new_tokens=40, do_sample=True, seed=8)
    assert "".join(hf.text_generation("All:", max_new_tokens=40, do_sample=True, seed=8, stream=True)) == plain
    events = list(hf.text_generation("All:", max_new_tokens=40, do_sample=True, seed=8, stream=True, details=True))
    assert [e.index for e in events] == list(range(1, 41))
    assert all(e.generated_text is None and e.details is None for e in events[:-1])
    last = events[-1]
    assert last.generated_text == plain
    assert last.details is not None and (last.details.finish_reason, last.details.seed) == ("length", 8)
    assert last.details.input_length == 4


def test_stop_sequences_end_the_text_with_the_stop_as_tgi_does(hf: InferenceClient) -> None:
    full = hf.text_generation("All:", max_new_tokens=60, do_sample=True, seed=4)
    stop = full[10:12]
    out = hf.text_generation("All:", max_new_tokens=60, do_sample=True, seed=4, stop=[stop], details=True)
    assert out.details is not None and out.details.finish_reason == "stop_sequence"
    cut = full.index(stop) + len(stop)
    assert out.generated_text == full[:cut]  # TGI keeps the stop sequence; OpenAI (below) leaves it out
    streamed = "".join(hf.text_generation("All:", max_new_tokens=60, do_sample=True, seed=4, stop=[stop], stream=True))
    assert streamed == full[:cut]


def test_return_full_text_and_truncate(hf: InferenceClient) -> None:
    text = hf.text_generation("Speak, All:", max_new_tokens=10, do_sample=True, seed=3, truncate=4)
    assert hf.text_generation("All:", max_new_tokens=10, do_sample=True, seed=3) == text  # the last 4 characters
    full = hf.text_generation("All:", max_new_tokens=10, do_sample=True, seed=3, return_full_text=True)
    assert full == "All:" + text


def test_a_parameter_it_cannot_honour_raises_the_clients_validation_error(hf: InferenceClient) -> None:
    for kwargs in ({"grammar": {"type": "json", "value": {}}}, {"watermark": True}, {"adapter_id": "lora"},
                   {"typical_p": 0.5}, {"best_of": 2}):  # fmt: skip
        with pytest.raises(ValidationError, match=next(iter(kwargs))):
            hf.text_generation("All:", max_new_tokens=5, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="RNN_MAX_NEW_TOKENS"):
        hf.text_generation("All:", max_new_tokens=100_000)
    with pytest.raises(ValidationError, match="temperature"):
        hf.text_generation("All:", temperature=-1.0)


def test_a_generator_by_name_and_the_endpoint_info(server: Server, hf: InferenceClient) -> None:
    by_name = InferenceClient(base_url=f"{server.url}/models/generator")
    assert by_name.text_generation("All:", max_new_tokens=15, do_sample=True, seed=6) == hf.text_generation(
        "All:", max_new_tokens=15, do_sample=True, seed=6
    )
    info = InferenceClient(model=server.url, provider="hf-inference").get_endpoint_info()
    assert info["model_id"] == "generator" and info["model_pipeline_tag"] == "text-generation"
    assert info["max_stop_sequences"] == 4 and info["max_input_tokens"] == 2000
    endpoint = InferenceClient(model=f"{server.url}/models/sentiment", provider="hf-inference")
    assert endpoint.get_endpoint_info()["model_pipeline_tag"] == "text-classification"
    assert endpoint.health_check()
    with pytest.raises(HfHubHTTPError) as missing:
        InferenceClient(base_url=f"{server.url}/models/nothing").text_generation("All:")
    assert missing.value.response.status_code == 404 and "nothing" in str(missing.value)


# ------------------------------------------------------------------------------------ huggingface_hub: tasks
def test_text_classification_gives_every_label_best_first(server: Server) -> None:
    client = InferenceClient(base_url=f"{server.url}/models/sentiment")
    text = "a good and lovely film"
    out = client.text_classification(text)
    assert sorted(o.label for o in out) == LABELS
    assert out[0].score >= out[1].score and abs(sum(o.score for o in out) - 1) < 1e-6
    ours = httpx.post(f"{server.url}/sentiment", json={"text": text}).json()
    assert {o.label: o.score for o in out} == pytest.approx(ours["probabilities"])
    assert [o.label for o in client.text_classification(text, top_k=1)] == [ours["label"]]
    raw = client.text_classification(text, function_to_apply="none")
    assert [o.score for o in raw] == pytest.approx([np.log(o.score) for o in out])
    with pytest.raises(HfHubHTTPError, match="sigmoid"):
        client.text_classification(text, function_to_apply="sigmoid")


def test_token_classification_gives_each_word_its_tag_and_offsets(server: Server) -> None:
    client = InferenceClient(base_url=f"{server.url}/models/tagger")
    text = "They saw a saw."
    out = client.token_classification(text)
    ours = httpx.post(f"{server.url}/tag", json={"text": text}).json()["tokens"]
    assert [(o.word, o.entity, o.start, o.end) for o in out] == [(t["text"], t["tag"], t["start"], t["end"])
                                                                 for t in ours]  # fmt: skip
    assert [o.entity for o in out] == ["PRON", "VERB", "DET", "NOUN", "PUNCT"]
    assert all(text[o.start : o.end] == o.word for o in out)
    grouped = client.token_classification(text, aggregation_strategy="simple", ignore_labels=["PUNCT"])
    assert [(g.entity_group, g.word) for g in grouped] == [("PRON", "They"), ("VERB", "saw"), ("DET", "a"),
                                                          ("NOUN", "saw")]  # fmt: skip


def test_translation_is_the_services_own_answer(server: Server) -> None:
    client = InferenceClient(base_url=f"{server.url}/models/translator")
    for source, target in PARALLEL:
        assert client.translation(source).translation_text == target
    beam_one = client.translation(PARALLEL[0][0], src_lang="de", tgt_lang="en", generate_parameters={"num_beams": 1})
    ours = httpx.post(f"{server.url}/translate", json={"text": PARALLEL[0][0], "beam": 1}).json()
    assert beam_one.translation_text == ours["translation"]
    with pytest.raises(HfHubHTTPError, match="temperature"):  # a setting it cannot honour is refused by name
        client.translation(PARALLEL[0][0], generate_parameters={"temperature": 0.5})


def test_tei_predict(server: Server) -> None:
    one = httpx.post(f"{server.url}/predict", json={"inputs": "a good and lovely film"})
    assert one.status_code == 200 and [p["label"] for p in one.json()] != []
    assert one.json()[0]["score"] >= one.json()[1]["score"]
    many = httpx.post(f"{server.url}/predict", json={"inputs": ["a good film", "dull"], "raw_scores": True}).json()
    assert len(many) == 2 and all(p["score"] <= 0 for row in many for p in row)
    refused = httpx.post(f"{server.url}/predict", json={"inputs": "x", "truncate": True})
    assert refused.status_code == 422 and refused.json()["error_type"] == "validation"


# ------------------------------------------------------------------------------------ openai
def test_completion_is_the_same_text_as_the_other_protocols_for_the_seed(
    oa: openai.OpenAI, hf: InferenceClient
) -> None:
    out = oa.completions.create(model="generator", prompt="All:", max_tokens=30, seed=5, user="tester")
    assert out.object == "text_completion" and out.model == "generator" and out.id.startswith("cmpl-")
    [choice] = out.choices
    assert choice.text == hf.text_generation("All:", max_new_tokens=30, do_sample=True, seed=5)
    assert choice.finish_reason == "length" and choice.index == 0
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (4, 30, 34)


def test_n_completions_and_a_list_of_prompts(oa: openai.OpenAI) -> None:
    out = oa.completions.create(model="generator", prompt=["All:", "First"], max_tokens=12, n=3, seed=20)
    assert [c.index for c in out.choices] == list(range(6))
    texts = [c.text for c in out.choices]
    assert len(set(texts[:3])) == 3  # each choice its own seed: seed + i
    for i in range(3):
        single = oa.completions.create(model="generator", prompt="All:", max_tokens=12, seed=20 + i)
        assert single.choices[0].text == texts[i]
    assert out.usage is not None and out.usage.completion_tokens == 72


def test_streaming_gives_the_same_text_and_the_usage(oa: openai.OpenAI) -> None:
    plain = oa.completions.create(model="generator", prompt=["All:", "First"], max_tokens=40, n=2, seed=3)
    chunks = list(oa.completions.create(model="generator", prompt=["All:", "First"], max_tokens=40, n=2, seed=3,
                                        stream=True, stream_options={"include_usage": True}))  # fmt: skip
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    for chunk in chunks[:-1]:
        [c] = chunk.choices
        texts[c.index] = texts.get(c.index, "") + c.text
        reasons[c.index] = c.finish_reason or reasons.get(c.index)
    assert texts == {c.index: c.text for c in plain.choices}
    assert reasons == dict.fromkeys(range(4), "length")
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_stop_sequences_are_left_out_as_openai_does(oa: openai.OpenAI) -> None:
    full = oa.completions.create(model="generator", prompt="All:", max_tokens=60, seed=4).choices[0].text
    stop = full[10:12]
    out = oa.completions.create(model="generator", prompt="All:", max_tokens=60, seed=4, stop=stop)
    assert out.choices[0].finish_reason == "stop" and out.choices[0].text == full[: full.index(stop)]
    streamed = oa.completions.create(model="generator", prompt="All:", max_tokens=60, seed=4, stop=[stop], stream=True)
    assert "".join(c.choices[0].text for c in streamed) == full[: full.index(stop)]


def test_logprobs_and_echo(oa: openai.OpenAI, hf: InferenceClient) -> None:
    out = oa.completions.create(model="generator", prompt="All:", max_tokens=10, seed=9, logprobs=2, echo=True)
    [choice] = out.choices
    lp = choice.logprobs
    assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
    assert choice.text.startswith("All:") and "".join(lp.tokens) == choice.text
    assert lp.token_logprobs[0] is None and lp.text_offset == [sum(map(len, lp.tokens[:i])) for i in range(14)]
    details = hf.text_generation("All:", max_new_tokens=10, do_sample=True, seed=9, details=True).details
    assert details is not None
    assert lp.token_logprobs[4:] == pytest.approx([t.logprob for t in details.tokens])
    assert lp.top_logprobs is not None and all(len(top) == 2 for top in lp.top_logprobs[1:])
    streamed = oa.completions.create(model="generator", prompt="All:", max_tokens=10, seed=9, logprobs=0, stream=True)
    tokens = [t for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens or []]
    assert "".join(tokens) == choice.text[4:]
    echo_only = oa.completions.create(model="generator", prompt="All:", max_tokens=0, echo=True, logprobs=0)
    assert echo_only.choices[0].text == "All:" and echo_only.usage is not None
    assert echo_only.usage.completion_tokens == 0


def test_models_list_and_retrieve(oa: openai.OpenAI) -> None:
    assert [m.id for m in oa.models.list()] == list(TASKS)
    model = oa.models.retrieve("generator")
    assert model.id == "generator" and model.owned_by == "rnn-nlp-service" and model.created > 0


def test_errors_are_the_sdks_own_exceptions_with_the_message(oa: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="nothing"):
        oa.completions.create(model="nothing", prompt="All:")
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("nothing")
    with pytest.raises(openai.BadRequestError, match="sentiment model"):
        oa.completions.create(model="sentiment", prompt="All:")
    with pytest.raises(openai.BadRequestError, match="frequency_penalty") as bad:
        oa.completions.create(model="generator", prompt="All:", frequency_penalty=1.0)
    assert bad.value.param == "frequency_penalty" and bad.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match="temperature"):
        oa.completions.create(model="generator", prompt="All:", temperature=3.0)
    with pytest.raises(openai.BadRequestError, match="RNN_MAX_NEW_TOKENS"):
        oa.completions.create(model="generator", prompt="All:", max_tokens=100_000)


# ------------------------------------------------------------------------------------ keys and overload
@pytest.fixture(scope="module")
def keyed(artifacts: Artifacts, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server that needs a key, with one generation slot (to overload it)."""
    env = {"RNN_API_KEY": KEY, "RNN_MAX_STREAMS": "1", "RNN_MAX_NEW_TOKENS": "100000"}
    with running_server(artifacts, tmp_path_factory.mktemp("keyed"), log_level="warning", env=env) as running:
        yield running


def test_the_api_key_goes_through_each_clients_usual_way(keyed: Server) -> None:
    assert InferenceClient(base_url=keyed.url, api_key=KEY).text_generation("All:", max_new_tokens=5)
    with pytest.raises(HfHubHTTPError) as denied:
        InferenceClient(base_url=keyed.url, api_key="wrong").text_generation("All:", max_new_tokens=5)
    assert denied.value.response.status_code == 401
    sentiment = InferenceClient(base_url=f"{keyed.url}/models/sentiment", api_key=KEY)
    assert len(sentiment.text_classification("a good film")) == 2
    client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
    assert client.completions.create(model="generator", prompt="All:", max_tokens=5).choices[0].text
    assert [m.id for m in client.models.list()] == list(TASKS)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        openai.OpenAI(base_url=f"{keyed.url}/v1", api_key="wrong", max_retries=0).models.list()


def _hold_the_slot(url: str, started: threading.Event, stop: threading.Event) -> None:
    body = {"prompt": "All:", "max_new_tokens": 100_000}  # seconds of generation, or until the client leaves
    with httpx.stream("POST", f"{url}/generate/stream", json=body, headers={"Authorization": f"Bearer {KEY}"},
                      timeout=30) as r:  # fmt: skip
        for _ in r.iter_lines():
            started.set()
            if stop.is_set():
                return


def test_a_full_engine_raises_each_clients_overload_error(keyed: Server) -> None:
    started, stop = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_the_slot, args=(keyed.url, started, stop))
    holder.start()
    try:
        assert started.wait(10)
        with pytest.raises(OverloadedError, match="slots are busy"):
            InferenceClient(base_url=keyed.url, api_key=KEY).text_generation("All:", max_new_tokens=5)
        client = openai.OpenAI(base_url=f"{keyed.url}/v1", api_key=KEY, max_retries=0)
        with pytest.raises(openai.InternalServerError, match="slots are busy") as busy:
            client.completions.create(model="generator", prompt="All:", max_tokens=5)
        assert busy.value.status_code == 503 and busy.value.response.headers["retry-after"] == "1"
        assert holder.is_alive()  # the slot was held throughout
    finally:
        stop.set()
        holder.join(30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the slot is free again once the held stream is dropped
        try:
            InferenceClient(base_url=keyed.url, api_key=KEY).text_generation("All:", max_new_tokens=5)
            break
        except OverloadedError:
            time.sleep(0.1)
    else:
        pytest.fail("the slot was not freed")


def test_the_http_shapes_each_protocol_documents(server: Server) -> None:
    """What the libraries read, on the wire: TGI's list at POST /, its events, OpenAI's [DONE]."""
    body = {"inputs": "All:", "parameters": {"max_new_tokens": 3, "do_sample": True, "seed": 1}}
    root = httpx.post(f"{server.url}/", json=body)
    assert isinstance(root.json(), list) and set(root.json()[0]) == {"generated_text"}
    stream = httpx.post(f"{server.url}/generate_stream", json=body)
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(line.removeprefix("data:")) for line in stream.text.splitlines() if line.startswith("data:")]
    assert [e["index"] for e in events] == [1, 2, 3] and events[-1]["generated_text"] == root.json()[0][
        "generated_text"
    ]
    assert set(events[0]["token"]) == {"id", "text", "logprob", "special"}
    chunks = httpx.post(f"{server.url}/v1/completions", json={"model": "generator", "prompt": "x", "max_tokens": 2,
                                                              "stream": True}).text  # fmt: skip
    assert chunks.endswith("data: [DONE]\n\n")
    bad: dict[str, Any] = httpx.post(f"{server.url}/v1/completions", json={"model": "generator"}).json()
    assert bad["error"]["type"] == "invalid_request_error" and "prompt" in bad["error"]["message"]
