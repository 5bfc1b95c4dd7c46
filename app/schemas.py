"""Request and response models: the API contract (TGI/TEI conventions). Field limits and examples become the
OpenAPI documentation at /docs. Limits that depend on settings (text length, batch size, max_new_tokens) are
checked in the handlers, so the error can name the configured limit."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from app.config import MODEL_NAME
from model.generator.sampling import MAX_PENALTY, MAX_SEED, MIN_PENALTY

MAX_STOP_SEQUENCES = 4
# "not blank" as JSON Schema (ECMA-262) defines whitespace, so the document and the validators agree exactly
WHITESPACE = "\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
NON_BLANK: dict[str, Any] = {"pattern": f"[^{WHITESPACE}]"}
_NON_BLANK = re.compile(f"[^{WHITESPACE}]")


def _integral(value: object) -> object:
    """JSON Schema counts 3.0 as an integer; strict pydantic would not. 2.5 and "3" stay refused."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


INTEGRAL = BeforeValidator(_integral)


def blank(value: str) -> bool:
    return _NON_BLANK.search(value) is None


def add_schema(schemas: dict[str, Any], model: type[BaseModel]) -> None:
    """Put `model`'s schema (and those it refers to) in an OpenAPI document's components: for a route that reads
    its body itself and documents it by reference."""
    document = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, schema in document.pop("$defs", {}).items():
        schemas.setdefault(name, schema)
    schemas.setdefault(model.__name__, document)


def limit_texts(schema: dict[str, Any], max_chars: int, max_items: int) -> None:
    """A `text | [text, ...]` field's schema states the configured limits (RNN_MAX_INPUT_CHARS, _BATCH_TEXTS)."""
    one, many = schema["anyOf"]
    one["maxLength"] = many["items"]["maxLength"] = max_chars
    many["maxItems"] = max_items


def limit_integer(schema: dict[str, Any], maximum: int) -> None:
    """An optional integer field's schema states its configured maximum."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") == "integer":
            option["maximum"] = maximum


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # the documented types only: no "1" for 1, no 0 for false


def model_name(default: str) -> Any:
    """The `model` field of a model route's request: which loaded model answers."""
    return Field(
        None, pattern=MODEL_NAME, examples=[default],
        description=f"the model to answer, by its name in GET /models; default: {default!r}",
    )  # fmt: skip


def valid_unicode(value: str, where: str) -> str:
    """JSON's \\uXXXX escapes can spell a lone surrogate, which no text can hold (and no tokenizer takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{where} holds a lone surrogate at position {exc.start}: not valid Unicode") from None
    return value


def valid_unicode_items(values: list[str], where: str) -> list[str]:
    for i, value in enumerate(values):
        valid_unicode(value, f"{where}[{i}]")
    return values


def readable(value: str, where: str) -> str:
    """A text a model can read: some non-whitespace, and valid Unicode."""
    if blank(value):
        raise ValueError(f"{where} must contain at least one non-whitespace character")
    return valid_unicode(value, where)


def readable_items(values: list[str], where: str) -> list[str]:
    for i, value in enumerate(values):
        readable(value, f"{where}[{i}]")
    return values


def finite(value: float | None) -> float | None:
    """Python's json reads NaN and Infinity, which no sampling or penalty parameter can take."""
    if value is not None and not math.isfinite(value):
        raise ValueError("must be a finite number")
    return value


class SentimentRequest(Strict):
    text: str = Field(
        ..., min_length=1, examples=["a gorgeous , witty , seductive movie ."], json_schema_extra=NON_BLANK
    )
    explain: bool = Field(False, description="also return each word's contribution to the predicted label")
    model: str | None = model_name("sentiment")

    @field_validator("text")
    @classmethod
    def _readable(cls, value: str) -> str:
        return readable(value, "text")


class TokenWeight(BaseModel):
    token: str
    weight: float


class SentimentResponse(BaseModel):
    label: str = Field(examples=["positive"])
    score: float = Field(examples=[0.97])
    probabilities: dict[str, float] = Field(examples=[{"negative": 0.03, "positive": 0.97}])
    explanation: list[TokenWeight] | None = None


class SentimentBatchRequest(Strict):
    texts: list[Annotated[str, Field(json_schema_extra=NON_BLANK)]] = Field(
        ..., min_length=1, examples=[["a gorgeous film .", "dull and far too long ."]]
    )
    model: str | None = model_name("sentiment")

    @field_validator("texts")
    @classmethod
    def _readable(cls, values: list[str]) -> list[str]:
        return readable_items(values, "texts")


