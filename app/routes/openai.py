"""OpenAI's completions protocol over HTTP (its shapes: app/protocols/openai.py): POST /v1/completions, with
streaming as OpenAI's chunks ending in `data: [DONE]`, and GET /v1/models. Errors in OpenAI's shape, a validation
error as a 400 (app/routes/errors.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from app.config import Settings
from app.deps import generator, model_named, settings_of
from app.protocols.openai import (
    DEFAULT_MAX_TOKENS,
    Completion,
    CompletionRequest,
    LogprobsBuilder,
    completion_id,
    envelope,
    finish_reason,
    model_entry,
    now,
    usage,
    within,
)
from app.routes.errors import OPENAI_ERRORS, check_batch, check_length, check_new_tokens, in_time, overloaded, refuse
from app.routes.sse import DONE, EventReader, EventStream, sse
from app.schemas import limit_integer, limit_texts
from app.serving.generator import EngineFull, Event, GeneratorEngine, Stream, collect
from app.serving.registry import Engine
from model.generator.sampling import Generation, TokenLogprob, prompt_logprobs

router = APIRouter(prefix="/v1", tags=["openai"], responses=OPENAI_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py)."""
    properties = schemas["CompletionRequest"]["properties"]
    limit_texts(properties["prompt"], settings.max_input_chars, settings.max_batch_texts)
    limit_integer(properties["max_tokens"], settings.max_new_tokens)


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """Every loaded model, as OpenAI lists them (`client.models.list()`); completions take a generator's name."""
    engines: dict[str, Engine] = getattr(request.app.state, "engines", None) or {}
    data = [model_entry(name, engine.model.artifact.config.created_at) for name, engine in engines.items()]
    return {"object": "list", "data": data}


@router.get("/models/{model}")
async def retrieve_model(model: str, request: Request) -> dict[str, Any]:
    """One model (`client.models.retrieve(name)`)."""
    return model_entry(model, model_named(request, model).model.artifact.config.created_at)


@router.post("/completions", response_model=Completion, response_model_exclude_none=False,
             responses={200: {"content": {"text/event-stream": {}}}})  # fmt: skip
async def completions(body: CompletionRequest, request: Request) -> Any:
    """OpenAI's completions: `n` completions of each prompt, with `usage`; `stream` for OpenAI's chunks."""
    engine, settings = generator(request, body.model), settings_of(request)
    refuse(body.unsupported())
    prompts, n = body.prompts, body.choices_per_prompt
    check_batch(len(prompts), settings.max_batch_texts, "prompts")
    for i, prompt in enumerate(prompts):
        check_length(prompt, settings.max_input_chars, "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]")
    max_tokens = min(DEFAULT_MAX_TOKENS, settings.max_new_tokens) if body.max_tokens is None else body.max_tokens
    check_new_tokens(max_tokens, settings.max_new_tokens, ("body", "max_tokens"))
    total = len(prompts) * n
    if total > engine.max_streams:
        refuse([(("n",), f"{len(prompts)} prompt(s) x n={n} = {total} completions; the limit is "
                         f"{engine.max_streams} at once (RNN_MAX_STREAMS)")])  # fmt: skip
    echoed: list[list[TokenLogprob]] = [[] for _ in prompts]  # the prompts' tokens, scored, for echo + logprobs
    if body.echo and body.logprobs is not None:
        net, tok = engine.model.network, engine.model.tokenizer
        echoed = [await asyncio.to_thread(prompt_logprobs, net, tok, p, engine.table, body.logprobs) for p in prompts]
    run = Run(body, engine, prompts, echoed)
    if max_tokens == 0:  # nothing to generate: the prompts (echo) and their logprobs only
        answer = run.without_generation()
        return EventStream(_as_chunks(run, answer), []) if body.stream else answer
    try:
        streams = engine.submit_many(
            [p for p in prompts for _ in range(n)],
            [body.sampling_params(j, max_tokens) for _ in prompts for j in range(n)],
            streaming=bool(body.stream),
            logprobs=body.logprobs,
        )
    except EngineFull as exc:
        raise overloaded(str(exc)) from None
    if body.stream:
        return EventStream(run.chunks(streams, settings.request_timeout_s), streams, run.tasks)
    try:
        results = await in_time(asyncio.gather(*(collect(s) for s in streams)), settings.request_timeout_s)
    finally:
        for s in streams:
            s.cancel()
    return run.completion(streams, results)


