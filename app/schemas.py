"""Request and response models: the API contract (TGI/TEI conventions). Field limits and examples become the
OpenAPI documentation at /docs. Limits that depend on settings (text length, batch size, max_new_tokens) are
checked in the handlers, so the error can name the configured limit."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from model.sampling import MAX_PENALTY, MAX_SEED, MIN_PENALTY

MAX_STOP_SEQUENCES = 4


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def valid_unicode(value: str, where: str) -> str:
    """JSON's \\uXXXX escapes can spell a lone surrogate, which no text can hold (and no tokenizer takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where} holds a lone surrogate at position {exc.start}: not valid Unicode") from None
    return value


class SentimentRequest(Strict):
    text: str = Field(..., min_length=1, examples=["a gorgeous , witty , seductive movie ."])
    explain: bool = Field(False, description="also return each word's contribution to the predicted label")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must contain at least one non-whitespace character")
        return valid_unicode(value, "text")


class TokenWeight(BaseModel):
    token: str
    weight: float


class SentimentResponse(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(examples=[0.97])
    probabilities: dict[str, float] = Field(examples=[{"negative": 0.03, "positive": 0.97}])
    explanation: list[TokenWeight] | None = None


class SentimentBatchRequest(Strict):
    texts: list[str] = Field(..., min_length=1, examples=[["a gorgeous film .", "dull and far too long ."]])

    @field_validator("texts")
    @classmethod
    def _not_blank(cls, values: list[str]) -> list[str]:
        for i, value in enumerate(values):
            if not value.strip():
                raise ValueError(f"texts[{i}] must contain at least one non-whitespace character")
            valid_unicode(value, f"texts[{i}]")
        return values


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResponse]


class GenerateRequest(Strict):
    prompt: str = Field("", examples=["ROMEO:"])
    max_new_tokens: int = Field(200, ge=1, examples=[200])
    temperature: float = Field(1.0, ge=0.0, examples=[0.8], description="0 = greedy")
    top_k: int | None = Field(None, ge=1, examples=[None])
    top_p: float | None = Field(None, gt=0.0, le=1.0, examples=[None])
    repetition_penalty: float | None = Field(None, ge=MIN_PENALTY, le=MAX_PENALTY, examples=[None])
    seed: int | None = Field(None, ge=0, le=MAX_SEED, examples=[42])
    stop: list[str] = Field(default_factory=list, max_length=MAX_STOP_SEQUENCES, examples=[["\n\n"]])

    @field_validator("temperature", "repetition_penalty")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("prompt")
    @classmethod
    def _unicode_prompt(cls, value: str) -> str:
        return valid_unicode(value, "prompt")

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, values: list[str]) -> list[str]:
        if any(not v for v in values):
            raise ValueError("stop sequences must be non-empty strings")
        if any(len(v) > 64 for v in values):
            raise ValueError("stop sequences must be at most 64 characters")
        for i, v in enumerate(values):
            valid_unicode(v, f"stop[{i}]")
        return values


FinishReason = Literal["length", "stop_sequence"]


class GenerateResponse(BaseModel):
    generated_text: str
    finish_reason: FinishReason
    generated_tokens: int
    seed: int


class StreamToken(BaseModel):
    text: str
    index: int


class StreamDetails(BaseModel):
    finish_reason: FinishReason
    generated_tokens: int
    seed: int


class StreamEvent(BaseModel):
    token: StreamToken
    generated_text: str | None = None
    details: StreamDetails | None = None


class ErrorResponse(BaseModel):
    detail: str


class ModelCard(BaseModel):
    name: str
    task: str
    labels: list[str] | None
    architecture: dict[str, object]
    parameters: int
    metrics: dict[str, object]
    training_data: dict[str, object]
    created_at: str
    sha256: str
