"""POST /translate and /translate/batch: a translation of each text (beam search; n-best and alignments on
request)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from app.config import Settings
from app.deps import settings_of, translator
from app.routes.errors import MODEL_ERRORS, check_batch, check_length, check_new_tokens, in_time
from app.schemas import (
    TranslateBatchRequest,
    TranslateBatchResponse,
    TranslateOptions,
    TranslateRequest,
    TranslateResponse,
)
from app.serving.translator import TranslatorEngine
from model.translator.decode import DecodeParams

router = APIRouter(prefix="/translate", tags=["translate"], responses=MODEL_ERRORS)  # the API-key check: app/main.py


def document_limits(schemas: dict[str, Any], settings: Settings) -> None:
    """The OpenAPI document states the limits the handlers enforce (app/main.py)."""
    chars, texts = settings.max_input_chars, settings.max_batch_texts
    schemas["TranslateRequest"]["properties"]["text"]["maxLength"] = chars
    batch = schemas["TranslateBatchRequest"]["properties"]["texts"]
    batch.update(maxItems=texts)
    batch["items"]["maxLength"] = chars
    for name in ("TranslateRequest", "TranslateBatchRequest"):
        new_tokens = schemas[name]["properties"]["max_new_tokens"]
        for option in new_tokens.get("anyOf", [new_tokens]):
            if option.get("type") == "integer":
                option["maximum"] = settings.max_new_tokens


def decode_params(body: TranslateOptions, engine: TranslatorEngine, settings: Settings) -> DecodeParams:
    """The request's decoding parameters over the model's defaults; 422 naming the field for an n-best over the
    beam, or a length cap over RNN_MAX_NEW_TOKENS. Without a cap of its own, a text's length limit still never
    exceeds RNN_MAX_NEW_TOKENS."""
    beam = body.beam if body.beam is not None else engine.model.defaults.beam
    if body.n_best > beam:
        raise RequestValidationError(
            [{"type": "less_than_equal", "loc": ("body", "n_best"), "input": body.n_best, "ctx": {"le": beam},
              "msg": f"n_best ({body.n_best}) must be at most the beam ({beam})"}]
        )  # fmt: skip
    if body.max_new_tokens is not None:
        check_new_tokens(body.max_new_tokens, settings.max_new_tokens, ("body", "max_new_tokens"))
    cap = body.max_new_tokens if body.max_new_tokens is not None else settings.max_new_tokens
    return engine.model.params(beam=beam, n_best=body.n_best, max_new_tokens=cap)


@router.post("", response_model=TranslateResponse, response_model_exclude_none=True)
async def translate(body: TranslateRequest, request: Request) -> dict[str, Any]:
    """Translate `text`: the best translation and its score, the `n_best` - 1 next ones, and on request each
    target subword's most-attended source word."""
    engine, settings = translator(request, body.model), settings_of(request)
    check_length(body.text, settings.max_input_chars)
    params = decode_params(body, engine, settings)
    [result] = await in_time(engine.translate([body.text], params, body.alignment), settings.request_timeout_s)
    return result


@router.post("/batch", response_model=TranslateBatchResponse, response_model_exclude_none=True)
async def translate_batch(body: TranslateBatchRequest, request: Request) -> dict[str, Any]:
    """Translate up to RNN_MAX_BATCH_TEXTS texts with the same options; results come back in input order."""
    engine, settings = translator(request, body.model), settings_of(request)
    check_batch(len(body.texts), settings.max_batch_texts)
    for i, text in enumerate(body.texts):
        check_length(text, settings.max_input_chars, f"texts[{i}]")
    params = decode_params(body, engine, settings)
    results = await in_time(engine.translate(body.texts, params, body.alignment), settings.request_timeout_s)
    return {"results": results}
