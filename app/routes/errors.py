"""Error helpers shared by the routes, and the documented error responses."""

from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.schemas import ErrorResponse

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


def check_length(text: str, limit: int, where: str = "text") -> None:
    """413 for a text over RNN_MAX_INPUT_CHARS."""
    if len(text) > limit:
        raise HTTPException(413, f"{where} has {len(text)} characters; the limit is {limit} (RNN_MAX_INPUT_CHARS)")


def check_batch(count: int, limit: int, what: str = "texts") -> None:
    """413 for a batch over RNN_MAX_BATCH_TEXTS."""
    if count > limit:
        raise HTTPException(413, f"{count} {what} in one batch; the limit is {limit} (RNN_MAX_BATCH_TEXTS)")


def overloaded(detail: str, retry_after: int = 1) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(retry_after)})


def timed_out(seconds: float) -> HTTPException:
    return overloaded(f"the request took longer than {seconds:g} s (RNN_REQUEST_TIMEOUT_S)")


def _json_safe(value: Any) -> Any:
    """JSON has no NaN or Infinity: a non-finite number echoed back in an error becomes its string; and UTF-8 has
    no lone surrogates: an echoed string that holds one gets U+FFFD in its place."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 answer (`detail`: the list of errors), made JSON-safe: a request may hold NaN or Infinity
    (Python's json accepts them), and echoing that input back must not turn the client's mistake into a 500."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(status_code=422, content={"detail": _json_safe(jsonable_encoder(exc.errors()))})


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTPException answer, with one vague message made precise: FastAPI says "There was an error
    parsing the body" when the body is not even text (invalid UTF-8)."""
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "the request body is not valid UTF-8 JSON"
    return JSONResponse(status_code=exc.status_code, content={"detail": detail}, headers=exc.headers)
