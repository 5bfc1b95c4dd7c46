"""POST /generate and /generate/stream (Server-Sent Events); POST /generate also reads TGI's body."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from app.config import Settings
from app.deps import generator, settings_of
from app.protocols.hf import TGIRequest
from app.routes.errors import MODEL_ERRORS, check_length, check_new_tokens, overloaded, read_json, timed_out, validated
from app.routes.hf import tgi_generate
from app.routes.sse import EventReader, EventStream, sse
from app.schemas import GenerateRequest, GenerateResponse, add_schema
from app.serving.generator import EngineFull, GeneratorEngine, Stream, collect
from model.generator.sampling import SamplingParams

router = APIRouter(prefix="/generate", tags=["generate"], responses=MODEL_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py), and holds the answer that POST
    /generate documents by reference (it reads its body itself, so FastAPI does not add the model)."""
    add_schema(schemas, GenerateResponse)
    generate = schemas["GenerateRequest"]["properties"]
    generate["prompt"]["maxLength"] = settings.max_input_chars
    generate["max_new_tokens"]["maximum"] = settings.max_new_tokens
    generate["max_new_tokens"]["default"] = min(generate["max_new_tokens"]["default"], settings.max_new_tokens)


def _start(body: GenerateRequest, engine: GeneratorEngine, settings: Settings, streaming: bool) -> Stream:
    check_length(body.prompt, settings.max_input_chars, "prompt")
    if "max_new_tokens" not in body.model_fields_set:  # the default never exceeds the configured limit
        body.max_new_tokens = min(body.max_new_tokens, settings.max_new_tokens)
    check_new_tokens(body.max_new_tokens, settings.max_new_tokens, ("body", "max_new_tokens"))
    params = SamplingParams(
        max_new_tokens=body.max_new_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
        repetition_penalty=body.repetition_penalty, stop=tuple(body.stop), seed=body.seed,
    )  # fmt: skip
    try:
        return engine.submit(body.prompt, params, streaming=streaming)
    except EngineFull as exc:
        raise overloaded(str(exc)) from None


GENERATE_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"anyOf": [
        {"$ref": "#/components/schemas/GenerateRequest"}, {"$ref": "#/components/schemas/TGIRequest"},
    ]}}},
}  # fmt: skip
GENERATE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [
                        {"$ref": "#/components/schemas/GenerateResponse"},
                        {"$ref": "#/components/schemas/TGIResponse"},
                    ]
                }
            },
            "text/event-stream": {},
        }
    },
    422: {"description": "a field is invalid: FastAPI's `detail` list, or TGI's `{error, error_type}` for its body"},
}
GENERATE_ANSWERS |= {  # the other errors: this service's shape, or TGI's for its body
    code: {"description": answer["description"], "content": {"application/json": {"schema": {"anyOf": [
        {"$ref": "#/components/schemas/ErrorResponse"}, {"$ref": "#/components/schemas/HFError"},
    ]}}}} for code, answer in MODEL_ERRORS.items()
}  # fmt: skip


@router.post("", response_model=None, openapi_extra={"requestBody": GENERATE_BODY}, responses=GENERATE_ANSWERS)
async def generate(request: Request) -> Any:
    """Generate text after `prompt`; the answer excludes the prompt and any stop sequence. A TGI body
    (`{"inputs", "parameters"}`) gets TGI's answer instead, as TGI's own POST /generate gives it."""
    payload = await read_json(request)
    if isinstance(payload, dict) and "inputs" in payload:
        request.state.protocol = "hf"  # its errors in TGI's shape (app/routes/errors.py)
        return await tgi_generate(validated(TGIRequest, payload), request, generator(request), listed=False)
    body = validated(GenerateRequest, payload)
    engine, settings = generator(request, body.model), settings_of(request)
    stream = _start(body, engine, settings, streaming=False)
    try:
        result = await collect(stream, settings.request_timeout_s)
    except TimeoutError:
        raise timed_out(settings.request_timeout_s) from None
    finally:
        stream.cancel()  # a no-op when it finished; frees the slot when the client left or timed out
    return {
        "generated_text": result.text,
        "finish_reason": result.finish_reason,
        "generated_tokens": result.tokens,
        "seed": result.seed,
    }


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _token_sse(text: str, index: int) -> str:
    """sse() of a token event that is not the last, byte for byte, without json.dumps per token (the hot path:
    a character model's pieces repeat, so their quoted forms are cached)."""
    return (
        f'data: {{"token": {{"text": {_quoted(text)}, "index": {index}}}, "generated_text": null, "details": null}}\n\n'
    )


async def _events(stream: Stream, timeout: float) -> AsyncIterator[str]:
    """One event per token; the last one also carries generated_text and details. One token is held back so the
    final event can carry both. Tokens that queued up since the last write go out in one write."""
    held: tuple[str, int] | None = None  # (text, index)
    reader = EventReader(stream, timeout)
    while True:
        out: list[str] = []
        for event in await reader.next():
            if event.kind == "tokens":
                for index, piece in enumerate(event.pieces, event.index):
                    if held is not None:
                        out.append(_token_sse(*held))
                    held = (piece, index)
            elif event.kind == "done":
                assert event.result is not None
                text, index = held or ("", 0)
                r = event.result
                details = {"finish_reason": r.finish_reason, "generated_tokens": r.tokens, "seed": r.seed}
                out.append(sse({"token": {"text": text, "index": index}, "generated_text": r.text,
                                "details": details}))  # fmt: skip
                yield "".join(out)
                return
            else:
                out.append(f"event: error\n{sse({'error': event.text})}")
                yield "".join(out)
                return
        if out:
            yield "".join(out)
            await reader.pause()  # the next COALESCE_S's tokens go out in one write


@router.post("/stream", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(body: GenerateRequest, request: Request) -> StreamingResponse:
    """The same request, answered as Server-Sent Events, one per generated token."""
    engine, settings = generator(request, body.model), settings_of(request)
    stream = _start(body, engine, settings, streaming=True)
    return EventStream(_events(stream, settings.request_timeout_s), [stream])
