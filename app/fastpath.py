"""The model routes' common requests, answered in one ASGI layer instead of FastAPI's request pipeline.

A POST with a JSON body to a model route whose handler takes only its body model and the request (/sentiment,
/tag, /translate, /generate/stream and their batch forms, TGI's and OpenAI's) is answered here, just inside the
limits layer: the API key is checked when one is configured (the dependency the model routers are included
with), the body is read once, parsed by `json.loads` and validated by the route's own field, the handler runs,
and its result is serialised by the route's response field, as FastAPI would; the request is counted as the
metrics layer counts it. What FastAPI's pipeline adds on the way (its exception, exit-stack and routing layers,
the dependency solver, its request wrapper) took about half of the event loop's time per /sentiment request, and
the five layers between the limits layer and it (Starlette's error layer, FastAPI's telemetry and body-limit
layers, the metrics layer) each wrap the call and its send (py-spy under wrk at 64 connections, docs/results.md,
Peers); the handler's own work is a small part of it.

The layer learns its routes from FastAPI itself: after a request the normal pipeline answered, the scope holds the
route that matched, and that route is taken when its handler qualifies (`_qualifies`). Anything out of the common
case goes the normal way with the body replayed (an invalid body, another content type, a validation error): the
errors are FastAPI's own, byte for byte. The handler's exceptions reach the app's exception handlers through
Starlette's own wrapper, as they would have behind FastAPI's routing.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi._compat import ModelField
from fastapi.datastructures import DefaultPlaceholder
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import ResponseValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette._exception_handler import wrap_app_handling_exceptions
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.middleware import RequestMetrics, Sending

Guard = Callable[[Request], Awaitable[None]]
JSON = b"application/json"
# the scope entries FastAPI's routing sets that the layers outside it and the handlers read: the route (the metrics
# layer's label), the endpoint, the path parameters, the router, and the exception handlers Starlette's wrapper uses
LEARNED = ("route", "endpoint", "router", "starlette.exception_handlers")
TRACED = "fastapi.telemetry"  # in the scope of a request FastAPI's OpenTelemetry layer traces


@dataclass(frozen=True)
class FastRoute:
    """What answering one route takes: the route (its handler, its response field), the handler's body parameter,
    the name it takes the request by, and the scope entries its requests get."""

    route: APIRoute
    body: ModelField  # the handler's body parameter
    request: str
    scope: dict[str, Any]


def _qualifies(route: Any, endpoints: frozenset[Any]) -> tuple[ModelField, str] | None:
    """(body parameter, request parameter) of a route this layer can answer as FastAPI does: a POST of one of
    `endpoints` (the model routers': what they are included with is known, app/main.py), without path parameters,
    whose handler is a coroutine taking one pydantic body model and the request, and nothing else (no dependencies
    of its own), answering with the default response class or a Response of its own."""
    if not isinstance(route, APIRoute) or route.endpoint not in endpoints:
        return None
    if route.methods != {"POST"} or "{" in route.path:
        return None
    d = route.dependant
    if (d.path_params or d.query_params or d.header_params or d.cookie_params or d.dependencies
            or len(d.body_params) != 1 or d.request_param_name is None or route._embed_body_fields
            or d.response_param_name or d.background_tasks_param_name or d.http_connection_param_name
            or d.websocket_param_name or d.security_scopes_param_name):  # fmt: skip
        return None
    body = d.body_params[0]
    model = body.field_info.annotation
    if not (inspect.isclass(model) and issubclass(model, BaseModel)) or not inspect.iscoroutinefunction(d.call):
        return None
    try:
        returns = inspect.signature(d.call, eval_str=True).return_annotation
    except (NameError, TypeError):  # an annotation that does not resolve at run time: the normal way
        return None
    answers_itself = inspect.isclass(returns) and issubclass(returns, Response)
    if not (isinstance(route.response_class, DefaultPlaceholder) or answers_itself):
        return None
    return body, d.request_param_name


class FastRoutes:
    """The ASGI layer just inside the limits layer (app/main.py): it answers the routes of `endpoints` that qualify,
    after `guard`, the dependency their routers are included with (the API-key check), if any, and does for them
    what the layers between it and FastAPI's routing do: count them (`counter`, as the metrics layer does) and
    answer an unhandled exception with a 500 (`errors`: the stack's ServerErrorMiddleware, whose handler and debug
    setting it uses). What else lies between (FastAPI's telemetry layers, its body limit) acts on a request only
    when OpenTelemetry is configured, or FastAPI's max_body_size is set: a request traced by FastAPI's telemetry
    goes the normal way, and the service sets no max_body_size (RNN_MAX_BODY_BYTES is the limits layer's)."""

    def __init__(self, app: ASGIApp, endpoints: frozenset[Any], counter: RequestMetrics,
                 errors: ServerErrorMiddleware, guard: Guard | None = None) -> None:  # fmt: skip
        self.app, self.endpoints, self.counter, self.errors, self.guard = app, endpoints, counter, errors, guard
        self.routes: dict[str, FastRoute | None] = {}  # by path; None: the path goes the normal way

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        fast = self.routes.get(scope["path"])
        if fast is None or _header(scope, b"content-type") != JSON or TRACED in scope:
            await self.app(scope, receive, send)
            if scope["path"] not in self.routes:
                self._learn(scope)
            return
        await self._answer(fast, scope, receive, send)

    def _learn(self, scope: Scope) -> None:
        route = scope.get("route")
        if route is None or route.path != scope["path"]:  # no route matched; or a mounted app's
            return
        params = _qualifies(route, self.endpoints)
        learned = {key: scope[key] for key in LEARNED if key in scope}
        ok = params is not None and len(learned) == len(LEARNED)
        self.routes[scope["path"]] = FastRoute(route, *params, learned) if ok and params else None

    async def _answer(self, fast: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()  # the metrics layer's duration begins before the body is read
        received: list[Message] = []
        failure: Exception | None = None
        body = b""
        try:
            while True:
                message = await receive()
                received.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except Exception as exc:  # the limits layer's BodyTooLarge: the normal way answers it as it always has
            failure = exc
        value: Any = None
        errors: list[Any] | bool = True
        if failure is None and received[-1]["type"] == "http.request":
            try:  # as FastAPI validates a single body model (fastapi/dependencies/utils.py, request_body_to_args)
                value, errors = fast.body.validate(json.loads(body), {}, loc=("body",))
            except Exception:  # not JSON, not UTF-8, nested too deep: the normal way says which
                pass
        if errors:
            await self.app(scope, _replay(received, failure, receive), send)
            return
        scope.update(fast.scope, path_params={})
        request = Request(scope, receive, send)
        request._body = body  # what Request.body() caches: a handler reading the body again gets it, as it would
        kwargs = {fast.body.name: value, fast.request: request}
        guard = self.guard
        sending = Sending(scope, send)  # its status and version, as the metrics layer's send notes them

        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            if guard is not None:  # FastAPI runs it before it validates the body, which only a valid body skips
                await guard(request)
            result = await fast.route.dependant.call(**kwargs)  # type: ignore[misc]
            response = result if isinstance(result, Response) else _render(fast.route, result)
            await response(scope, receive, send)

        try:
            await wrap_app_handling_exceptions(run, request)(scope, receive, sending)
        except Exception as exc:
            if sending.status:  # the answer had started
                raise
            await ServerErrorMiddleware(_raising(exc), handler=self.errors.handler, debug=self.errors.debug)(
                scope, receive, send
            )  # the 500 the normal way's error layer sends, and the exception raised on for the server's log
        finally:
            self.counter.record(scope, sending.status or 500, started)


def _raising(exc: Exception) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return app


def _render(route: APIRoute, result: Any) -> Response:
    """The handler's result as FastAPI answers it (fastapi/routing.py, serialize_response): validated and dumped
    by the response field in one pass, or, without a response model, encoded to JSON."""
    field = route.response_field
    if field is None:
        return JSONResponse(jsonable_encoder(result), status_code=route.status_code or 200)
    value, errors = field.validate(result, {}, loc=("response",))
    if errors:
        raise ResponseValidationError(errors=errors, body=result)
    content = field.serialize_json(
        value, include=route.response_model_include, exclude=route.response_model_exclude,
        by_alias=route.response_model_by_alias, exclude_unset=route.response_model_exclude_unset,
        exclude_defaults=route.response_model_exclude_defaults, exclude_none=route.response_model_exclude_none,
    )  # fmt: skip
    return Response(content, status_code=route.status_code or 200, media_type="application/json")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _replay(received: list[Message], failure: Exception | None, receive: Receive) -> Receive:
    """`receive` for the normal way: the messages this layer took, then what reading them raised, if anything,
    then the connection's own."""
    pending = list(received)

    async def replayed() -> Message:
        nonlocal failure
        if pending:
            return pending.pop(0)
        if failure is not None:
            exc, failure = failure, None
            raise exc
        return await receive()

    return replayed
