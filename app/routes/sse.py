"""Server-Sent Events for the generation routes: a stream's events read in batches, written at most every
COALESCE_S, and a response that frees the stream's slot however it ends. Each protocol formats its own events
(app/routes/generator.py: this service's and TGI's; app/routes/openai.py: OpenAI's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from app.serving.generator import Event, Stream

# after a write, a stream's next write waits this long (unless the stream has ended): the first token goes out at
# once, later ones 20 times a second, often enough for text to read as smooth (one stream's burst is ~350 chars).
# Each write is a send() whose loopback delivery the server pays for, and it wakes the client: fewer writes serve
# more streams (bench/serve.py's 32-stream generation row)
COALESCE_S = 0.05
DONE = "data: [DONE]\n\n"  # OpenAI's end of stream


def sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class EventReader:
    """A stream's events in batches: `next()` waits for one and takes every other one queued behind it; after a
    write, `pause()` lets the next COALESCE_S's tokens queue up (unless the stream ends first). Past `timeout`
    seconds from the start, `next()` gives an error event."""

    def __init__(self, stream: Stream, timeout: float) -> None:
        self.stream, self.timeout = stream, timeout
        self.deadline = asyncio.get_running_loop().time() + timeout

    async def next(self) -> list[Event]:
        events = self.stream.events
        if not events.empty():
            first = events.get_nowait()  # the usual case after a pause: no timer to set and cancel
        else:
            try:
                async with asyncio.timeout_at(self.deadline):  # wait_for would wrap get() in a task: loop hops
                    first = await events.get()
            except TimeoutError:
                return [Event("error", text=f"generation took longer than {self.timeout:g} s")]
        batch = [first]
        while not events.empty():
            batch.append(events.get_nowait())
        return batch

    async def pause(self) -> None:
        """Sleep COALESCE_S, or less: the stream's last event ends the pause (Stream.put). A future and a timer
        rather than asyncio.timeout around an Event, whose every expiry is a CancelledError raised and caught:
        this runs once per write of every stream."""
        stream = self.stream
        if stream.ended:
            return
        loop = asyncio.get_running_loop()
        stream.waiter = future = loop.create_future()
        timer = loop.call_later(COALESCE_S, _wake, future)
        try:
            await future
        finally:
            timer.cancel()
            stream.waiter = None


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class EventStream(StreamingResponse):
    """A StreamingResponse that cancels its streams however the response ends, so the engine drops them at its
    next step. Not a `finally` in the event generator: when the client leaves, Starlette cancels the response
    task while the generator waits in a yield, and the generator's `finally` then runs only when it is
    garbage-collected, which a reference cycle can put off indefinitely (a slot kept busy)."""

    def __init__(
        self, events: AsyncIterator[str], streams: Iterable[Stream], tasks: list[asyncio.Task[None]] | None = None
    ) -> None:
        super().__init__(
            events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        self.streams = list(streams)
        self.tasks = tasks if tasks is not None else []  # helpers the events start (filled as they start)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            for stream in self.streams:
                stream.cancel()
            for task in self.tasks:
                task.cancel()
