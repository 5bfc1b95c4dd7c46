"""Error helpers shared by the routes, and the documented error responses.

An error's body has the shape of the protocol its route speaks: this service's `{"detail": ...}` (FastAPI's);
`{"error": message, "error_type": kind}` on the Hugging Face routes (TGI and TEI: huggingface_hub raises its own
ValidationError, OverloadedError ... from `error_type`); `{"error": {"message", "type", "param", "code"}}` on
/v1/ (OpenAI's: the openai SDK raises BadRequestError, NotFoundError ... with the message), where a validation
error is a 400, as OpenAI answers it."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.schemas import ErrorResponse, HFError, OpenAIError

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "the body is not valid UTF-8 JSON"},
    401: {"model": ErrorResponse, "description": "RNN_API_KEY is set and the request lacks it"},
    413: {"model": ErrorResponse, "description": "the body or a text exceeds its limit"},
    503: {"model": ErrorResponse, "description": "overloaded or timed out; retry after the Retry-After seconds"},
}
# the model routes': a request may name its model
MODEL_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorResponse, "description": "no model has the name in `model`"},
}
# the Hugging Face routes' (TGI's and TEI's shape) and the OpenAI routes' (a validation error is a 400)
HF_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {**answer, "model": HFError} for code, answer in MODEL_ERRORS.items()
} | {422: {"model": HFError, "description": "a field is invalid, or names what this service cannot honour"}}
OPENAI_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {**answer, "model": OpenAIError} for code, answer in MODEL_ERRORS.items()
} | {400: {"model": OpenAIError, "description": "a field is invalid, or names what this service cannot honour"}}


Protocol = Literal["openai", "hf"] | None
HF_PATHS = frozenset({"/generate_stream", "/predict", "/info"})  # and POST /, /models/{name}...


def protocol_of(scope: Mapping[str, Any]) -> Protocol:
    """Which protocol a request speaks, from its path (and, for POST /generate, which reads both its own body and
    TGI's, what the handler found: scope["state"]["protocol"])."""
    path: str = scope["path"]
    if path.startswith("/v1/"):
        return "openai"
    if path in HF_PATHS or path.startswith("/models/") or (path == "/" and scope.get("method") == "POST"):
        return "hf"
    state = scope.get("state")
    return state.get("protocol") if state else None


def _hf_kind(status_code: int) -> str | None:
    """TGI's error_type, from which huggingface_hub picks its exception; None where TGI has none (401, 404 ...):
    the client raises its HTTP error with the status and message."""
    return {503: "overloaded", 500: "generation", 400: "validation", 413: "validation", 422: "validation"}.get(
        status_code
    )


def _openai_kind(status_code: int) -> tuple[str, str | None]:
    """OpenAI's error `type` and `code` for a status."""
    return {
        401: ("invalid_request_error", "invalid_api_key"),
        404: ("invalid_request_error", "model_not_found"),
        503: ("server_error", "overloaded"),
    }.get(status_code, ("invalid_request_error" if status_code < 500 else "server_error", None))


def error_content(protocol: Protocol, status_code: int, message: str, param: str | None = None) -> Any:
    """The body of an error, in the shape of the request's protocol."""
    if protocol == "openai":
        kind, code = _openai_kind(status_code)
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    if protocol == "hf":
        error_type = _hf_kind(status_code)
        return {"error": message} if error_type is None else {"error": message, "error_type": error_type}
    return {"detail": message}


def _where(loc: Sequence[Any]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts)


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation errors as one message: `where: what` for each."""
    return "; ".join(f"{_where(e['loc'])}: {e['msg']}" if _where(e["loc"]) else str(e["msg"]) for e in errors)


def check_length(text: str, limit: int, where: str = "text") -> None:
    """413 for a text over RNN_MAX_INPUT_CHARS."""
    if len(text) > limit:
        raise HTTPException(413, f"{where} has {len(text)} characters; the limit is {limit} (RNN_MAX_INPUT_CHARS)")


def check_batch(count: int, limit: int, what: str = "texts") -> None:
    """413 for a batch over RNN_MAX_BATCH_TEXTS."""
    if count > limit:
        raise HTTPException(413, f"{count} {what} in one batch; the limit is {limit} (RNN_MAX_BATCH_TEXTS)")


def check_new_tokens(count: int, limit: int, loc: tuple[str, ...]) -> None:
    """422 for more new tokens than RNN_MAX_NEW_TOKENS allows."""
    if count > limit:
        raise RequestValidationError(
            [{"type": "less_than_equal", "loc": loc, "input": count,
              "msg": f"Input should be less than or equal to {limit} (RNN_MAX_NEW_TOKENS)", "ctx": {"le": limit}}]
        )  # fmt: skip


async def read_json(request: Request) -> Any:
    """The body as JSON, for a route that chooses its model after reading it; errors as FastAPI gives them."""
    body = await request.body()
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise HTTPException(400, "the request body is not valid UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", exc.pos), "msg": "JSON decode error", "input": {},
              "ctx": {"error": exc.msg}}]
        ) from None  # fmt: skip


M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def validated(model: type[M], payload: Any) -> M:
    """`payload` as `model`, or a 422 with the errors located under "body", as FastAPI reports them."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


def refuse(unsupported: list[tuple[tuple[str, ...], str]]) -> None:
    """422 naming each parameter the service cannot honour (never ignored in silence)."""
    if unsupported:
        raise RequestValidationError(
            [{"type": "unsupported", "loc": ("body", *loc), "msg": why, "input": None} for loc, why in unsupported]
        )


async def in_time(run: Awaitable[T], timeout: float) -> T:
    """`run`'s result, or a 503 naming RNN_REQUEST_TIMEOUT_S when it takes longer than `timeout` s."""
    try:
        async with asyncio.timeout(timeout):
            return await run
    except TimeoutError:
        raise timed_out(timeout) from None


def overloaded(detail: str, retry_after: int = 1) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(retry_after)})


def timed_out(seconds: float) -> HTTPException:
    return overloaded(f"the request took longer than {seconds:g} s (RNN_REQUEST_TIMEOUT_S)")


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number echoed back in an error becomes its string; and UTF-8 has
    no lone surrogates: an echoed string that holds one gets U+FFFD in its place, as does a byte that is not
    UTF-8 in echoed bytes."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, bytes):  # a body FastAPI did not read as JSON (no content type), echoed as text
        return value.decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 answer (`detail`: the list of errors), made JSON-safe: a request may hold NaN or Infinity
    (Python's json accepts them), and echoing that input back must not turn the client's mistake into a 500.
    On the other protocols' routes: their error shape, with the errors in one message."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    protocol = protocol_of(request.scope)
    if protocol == "openai":
        param = _where(errors[0]["loc"]) if errors else None
        return JSONResponse(status_code=400, content=error_content(protocol, 400, describe(errors), param or None))
    if protocol == "hf":
        return JSONResponse(status_code=422, content=error_content(protocol, 422, describe(errors)))
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(_json_safe(errors)))})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTPException answer, with one vague message made precise: FastAPI says "There was an error
    parsing the body" when the body is not even text (invalid UTF-8)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "the request body is not valid UTF-8 JSON"
    content = error_content(protocol_of(request.scope), exc.status_code, str(detail))
    headers = exc.headers
    if exc.status_code == 405:  # Starlette names the first matching route's methods; a path may have several routes
        headers = {**(headers or {}), "Allow": ", ".join(_allowed(request))}
    return JSONResponse(status_code=exc.status_code, content=content, headers=headers)


def _allowed(request: Request) -> list[str]:
    """Every method some route serves at this request's path."""
    allowed = []
    for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed
