"""Error helpers shared by the routes, and the documented error responses."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, status

from app.schemas import ErrorResponse

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "RNN_API_KEY is set and the request lacks it"},
    413: {"model": ErrorResponse, "description": "the body or a text exceeds its limit"},
    503: {"model": ErrorResponse, "description": "overloaded or timed out; retry after the Retry-After seconds"},
}


def overloaded(detail: str, retry_after: int = 1) -> HTTPException:
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": str(retry_after)})


def timed_out(seconds: float) -> HTTPException:
    return overloaded(f"the request took longer than {seconds:g} s (RNN_REQUEST_TIMEOUT_S)")
