"""POST /generate and /generate/stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse

from app.config import Settings
from app.deps import GeneratorDep, SettingsDep, require_api_key
from app.routes.errors import ERRORS, overloaded, timed_out
from app.routes.sentiment import check_length
from app.schemas import GenerateRequest, GenerateResponse
from app.serving.generator import EngineFull, Event, GeneratorEngine, Stream, collect
from model.sampling import SamplingParams

router = APIRouter(prefix="/generate", tags=["generate"], dependencies=[Depends(require_api_key)], responses=ERRORS)


def _start(body: GenerateRequest, engine: GeneratorEngine, settings: Settings) -> Stream:
    check_length(body.prompt, settings.max_input_chars, "prompt")
    if body.max_new_tokens > settings.max_new_tokens:
        limit = settings.max_new_tokens
        raise RequestValidationError(
            [{"type": "less_than_equal", "loc": ("body", "max_new_tokens"), "input": body.max_new_tokens,
              "msg": f"Input should be less than or equal to {limit} (RNN_MAX_NEW_TOKENS)", "ctx": {"le": limit}}]
        )  # fmt: skip
    params = SamplingParams(
        max_new_tokens=body.max_new_tokens, temperature=body.temperature, top_k=body.top_k, top_p=body.top_p,
        repetition_penalty=body.repetition_penalty, stop=tuple(body.stop), seed=body.seed,
    )  # fmt: skip
    try:
        return engine.submit(body.prompt, params)
    except EngineFull as exc:
        raise overloaded(str(exc)) from None


@router.post("", response_model=GenerateResponse)
async def generate(body: GenerateRequest, engine: GeneratorDep, settings: SettingsDep) -> dict[str, Any]:
    """Generate text after `prompt`; the answer excludes the prompt and any stop sequence."""
    stream = _start(body, engine, settings)
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


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def _events(stream: Stream, timeout: float) -> AsyncIterator[str]:
    """One event per token; the last one also carries generated_text and details (TGI's format). One token is
    held back so the final event can carry both."""
    held: Event | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        while True:
            try:
                event = await asyncio.wait_for(stream.events.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                yield f"event: error\n{_sse({'error': f'generation took longer than {timeout:g} s'})}"
                return
            if event.kind == "token":
                if held is not None:
                    yield _sse({"token": {"text": held.text, "index": held.index}, "generated_text": None,
                                "details": None})  # fmt: skip
                held = event
            elif event.kind == "done":
                assert event.result is not None
                last = held or Event("token", text="", index=0)
                r = event.result
                details = {"finish_reason": r.finish_reason, "generated_tokens": r.tokens, "seed": r.seed}
                yield _sse({"token": {"text": last.text, "index": last.index}, "generated_text": r.text,
                            "details": details})  # fmt: skip
                return
            else:
                yield f"event: error\n{_sse({'error': event.text})}"
                return
    finally:
        stream.cancel()  # the client left (or we are done): the engine drops the stream at its next step


@router.post("/stream", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(body: GenerateRequest, engine: GeneratorDep, settings: SettingsDep) -> StreamingResponse:
    """The same request, answered as Server-Sent Events, one per generated token."""
    stream = _start(body, engine, settings)
    return StreamingResponse(
        _events(stream, settings.request_timeout_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
