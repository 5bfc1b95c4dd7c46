"""POST /tag and /tag/batch: a tag for each word (parts of speech, or whatever the tagger was trained on)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request

from app.config import Settings
from app.deps import settings_of, tagger
from app.routes.errors import MODEL_ERRORS, check_batch, check_length, in_time
from app.schemas import TagBatchRequest, TagBatchResponse, TagRequest, TagResponse

router = APIRouter(prefix="/tag", tags=["tag"], responses=MODEL_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py). Pre-split words count as a
    text does: at most RNN_MAX_INPUT_CHARS of them (a text that long has no more), each at most that long."""
    chars, texts = settings.max_input_chars, settings.max_batch_texts
    single = schemas["TagRequest"]["properties"]
    single["text"]["maxLength"] = chars
    single["tokens"].update(maxItems=chars)
    single["tokens"]["items"]["maxLength"] = chars
    batch = schemas["TagBatchRequest"]["properties"]
    batch["texts"].update(maxItems=texts)
    batch["texts"]["items"]["maxLength"] = chars
    batch["tokens"].update(maxItems=texts)
    batch["tokens"]["items"].update(maxItems=chars)
    batch["tokens"]["items"]["items"]["maxLength"] = chars


def check_tokens(tokens: list[str], limit: int, where: str = "tokens") -> None:
    if len(tokens) > limit:
        raise HTTPException(413, f"{where} has {len(tokens)} tokens; the limit is {limit} (RNN_MAX_INPUT_CHARS)")
    for i, token in enumerate(tokens):
        check_length(token, limit, f"{where}[{i}]")


@router.post("", response_model=TagResponse, response_model_exclude_none=True)
async def tag(body: TagRequest, request: Request) -> dict[str, Any]:
    """Tag each word of `text`, with its offsets in the text, or each of `tokens`."""
    engine, settings = tagger(request, body.model), settings_of(request)
    limit = settings.max_input_chars
    if "tokens" in body.model_fields_set:
        check_tokens(body.tokens, limit)
        run = engine.tag([body.tokens])
    else:
        check_length(body.text, limit)
        run = engine.tag_texts([body.text])
    [tagged] = await in_time(run, settings.request_timeout_s)
    return {"tokens": tagged}


@router.post("/batch", response_model=TagBatchResponse, response_model_exclude_none=True)
async def tag_batch(body: TagBatchRequest, request: Request) -> dict[str, Any]:
    """Tag up to RNN_MAX_BATCH_TEXTS texts, or lists of tokens; results come back in input order."""
    engine, settings = tagger(request, body.model), settings_of(request)
    limit = settings.max_input_chars
    if "tokens" in body.model_fields_set:
        check_batch(len(body.tokens), settings.max_batch_texts, "token lists")
        for i, tokens in enumerate(body.tokens):
            check_tokens(tokens, limit, f"tokens[{i}]")
        run = engine.tag(body.tokens)
    else:
        check_batch(len(body.texts), settings.max_batch_texts)
        for i, text in enumerate(body.texts):
            check_length(text, limit, f"texts[{i}]")
        run = engine.tag_texts(body.texts)
    results = await in_time(run, settings.request_timeout_s)
    return {"results": [{"tokens": tagged} for tagged in results]}
