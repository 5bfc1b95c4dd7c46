"""Pure ASGI middleware: body-size limit, the in-flight limit (503 + Retry-After at once) and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import ANSWERING
from app.routes.errors import error_content, protocol_of
from app.serving.metrics import Metrics


def _error_body(scope: Scope, status: int, detail: str) -> bytes:
    """An error answer's body, in the shape of the request's protocol (app/routes/errors.py)."""
    return json.dumps(error_content(protocol_of(scope), status, detail)).encode()


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    base = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": base + (headers or [])})
    await send({"type": "http.response.body", "body": body})


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a body without (or with a false) content-length passes the limit. An
    HTTPException, so FastAPI's body parsing re-raises it as a 413 instead of turning it into a 400."""

    def __init__(self, detail: str) -> None:
        super().__init__(413, detail)


def model_posts(routers: Sequence[APIRouter]) -> tuple[frozenset[str], tuple[str, ...]]:
    """What LimitsMiddleware counts as a model request, read from the model routers' own routes: their POST
    paths (exact), and for a path with parameters (`/models/{name}`) the fixed part before the first one."""
    exact: set[str] = set()
    prefixes: list[str] = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute) and "POST" in (route.methods or ()):
                path = route.path
                if "{" in path:
                    prefixes.append(path[: path.index("{")])
                else:
                    exact.add(path)
    return frozenset(exact), tuple(prefixes)


class LimitsMiddleware:
    """Refuses bodies over `max_body` bytes (413) and model requests (POSTs to a path in `exact` or under one of
    `prefixes`: model_posts) beyond `max_in_flight` (503).

    It is the outermost layer (app/main.py wraps the app's whole stack in it): under a burst, a refusal is most of
    what the event loop does, and going through Starlette's error and metrics layers first tripled its cost
    (bench/overload.py). It counts its refusals in the metrics itself, as the metrics layer would have."""

    def __init__(
        self,
        app: ASGIApp,
        max_body: int,
        max_in_flight: int,
        metrics: Metrics,
        exact: frozenset[str],
        prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app, self.max_body, self.max_in_flight, self.metrics = app, max_body, max_in_flight, metrics
        self.exact, self.prefixes = exact, prefixes
        self.in_flight = 0
        # read when /metrics is scraped, not set twice a request (a lock and two calls each time)
        metrics.in_flight.set_function(lambda: self.in_flight)
        self.busy: dict[str | None, bytes] = {}  # a refusal's body by protocol: it is always the same
        # what this layer refuses never reaches the metrics layer: it counts those itself, as that layer would
        self.refused = {code: metrics.requests.labels("unmatched", code) for code in ("413", "503")}
        self.refused_duration = metrics.duration.labels("unmatched")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        too_large = f"request body exceeds {self.max_body} bytes (RNN_MAX_BODY_BYTES)"
        if length is not None and length.isdigit() and int(length) > self.max_body:
            started = time.perf_counter()
            await _send_json(send, 413, _error_body(scope, 413, too_large))
            self._count("413", started)
            return
        path = scope["path"]
        limited = scope["method"] == "POST" and (path in self.exact or path.startswith(self.prefixes))
        if limited and self.in_flight >= self.max_in_flight:
            await self.refuse(scope, send)
            return
        if limited:
            self.in_flight += 1
        try:
            if length is not None and length.isdigit():  # the server reads that many bytes and no more
                await self.app(scope, receive, send)
            else:  # a chunked body: counted as it comes
                await self._counted(scope, receive, send, too_large)
        finally:
            if limited:
                self.in_flight -= 1

    async def _counted(self, scope: Scope, receive: Receive, send: Send, too_large: str) -> None:
        """The app, with the body's bytes counted as it reads them, and a 413 when they pass the limit."""
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(too_large)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, _error_body(scope, 413, too_large))

    async def refuse(self, scope: Scope, send: Send) -> None:
        """503 with Retry-After, at once: nothing of the request is read."""
        started = time.perf_counter()
        protocol = protocol_of(scope)
        body = self.busy.get(protocol)
        if body is None:
            detail = f"server busy: {self.max_in_flight} requests in flight (RNN_MAX_CONCURRENT_REQUESTS)"
            body = self.busy[protocol] = _error_body(scope, 503, detail)
        await _send_json(send, 503, body, [(b"retry-after", b"1")])
        self.metrics.rejected.inc()
        self._count("503", started)

    def _count(self, code: str, started: float) -> None:
        self.refused[code].inc()
        self.refused_duration.observe(time.perf_counter() - started)


class RequestMetrics:
    """What is counted per request: rnn_requests_total{route,status} and rnn_request_duration_seconds{route}, by
    route template, and for a request a model answered (app/deps.py names its engine in the scope),
    rnn_model_requests_total{model,version}; the request's answer goes through Sending, which notes its status and
    stamps the version. The metrics layer counts with them, and so does app/fastpath.py's layer, which answers the
    model routes' common requests outside it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.series: dict[tuple[str, str], tuple[Any, Any]] = {}  # (route, status) -> its counter and histogram
        self.answered: dict[tuple[str, int | None], Any] = {}  # (model, version) -> its counter

    def record(self, scope: Scope, status: int, started: float) -> None:
        """Count a finished request (`started`: its perf_counter time)."""
        # the scope lets go of the engine: uvicorn keeps a keep-alive connection's last scope until its next
        # request, which kept a swapped-out version resident (bench/swaps.py: a copy more after each swap)
        engine = scope.pop(ANSWERING, None)
        if engine is not None:
            key = (engine.name, engine.version)
            answered = self.answered.get(key)
            if answered is None:
                answered = self.answered[key] = self.metrics.answered.labels(key[0], str(key[1] or 0))
            answered.inc()
        route = scope.get("route")
        series_key = (getattr(route, "path", None) or "unmatched", str(status))
        series = self.series.get(series_key)
        if series is None:  # labels() looks the series up under a lock: once per route and status is enough
            series = self.series[series_key] = (self.metrics.requests.labels(*series_key),
                                                self.metrics.duration.labels(series_key[0]))  # fmt: skip
        series[0].inc()
        series[1].observe(time.perf_counter() - started)


class Sending:
    """A counted request's `send`: `status` is its answer's (0 until the answer starts), and the answer's
    `http.response.start` gets the version that answered, if it came from a directory of versions."""

    __slots__ = ("scope", "send", "status")

    def __init__(self, scope: Scope, send: Send) -> None:
        self.scope, self.send, self.status = scope, send, 0

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            engine = self.scope.get(ANSWERING)
            if engine is not None and engine.version is not None:
                version = (b"x-model-version", str(engine.version).encode())
                message["headers"] = [*message.get("headers", ()), version]
        await self.send(message)


class MetricsMiddleware:
    """Counts each request with RequestMetrics (an unhandled exception as a 500)."""

    def __init__(self, app: ASGIApp, counter: RequestMetrics) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sending = Sending(scope, send)
        try:
            await self.app(scope, receive, sending)
        finally:
            self.counter.record(scope, sending.status or 500, started)
