"""POST /generate and /generate/stream (Server-Sent Events)."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.config import Settings
from app.deps import generator, settings_of
from app.routes.errors import MODEL_ERRORS, check_length, overloaded, timed_out
from app.schemas import GenerateRequest, GenerateResponse
from app.serving.generator import EngineFull, GeneratorEngine, Stream, collect
from model.sampling import SamplingParams

router = APIRouter(prefix="/generate", tags=["generate"], responses=MODEL_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py)."""
    generate = schemas["GenerateRequest"]["properties"]
    generate["prompt"]["maxLength"] = settings.max_input_chars
    generate["max_new_tokens"]["maximum"] = settings.max_new_tokens
    generate["max_new_tokens"]["default"] = min(generate["max_new_tokens"]["default"], settings.max_new_tokens)


def _start(body: GenerateRequest, engine: GeneratorEngine, settings: Settings, streaming: bool) -> Stream:
    check_length(body.prompt, settings.max_input_chars, "prompt")
    if "max_new_tokens" not in body.model_fields_set:  # the default never exceeds the configured limit
        body.max_new_tokens = min(body.max_new_tokens, settings.max_new_tokens)
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
        return engine.submit(body.prompt, params, streaming=streaming)
    except EngineFull as exc:
        raise overloaded(str(exc)) from None


@router.post("", response_model=GenerateResponse)
async def generate(body: GenerateRequest, request: Request) -> dict[str, Any]:
    """Generate text after `prompt`; the answer excludes the prompt and any stop sequence."""
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


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


@functools.lru_cache(maxsize=4096)
def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _token_sse(text: str, index: int) -> str:
    """_sse() of a token event that is not the last, byte for byte, without json.dumps per token (the hot path:
    a character model's pieces repeat, so their quoted forms are cached)."""
    return (
        f'data: {{"token": {{"text": {_quoted(text)}, "index": {index}}}, "generated_text": null, "details": null}}\n\n'
    )


# after a write, a stream's next write waits this long (unless the stream has ended): the first token goes out at
# once, later ones in bursts, 20 a second (a reader sees text arrive smoothly; one stream's burst is ~350 chars).
# Each write is a send() whose loopback delivery the server pays for, and it wakes the client. Side by side at 32
# streams: a write per engine slice (10 ms) 33,000 chars/s, every 20 ms 37,000; 50 ms against 20 ms, two A/Bs of
# 12 runs each: +4.8 % and +6 %; 100 ms no better than 50
COALESCE_S = 0.05


async def _events(stream: Stream, timeout: float) -> AsyncIterator[str]:
    """One event per token; the last one also carries generated_text and details (TGI's format). One token is
    held back so the final event can carry both. Tokens that queued up since the last write go out in one write."""
    held: tuple[str, int] | None = None  # (text, index)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if not stream.events.empty():
            first = stream.events.get_nowait()  # the usual case after a pause: no timer to set and cancel
        else:
            try:
                async with asyncio.timeout_at(deadline):  # wait_for would wrap get() in a task: loop hops per wake
                    first = await stream.events.get()
            except TimeoutError:
                yield f"event: error\n{_sse({'error': f'generation took longer than {timeout:g} s'})}"
                return
        events = [first]
        while not stream.events.empty():
            events.append(stream.events.get_nowait())
        out: list[str] = []
        for event in events:
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
                out.append(_sse({"token": {"text": text, "index": index}, "generated_text": r.text,
                                 "details": details}))  # fmt: skip
                yield "".join(out)
                return
            else:
                out.append(f"event: error\n{_sse({'error': event.text})}")
                yield "".join(out)
                return
        if out:
            yield "".join(out)
            await _pause(stream, COALESCE_S)  # the next COALESCE_S's tokens go out in one write


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _pause(stream: Stream, seconds: float) -> None:
    """Sleep `seconds`, or less: the stream's last event ends the pause (Stream.put). A future and a timer rather
    than asyncio.timeout around an Event, whose every expiry is a CancelledError raised and caught: this runs
    once per write of every stream."""
    if stream.ended:
        return
    loop = asyncio.get_running_loop()
    stream.waiter = future = loop.create_future()
    timer = loop.call_later(seconds, _wake, future)
    try:
        await future
    finally:
        timer.cancel()
        stream.waiter = None


class _EventStream(StreamingResponse):
    """A StreamingResponse that cancels its stream however the response ends, so the engine drops it at its next
    step. Not a `finally` in the event generator: when the client leaves, Starlette cancels the response task
    while the generator waits in a yield, and the generator's `finally` then runs only when it is
    garbage-collected, which a reference cycle can put off indefinitely (a slot kept busy)."""

    def __init__(self, stream: Stream, timeout: float) -> None:
        super().__init__(
            _events(stream, timeout),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self.stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.stream.cancel()


@router.post("/stream", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def generate_stream(body: GenerateRequest, request: Request) -> StreamingResponse:
    """The same request, answered as Server-Sent Events, one per generated token."""
    engine, settings = generator(request, body.model), settings_of(request)
    return _EventStream(_start(body, engine, settings, streaming=True), settings.request_timeout_s)
