"""POST /sentiment and /sentiment/batch."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request

from app.deps import classifier, settings_of
from app.routes.errors import ERRORS, timed_out
from app.schemas import SentimentBatchRequest, SentimentBatchResponse, SentimentRequest, SentimentResponse

router = APIRouter(prefix="/sentiment", tags=["sentiment"], responses=ERRORS)  # the API-key check: app/main.py


def check_length(text: str, limit: int, where: str = "text") -> None:
    if len(text) > limit:
        raise HTTPException(
            413,
            f"{where} has {len(text)} characters; the limit is {limit} (RNN_MAX_INPUT_CHARS)",
        )


@router.post("", response_model=SentimentResponse, response_model_exclude_none=True)
async def sentiment(body: SentimentRequest, request: Request) -> dict[str, Any]:
    """Classify one text; with `explain`, also each word's contribution to the predicted label."""
    engine, settings = classifier(request), settings_of(request)
    check_length(body.text, settings.max_input_chars)
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            [result] = await engine.classify([body.text])
            if body.explain:
                label_index = engine.model.labels.index(result["label"])
                result["explanation"] = await engine.explain(body.text, label_index)
    except TimeoutError:
        raise timed_out(settings.request_timeout_s) from None
    return result


@router.post("/batch", response_model=SentimentBatchResponse, response_model_exclude_none=True)
async def sentiment_batch(body: SentimentBatchRequest, request: Request) -> dict[str, Any]:
    """Classify up to RNN_MAX_BATCH_TEXTS texts; results come back in input order."""
    engine, settings = classifier(request), settings_of(request)
    if len(body.texts) > settings.max_batch_texts:
        raise HTTPException(
            413,
            f"{len(body.texts)} texts in one batch; the limit is {settings.max_batch_texts} (RNN_MAX_BATCH_TEXTS)",
        )
    for i, text in enumerate(body.texts):
        check_length(text, settings.max_input_chars, f"texts[{i}]")
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            results = await engine.classify(body.texts)
    except TimeoutError:
        raise timed_out(settings.request_timeout_s) from None
    return {"results": results}
