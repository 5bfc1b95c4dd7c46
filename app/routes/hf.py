"""The Hugging Face protocols over HTTP (their shapes: app/protocols/hf.py).

- per model, the Inference API at /models/{name}: POST answers the model's task (TGI's text generation, text
  classification, token classification), GET is its card, /info and /health as an Inference Endpoint has them;
- TGI's routes at the root for the default generator: POST / (with `stream`), /generate_stream, GET /info (POST
  /generate with TGI's body: app/routes/generator.py);
- TEI's POST /predict for the default classifier.
Errors in their shape: `{"error", "error_type"}` (app/routes/errors.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Path, Request

from app.config import MODEL_NAME, Settings
from app.deps import answering, classifier, generator, model_named, require_api_key, settings_of
from app.protocols.hf import (
    MAX_STOP,
    TGI_DEFAULT_MAX_NEW_TOKENS,
    ClassificationRequest,
    LabelScore,
    PredictRequest,
    TGIAnswer,
    TGIRequest,
    TGIResponse,
    TokenClassificationRequest,
    TranslationRequest,
    is_bio,
    label_scores,
    token_entities,
)
from app.routes.errors import (
    HF_ERRORS,
    check_batch,
    check_length,
    check_new_tokens,
    in_time,
    overloaded,
    read_json,
    refuse,
    timed_out,
    validated,
)
from app.routes.health import card
from app.routes.sse import EventReader, EventStream, sse
from app.schemas import ModelCard, add_schema, blank, limit_integer, limit_texts
from app.serving.generator import EngineFull, GeneratorEngine, Stream, collect
from app.serving.registry import Engine
from app.serving.sentiment import ClassifierEngine
from app.serving.tagger import TaggerEngine
from app.serving.translator import TranslatorEngine
from model.generator.sampling import TokenLogprob, prompt_logprobs

router = APIRouter(tags=["hugging face"], responses=HF_ERRORS)  # the API-key check for the POSTs: app/main.py
# the GETs: a model's card and info, behind the key as /models is
info_router = APIRouter(tags=["hugging face"], responses=HF_ERRORS, dependencies=[Depends(require_api_key)])

PIPELINE_TAGS = {"generator": "text-generation", "sentiment": "text-classification", "tagger": "token-classification",
                 "translator": "translation"}  # fmt: skip
NAME = Path(..., pattern=MODEL_NAME, description="a model's name in GET /models", examples=["generator"])


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py)."""
    schemas["TGIRequest"]["properties"]["inputs"]["maxLength"] = settings.max_input_chars
    add_schema(schemas, ClassificationRequest)  # POST /models/{name} reads its body itself
    add_schema(schemas, TokenClassificationRequest)
    for name in ("ClassificationRequest", "TokenClassificationRequest", "PredictRequest"):
        limit_texts(schemas[name]["properties"]["inputs"], settings.max_input_chars, settings.max_batch_texts)
    limit_integer(schemas["TGIParameters"]["properties"]["max_new_tokens"], settings.max_new_tokens)


# ---------------------------------------------------------------------------------------------- generation
async def tgi_generate(body: TGIRequest, request: Request, engine: GeneratorEngine, listed: bool) -> Any:
    """Answer a TGI request: TGI's JSON (in a list, as POST / and the Inference API give it, when `listed`), or
    its server-sent events when `stream`."""
    settings = settings_of(request)
    refuse(body.unsupported())
    p = body.parameters
    check_length(body.inputs, settings.max_input_chars, "inputs")
    prompt = body.inputs if p.truncate is None else body.inputs[-p.truncate :]  # TGI keeps the last tokens
    max_new = p.max_new_tokens or min(TGI_DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens)
    check_new_tokens(max_new, settings.max_new_tokens, ("body", "parameters", "max_new_tokens"))
    try:
        stream = engine.submit(prompt, p.sampling_params(max_new), streaming=body.stream, logprobs=p.top_n_tokens or 0)
    except EngineFull as exc:
        raise overloaded(str(exc)) from None
    answer = TGIAnswer(body, prompt, engine.table, engine.specials, input_length=len(stream.prompt_ids))
    timeout = settings.request_timeout_s
    if body.stream:
        return EventStream(_tgi_events(stream, answer, timeout), [stream])
    try:
        result = await collect(stream, timeout)
    except TimeoutError:
        raise timed_out(timeout) from None
    finally:
        stream.cancel()
    prefill: list[TokenLogprob] = []
    if p.details and p.decoder_input_details:
        net, tokenizer = engine.model.network, engine.model.tokenizer
        prefill = await asyncio.to_thread(prompt_logprobs, net, tokenizer, prompt, engine.table)
    response = answer.response(result, stream.scored, prefill)
    return [response] if listed else response


