"""POST /sentiment and /sentiment/batch."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from app.config import Settings
from app.deps import classifier, settings_of
from app.routes.errors import MODEL_ERRORS, check_batch, check_length, in_time, timed_out
from app.schemas import SentimentBatchRequest, SentimentBatchResponse, SentimentRequest, SentimentResponse

router = APIRouter(prefix="/sentiment", tags=["sentiment"], responses=MODEL_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py)."""
    schemas["SentimentRequest"]["properties"]["text"]["maxLength"] = settings.max_input_chars
    texts = schemas["SentimentBatchRequest"]["properties"]["texts"]
    texts["maxItems"] = settings.max_batch_texts
    texts["items"]["maxLength"] = settings.max_input_chars


@router.post("", response_model=SentimentResponse, response_model_exclude_none=True)
async def sentiment(body: SentimentRequest, request: Request) -> dict[str, Any]:
    """Classify one text; with `explain`, also each word's contribution to the predicted label."""
    engine, settings = classifier(request, body.model), settings_of(request)
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
    engine, settings = classifier(request, body.model), settings_of(request)
    check_batch(len(body.texts), settings.max_batch_texts)
    for i, text in enumerate(body.texts):
        check_length(text, settings.max_input_chars, f"texts[{i}]")
    return {"results": await in_time(engine.classify(body.texts), settings.request_timeout_s)}