class SentimentBatchResponse(BaseModel):
    results: list[SentimentResponse]


class GenerateRequest(Strict):
    prompt: str = Field("", examples=["ROMEO:"])
    max_new_tokens: Annotated[int, Field(ge=1), INTEGRAL] = Field(200, examples=[200])
    temperature: float = Field(1.0, ge=0.0, examples=[0.8], description="0 = greedy")
    top_k: Annotated[int, Field(ge=1), INTEGRAL] | None = Field(None, examples=[None])
    top_p: float | None = Field(None, gt=0.0, le=1.0, examples=[None])
    repetition_penalty: float | None = Field(None, ge=MIN_PENALTY, le=MAX_PENALTY, examples=[None])
    seed: Annotated[int, Field(ge=0, le=MAX_SEED), INTEGRAL] | None = Field(None, examples=[42])
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_STOP_SEQUENCES, examples=[["\n\n"]]
    )
    model: str | None = model_name("generator")

    @field_validator("temperature", "repetition_penalty")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        return finite(value)

    @field_validator("prompt")
    @classmethod
    def _unicode_prompt(cls, value: str) -> str:
        return valid_unicode(value, "prompt")

    @field_validator("stop")
    @classmethod
    def _unicode_stop(cls, values: list[str]) -> list[str]:
        return valid_unicode_items(values, "stop")


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


def exactly_one_of(data: Any, *names: str) -> Any:
    """For a before-validator: the request holds exactly one of these fields (its schema: `oneOf` `required`)."""
    if isinstance(data, dict):
        given = [name for name in names if name in data]
        if len(given) != 1:
            options = " and ".join(f"`{name}`" for name in names)
            raise ValueError(f"give exactly one of {options}; got {' and '.join(given) or 'neither'}")
    return data


def _one_of_schema(*names: str, examples: list[dict[str, Any]]) -> dict[str, Any]:
    return {"oneOf": [{"required": [name]} for name in names], "examples": examples}


def _no_default(schema: dict[str, Any]) -> None:
    """A field of a `oneOf` pair: absent unless given, so its placeholder default is not part of the contract."""
    schema.pop("default", None)


Token = Annotated[str, Field(min_length=1, json_schema_extra=NON_BLANK)]
TAG_EXAMPLES: list[dict[str, Any]] = [{"text": "I saw the saw ."}, {"tokens": ["They", "saw", "a", "dog", "."]}]


def _check_tokens(tokens: list[str], where: str) -> list[str]:
    for i, token in enumerate(tokens):
        if blank(token):
            raise ValueError(f"{where}[{i}] must contain at least one non-whitespace character")
        valid_unicode(token, f"{where}[{i}]")
    return tokens


class TagRequest(Strict):
    """Exactly one of `text` (split into words here; each answer token carries its offsets in it) and `tokens`
    (words already split)."""

    model_config = ConfigDict(json_schema_extra=_one_of_schema("text", "tokens", examples=TAG_EXAMPLES))

    text: str = Field("", examples=["I saw the saw ."], json_schema_extra=_no_default)
    tokens: list[Token] = Field(default_factory=list, examples=[["They", "saw", "a", "dog", "."]],
                                json_schema_extra=_no_default)  # fmt: skip
    model: str | None = model_name("tagger")

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, data: Any) -> Any:
        return exactly_one_of(data, "text", "tokens")

    @field_validator("text")
    @classmethod
    def _unicode_text(cls, value: str) -> str:
        return valid_unicode(value, "text")

    @field_validator("tokens")
    @classmethod
    def _valid_tokens(cls, values: list[str]) -> list[str]:
        return _check_tokens(values, "tokens")


class TaggedToken(BaseModel):
    text: str = Field(examples=["saw"])
    start: int | None = Field(None, examples=[2], description="offset in the text (text input only)")
    end: int | None = Field(None, examples=[5], description="end offset, exclusive (text input only)")
    tag: str = Field(examples=["VERB"])
    score: float = Field(examples=[0.98])


class TagResponse(BaseModel):
    tokens: list[TaggedToken]


