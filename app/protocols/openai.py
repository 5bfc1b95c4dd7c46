"""OpenAI's completions protocol, as the `openai` SDK speaks it: the request, its mapping onto this service's
sampling, and the completion object, its streamed chunks and `logprobs` (the routes: app/routes/openai.py).

As OpenAI does: a stop sequence is left out of the text; `echo` puts the prompt before it; `logprobs: n` reports
each token's log-probability and the n most likely tokens at its step; `seed` with `n` > 1 gives choice i the seed
`seed + i`, so a request is repeatable. A parameter this service cannot honour (a penalty, a logit bias, a suffix,
`best_of` above 1) is refused with a 400 naming it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.protocols.hf import only
from app.schemas import INTEGRAL, Strict, finite, valid_unicode
from model.generator.sampling import MAX_SEED, Generation, SamplingParams, TokenLogprob

DEFAULT_MAX_TOKENS = 16  # OpenAI's
MAX_N = 128  # OpenAI's
MAX_LOGPROBS = 5  # OpenAI's
MAX_STOP = 4  # OpenAI's
Int = Annotated[int, INTEGRAL]
StopText = Annotated[str, Field(min_length=1, max_length=64)]


class StreamOptions(Strict):
    include_usage: bool | None = None


COMPLETION_EXAMPLES: Any = [
    {"model": "generator", "prompt": "ROMEO:", "max_tokens": 40, "temperature": 0.8, "seed": 7},
    {"model": "generator", "prompt": ["ROMEO:", "JULIET:"], "max_tokens": 40, "n": 2, "stop": ["\n\n"],
     "logprobs": 2, "stream": True},
]  # fmt: skip


class CompletionRequest(Strict):
    """OpenAI's POST /v1/completions body."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": COMPLETION_EXAMPLES})

    model: str = Field(..., examples=["generator"], description="a generator's name in GET /v1/models")
    prompt: str | Annotated[list[str], Field(min_length=1)] = Field(..., examples=["ROMEO:"])
    max_tokens: Int | None = Field(default=None, ge=0, description=f"default {DEFAULT_MAX_TOKENS}")
    temperature: float | None = Field(default=None, ge=0, le=2, description="0: greedy")
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: Int | None = Field(
        default=None, ge=1, le=MAX_N, description="completions per prompt; n x prompts at most RNN_MAX_STREAMS"
    )
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOP)] | None = None
    seed: Int | None = Field(default=None, ge=0, le=MAX_SEED)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: Int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool | None = None
    user: str | None = Field(default=None, description="the end user, for the caller's own records; not used")
    presence_penalty: float | None = Field(default=None, description="only 0", json_schema_extra=only(None, 0))
    frequency_penalty: float | None = Field(default=None, description="only 0", json_schema_extra=only(None, 0))
    best_of: Int | None = Field(default=None, ge=1, description="only 1", json_schema_extra=only(None, 1))
    logit_bias: dict[str, float] | None = Field(
        default=None, description="only empty", json_schema_extra=only(None, {})
    )
    suffix: str | None = Field(default=None, description="not supported", json_schema_extra=only(None, ""))

    _finite = field_validator("temperature", "top_p", "presence_penalty", "frequency_penalty")(finite)

    @field_validator("prompt")
    @classmethod
    def _unicode(cls, value: str | list[str]) -> str | list[str]:
        for i, text in enumerate([value] if isinstance(value, str) else value):
            valid_unicode(text, "prompt" if isinstance(value, str) else f"prompt[{i}]")
        return value

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else self.prompt

    @property
    def choices_per_prompt(self) -> int:
        return self.n or 1

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def unsupported(self) -> list[tuple[tuple[str, ...], str]]:
        """(where, why) for each parameter given that this service cannot honour (the route refuses them)."""
        refused: list[tuple[tuple[str, ...], str]] = []
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                refused.append(((name,), "only 0 is supported"))
        if self.logit_bias:
            refused.append((("logit_bias",), "logit biases are not supported"))
        if self.suffix:
            refused.append((("suffix",), "a suffix (insertion) is not supported"))
        if self.best_of is not None and self.best_of > 1:
            refused.append((("best_of",), "only 1 is supported: every sequence generated is returned"))
        return refused

    def sampling_params(self, choice: int, max_tokens: int) -> SamplingParams:
        """The sampling of choice `choice` (0 .. n-1) of a prompt."""
        greedy = self.temperature == 0 or self.top_p == 0
        temperature = 0.0 if greedy else (1.0 if self.temperature is None else self.temperature)
        seed = None if self.seed is None else (self.seed + choice) % (MAX_SEED + 1)
        top_p = None if greedy or self.top_p in (None, 1) else self.top_p
        return SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=self.stops,
                              seed=seed)  # fmt: skip


class Choice(BaseModel):
    text: str
    index: int
    logprobs: dict[str, Any] | None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


FINISH = {"stop_sequence": "stop", "length": "length"}


def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def envelope(cid: str, created: int, model: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": choices,
            "system_fingerprint": None}  # fmt: skip


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


class LogprobsBuilder:
    """OpenAI's `logprobs` object of one choice (tokens, token_logprobs, top_logprobs, text_offset), built from
    scored tokens as they come: the prompt's first (with `echo`), then the generated tokens that the choice's text
    holds (a stop sequence's tokens are not part of it)."""

    def __init__(self, top_n: int, table: dict[int, str]) -> None:
        self.top_n, self.table = top_n, table
        self.offset = 0  # characters of text covered so far

    def build(self, tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for t in tokens:
            out["tokens"].append(t.text)
            out["token_logprobs"].append(t.logprob)
            top = None if t.logprob is None else {self.table.get(i, "\ufffd"): lp for i, lp in t.top[: self.top_n]}
            out["top_logprobs"].append(top)
            out["text_offset"].append(self.offset)
            self.offset += len(t.text)
        return out


def within(tokens: Sequence[TokenLogprob], chars: int) -> int:
    """How many of `tokens`, from the first, fit in `chars` characters of text."""
    used = 0
    for count, t in enumerate(tokens):
        used += len(t.text)
        if used > chars:
            return count
    return len(tokens)


def model_entry(name: str, created_at: str) -> dict[str, Any]:
    """A model in GET /v1/models."""
    try:
        created = int(datetime.fromisoformat(created_at).timestamp())
    except ValueError:
        created = 0
    return {"id": name, "object": "model", "created": created, "owned_by": "rnn-nlp-service"}


def finish_reason(result: Generation) -> str:
    return FINISH.get(result.finish_reason, result.finish_reason)


def now() -> int:
    return int(time.time())