class Run:
    """One completions request's answer: the completion object, or its chunks."""

    def __init__(
        self, body: CompletionRequest, engine: GeneratorEngine, prompts: list[str], echoed: list[list[TokenLogprob]]
    ) -> None:
        self.body, self.engine, self.prompts, self.echoed = body, engine, prompts, echoed
        self.n = body.choices_per_prompt
        self.id, self.created = completion_id(), now()
        self.tasks: list[asyncio.Task[None]] = []  # the streams' readers, when streaming (EventStream stops them)

    def _prompt(self, choice: int) -> str:
        return self.prompts[choice // self.n]

    def _builder(self) -> LogprobsBuilder:
        return LogprobsBuilder(self.body.logprobs or 0, self.engine.table)

    def _prompt_tokens(self, streams: list[Stream] | None = None) -> int:
        if streams is not None:
            return sum(len(streams[i * self.n].prompt_ids) for i in range(len(self.prompts)))
        tokenizer = self.engine.model.tokenizer
        return sum(len(tokenizer.encode(p, add_special_tokens=False).ids) for p in self.prompts)

    def _choice(self, choice: int, text: str, tokens: list[TokenLogprob], reason: str | None) -> dict[str, Any]:
        echo = self.body.echo
        logprobs = None
        if self.body.logprobs is not None:
            logprobs = self._builder().build((self.echoed[choice // self.n] if echo else []) + tokens)
        return {"text": (self._prompt(choice) if echo else "") + text, "index": choice, "logprobs": logprobs,
                "finish_reason": reason}  # fmt: skip

    def without_generation(self) -> dict[str, Any]:
        choices = [self._choice(i, "", [], "length") for i in range(len(self.prompts) * self.n)]
        out = envelope(self.id, self.created, self.body.model, choices)
        out["usage"] = usage(self._prompt_tokens(), 0)
        return out

    def completion(self, streams: list[Stream], results: list[Generation]) -> dict[str, Any]:
        choices = []
        for i, (s, r) in enumerate(zip(streams, results, strict=True)):
            kept = s.scored[: within(s.scored, len(r.text))]  # a stop sequence's tokens are not in the text
            choices.append(self._choice(i, r.text, kept, finish_reason(r)))
        out = envelope(self.id, self.created, self.body.model, choices)
        out["usage"] = usage(self._prompt_tokens(streams), sum(r.tokens for r in results))
        return out

    def _chunk(self, choice: int, text: str, logprobs: dict[str, Any] | None, reason: str | None) -> str:
        part = {"text": text, "index": choice, "logprobs": logprobs, "finish_reason": reason}
        return sse(envelope(self.id, self.created, self.body.model, [part]))

    async def chunks(self, streams: list[Stream], timeout: float) -> AsyncIterator[str]:
        """OpenAI's chunks: the prompt first (with `echo`), then each choice's text as it comes (with the
        logprobs of the tokens it completes), a chunk with its finish reason, the usage (with
        `stream_options.include_usage`) and `data: [DONE]`."""
        want_logprobs = self.body.logprobs is not None
        builders = [self._builder() for _ in streams]
        pending: list[deque[TokenLogprob]] = [deque() for _ in streams]
        sent = [0] * len(streams)  # characters of each choice's generated text sent
        covered = [0] * len(streams)  # ... and of its tokens' text, whose logprobs went with it
        if self.body.echo:
            for i in range(len(streams)):
                echoed = builders[i].build(self.echoed[i // self.n]) if want_logprobs else None
                yield self._chunk(i, self._prompt(i), echoed, None)
        generated = 0
        async for i, events in _merged(streams, timeout, self.tasks):
            out: list[str] = []
            for event in events:
                if event.kind == "tokens":
                    text = "".join(event.pieces)
                    sent[i] += len(text)
                    pending[i].extend(event.tokens)
                    taken = []
                    while pending[i] and covered[i] + len(pending[i][0].text) <= sent[i]:
                        t = pending[i].popleft()
                        covered[i] += len(t.text)
                        taken.append(t)
                    if text or taken:
                        out.append(self._chunk(i, text, builders[i].build(taken) if want_logprobs else None, None))
                elif event.kind == "done":
                    assert event.result is not None
                    generated += event.result.tokens
                    out.append(self._chunk(i, "", None, finish_reason(event.result)))
                else:
                    out.append(sse({"error": {"message": event.text, "type": "server_error", "param": None,
                                              "code": None}}))  # fmt: skip
                    yield "".join(out)
                    return
            if out:
                yield "".join(out)
        options = self.body.stream_options
        if options is not None and options.include_usage:
            out_usage = envelope(self.id, self.created, self.body.model, [])
            out_usage["usage"] = usage(self._prompt_tokens(streams), generated)
            yield sse(out_usage)
        yield DONE


async def _as_chunks(run: Run, answer: dict[str, Any]) -> AsyncIterator[str]:
    """A completion that generated nothing, as a stream: one chunk per choice, the usage when asked, [DONE]."""
    for choice in answer["choices"]:
        yield sse(envelope(run.id, run.created, run.body.model, [choice]))
    options = run.body.stream_options
    if options is not None and options.include_usage:
        yield sse({**envelope(run.id, run.created, run.body.model, []), "usage": answer["usage"]})
    yield DONE


async def _merged(
    streams: list[Stream], timeout: float, tasks: list[asyncio.Task[None]]
) -> AsyncIterator[tuple[int, list[Event]]]:
    """(stream index, its events) from several streams as they come, each stream's batched as EventReader does,
    until every stream has ended (or one failed). A reader task per stream, kept in `tasks`: the response cancels
    them however it ends (a client that leaves closes no generator at once)."""
    queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()

    async def pump(i: int, stream: Stream) -> None:
        reader = EventReader(stream, timeout)
        while True:
            events = await reader.next()
            queue.put_nowait((i, events))
            if any(e.kind != "tokens" for e in events):
                return
            await reader.pause()

    tasks += [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        running = len(streams)
        while running:
            i, events = await queue.get()
            yield i, events
            if any(e.kind == "error" for e in events):
                return
            running -= any(e.kind == "done" for e in events)
    finally:
        for task in tasks:
            task.cancel()