class TagBatchRequest(Strict):
    """Exactly one of `texts` (raw texts) and `tokens` (a list of words per sentence)."""

    model_config = ConfigDict(json_schema_extra=_one_of_schema("texts", "tokens", examples=[
        {"texts": ["I saw the saw .", "They saw a dog ."]}, {"tokens": [["I", "saw", "it"], ["the", "dog", "saw"]]},
    ]))  # fmt: skip

    texts: list[str] = Field(default_factory=list, min_length=1, json_schema_extra=_no_default)
    tokens: list[list[Token]] = Field(default_factory=list, min_length=1, json_schema_extra=_no_default)
    model: str | None = model_name("tagger")

    @model_validator(mode="before")
    @classmethod
    def _one_input(cls, data: Any) -> Any:
        return exactly_one_of(data, "texts", "tokens")

    @field_validator("texts")
    @classmethod
    def _unicode_texts(cls, values: list[str]) -> list[str]:
        return valid_unicode_items(values, "texts")

    @field_validator("tokens")
    @classmethod
    def _valid_tokens(cls, values: list[list[str]]) -> list[list[str]]:
        for i, tokens in enumerate(values):
            _check_tokens(tokens, f"tokens[{i}]")
        return values


class TagBatchResponse(BaseModel):
    results: list[TagResponse]


MAX_BEAM = 8


class TranslateOptions(Strict):
    """How to decode: the beam (1 is greedy), how many translations to return, a length cap, alignments."""

    beam: Annotated[int, Field(ge=1, le=MAX_BEAM), INTEGRAL] | None = Field(
        None, examples=[4], description="beam size, 1 (greedy) to 8; default: the model's (GET /models)"
    )
    n_best: Annotated[int, Field(ge=1, le=MAX_BEAM), INTEGRAL] = Field(
        1, examples=[1], description="how many translations to return (at most `beam`): the best, then alternatives"
    )
    max_new_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = Field(
        None, examples=[None], description="at most this many target subwords (default: 1.5 x the source's + 10)"
    )
    alignment: bool = Field(False, description="also return each target subword's most-attended source word")


class TranslateRequest(TranslateOptions):
    text: str = Field(..., min_length=1, examples=["Ein Hund läuft über eine Wiese."], json_schema_extra=NON_BLANK)
    model: str | None = model_name("translator")

    @field_validator("text")
    @classmethod
    def _readable(cls, value: str) -> str:
        return readable(value, "text")


class AlignedToken(BaseModel):
    target: str = Field(examples=["▁dog"], description="a target subword")
    source_word: int = Field(examples=[1], description="the index of the source word it attends to most")
    source: str = Field(examples=["Hund"])
    weight: float = Field(examples=[0.71], description="the attention on that word")


class Alternative(BaseModel):
    translation: str = Field(examples=["A dog is running across a meadow."])
    score: float = Field(examples=[-2.9])


class TranslateResponse(BaseModel):
    translation: str = Field(examples=["A dog runs across a meadow."])
    score: float = Field(examples=[-2.4], description="the length-normalised log-probability of the translation")
    alternatives: list[Alternative] | None = None
    alignment: list[AlignedToken] | None = None


class TranslateBatchRequest(TranslateOptions):
    texts: list[Annotated[str, Field(json_schema_extra=NON_BLANK)]] = Field(
        ..., min_length=1, examples=[["Ein Hund läuft.", "Zwei Kinder spielen im Sand."]]
    )
    model: str | None = model_name("translator")

    @field_validator("texts")
    @classmethod
    def _readable(cls, values: list[str]) -> list[str]:
        return readable_items(values, "texts")


class TranslateBatchResponse(BaseModel):
    results: list[TranslateResponse]


class ErrorResponse(BaseModel):
    detail: str


class HFError(BaseModel):
    """An error on the Hugging Face routes (TGI's and TEI's shape)."""

    error: str
    error_type: str | None = Field(
        None, examples=["validation"], description="validation, overloaded or generation; absent for 401 and 404"
    )


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    """An error on the OpenAI routes (OpenAI's shape)."""

    error: OpenAIErrorDetail


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
    serving: dict[str, object] = {}  # how this process runs it: the classifier's runtime and weights
    preset: str | None = None  # the training preset the artifact was made with (None: settings built by hand)
    version: int | None = None  # the version serving, when the model's path is a directory of versions
    versions: list[int] = []  # the versions on that directory, complete or not
    in_training: list[int] = []  # the versions a trainer is writing there now (reserved, not yet complete)
    policy: str | None = None  # which version serves: `latest`, or `pinned N` (app/versions.py)