async def _tgi_events(stream: Stream, answer: TGIAnswer, timeout: float) -> AsyncIterator[str]:
    """TGI's events: one per token, numbered from 1; the last also carries generated_text (and details). One
    token is held back so that the last event can carry both."""
    held: TokenLogprob | None = None
    index = 0
    reader = EventReader(stream, timeout)
    while True:
        out: list[str] = []
        for event in await reader.next():
            if event.kind == "tokens":
                for t in event.tokens:
                    if held is not None:
                        index += 1
                        out.append(sse(answer.event(index, held)))
                    held = t
            elif event.kind == "done" and held is not None:
                assert event.result is not None
                out.append(sse(answer.last_event(index + 1, held, event.result, stream.scored)))
                yield "".join(out)
                return
            else:
                out.append(sse({"error": event.text or "no token was generated", "error_type": "generation"}))
                yield "".join(out)
                return
        if out:
            yield "".join(out)
            await reader.pause()


@router.post("/", response_model=None,
             responses={200: {"model": list[TGIResponse], "content": {"text/event-stream": {}}}})  # fmt: skip
async def tgi_root(body: TGIRequest, request: Request) -> Any:
    """TGI's compatibility route: the default generator, `[{"generated_text": ...}]`, or events with `stream`."""
    return await tgi_generate(body, request, generator(request), listed=True)


@router.post("/generate_stream", responses={200: {"content": {"text/event-stream": {}}}})
async def tgi_generate_stream(body: TGIRequest, request: Request) -> EventStream:
    """TGI's streaming route: one event per token, the last with `generated_text` (and `details`)."""
    body.stream = True
    answer: EventStream = await tgi_generate(body, request, generator(request), listed=False)
    return answer


def _info(name: str, engine: Engine, request: Request) -> dict[str, Any]:
    """What TGI's GET /info reports, where it applies here (TEI's fields for a classifier)."""
    settings = settings_of(request)
    artifact = engine.model.artifact
    info: dict[str, Any] = {
        "model_id": name,
        "model_sha": artifact.sha256,
        "model_dtype": "float32",
        "model_device_type": "cpu",
        "model_pipeline_tag": PIPELINE_TAGS.get(engine.kind, engine.kind),
        "max_concurrent_requests": settings.max_concurrent_requests,
        "max_input_tokens": settings.max_input_chars,
        "max_input_length": settings.max_input_chars,
        "max_client_batch_size": settings.max_batch_texts,
        "router": "rnn-nlp-service",
        "version": request.app.version,
        "sha": None,
        "docker_label": None,
    }
    if isinstance(engine, GeneratorEngine):
        info.update(max_best_of=1, max_stop_sequences=MAX_STOP, max_total_tokens=settings.max_input_chars +
                    settings.max_new_tokens, max_streams=engine.max_streams)  # fmt: skip
    elif isinstance(engine, ClassifierEngine):
        labels = engine.model.labels
        info["model_type"] = {"classifier": {"id2label": dict(enumerate(map(str, labels))),
                                             "label2id": {label: i for i, label in enumerate(labels)}}}  # fmt: skip
    return info


@info_router.get("/info")
async def tgi_info(request: Request) -> dict[str, Any]:
    """TGI's endpoint information, for the default generator."""
    return _info("generator", generator(request), request)


# ---------------------------------------------------------------------------------------------- per model
@info_router.get("/models/{name}", response_model=ModelCard)
async def model_card(request: Request, name: str = NAME) -> dict[str, Any]:
    """The model's card (as in GET /models)."""
    engine = model_named(request, name)
    return card(name, engine, request.app)


@info_router.get("/models/{name}/info")
async def model_info(request: Request, name: str = NAME) -> dict[str, Any]:
    """The model's endpoint information (`InferenceClient(base_url=.../models/{name}).get_endpoint_info()`)."""
    return _info(name, model_named(request, name), request)


@info_router.get("/models/{name}/health")
async def model_health(request: Request, name: str = NAME) -> dict[str, str]:
    """200 while the model is loaded (`InferenceClient.health_check()`)."""
    model_named(request, name)
    return {"status": "ok"}


MODEL_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"anyOf": [
        {"$ref": "#/components/schemas/TGIRequest"},
        {"$ref": "#/components/schemas/ClassificationRequest"},
        {"$ref": "#/components/schemas/TokenClassificationRequest"},
    ]}}},
}  # fmt: skip


@router.post("/models/{name}", openapi_extra={"requestBody": MODEL_BODY},
             responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
async def model_task(request: Request, name: str = NAME) -> Any:
    """The model's task in the Hugging Face Inference API's protocol, as `InferenceClient(base_url=
    .../models/{name})` calls it: `text_generation` (TGI's body and answers) for a generator,
    `text_classification` (`[[{"label", "score"}, ...]]`, every label, best first) for a classifier,
    `token_classification` for a tagger, `translation` (`[{"translation_text"}]`) for a translator. `inputs` may
    also be a list of texts (one answer each) for the last three.
    """
    engine = answering(request, model_named(request, name))
    payload = await read_json(request)
    if isinstance(engine, GeneratorEngine):
        return await tgi_generate(validated(TGIRequest, payload), request, engine, listed=True)
    settings = settings_of(request)
    if isinstance(engine, ClassifierEngine):
        body = validated(ClassificationRequest, payload)
        refuse(body.unsupported())
        texts = _texts(body.inputs, settings)
        results = await in_time(engine.classify(texts), settings.request_timeout_s)
        raw, top_k = body.parameters.function_to_apply == "none", body.parameters.top_k
        return [label_scores(r, raw, top_k) for r in results]
    if isinstance(engine, TranslatorEngine):
        translation = validated(TranslationRequest, payload)
        texts = _texts(translation.inputs, settings)
        given = translation.parameters.generate_parameters
        cap = given.max_new_tokens if given is not None else None
        if cap is not None:
            check_new_tokens(
                cap, settings.max_new_tokens, ("body", "parameters", "generate_parameters", "max_new_tokens")
            )
        params = engine.model.params(beam=given.num_beams if given is not None else None,
                                     max_new_tokens=cap if cap is not None else settings.max_new_tokens)  # fmt: skip
        results = await in_time(engine.translate(texts, params), settings.request_timeout_s)
        return [{"translation_text": r["translation"]} for r in results]
    assert isinstance(engine, TaggerEngine)
    tagging = validated(TokenClassificationRequest, payload)
    texts = _texts(tagging.inputs, settings)
    tagged = await in_time(engine.tag_texts(texts), settings.request_timeout_s)
    bio = is_bio(engine.model.labels)
    entities = [token_entities(text, t, tagging.parameters, bio) for text, t in zip(texts, tagged, strict=True)]
    return entities[0] if isinstance(tagging.inputs, str) else entities


@router.post("/predict", response_model=list[LabelScore] | list[list[LabelScore]])
async def tei_predict(body: PredictRequest, request: Request) -> Any:
    """TEI's prediction route, for the default classifier: every label with its probability, best first (a list
    of those for a list of texts). `raw_scores`: log-probabilities."""
    engine, settings = classifier(request), settings_of(request)
    refuse(body.unsupported())
    texts = _texts(body.inputs, settings)
    results = await in_time(engine.classify(texts), settings.request_timeout_s)
    scores = [label_scores(r, body.raw_scores) for r in results]
    return scores[0] if isinstance(body.inputs, str) else scores


def _texts(inputs: str | list[str], settings: Settings) -> list[str]:
    """The texts of `inputs`, within the limits, none blank."""
    texts = [inputs] if isinstance(inputs, str) else inputs
    check_batch(len(texts), settings.max_batch_texts, "inputs")
    for i, text in enumerate(texts):
        where = "inputs" if isinstance(inputs, str) else f"inputs[{i}]"
        check_length(text, settings.max_input_chars, where)
        if blank(text):
            loc = ("inputs",) if isinstance(inputs, str) else ("inputs", str(i))
            refuse([(loc, f"{where} must contain at least one non-whitespace character")])
    return texts
