"""Hugging Face's protocols, as `huggingface_hub.InferenceClient` speaks them: TGI's for generation, TEI's and the
Inference API's for classification, and the Inference API's token classification. Plain request models and the
functions that turn them into this service's calls and its results into their answers; the routes are in
app/routes/hf.py.

Where TGI's behaviour is a choice, this follows TGI: greedy decoding unless `do_sample` or a sampling parameter
asks for sampling (then `seed` is reported, else null); the stop sequence is part of `generated_text`; `index`
counts streamed tokens from 1. A parameter this service cannot honour is refused with a 422 naming it.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas import INTEGRAL, NON_BLANK, Strict, finite, valid_unicode, valid_unicode_items
from model.generator.sampling import MAX_PENALTY, MAX_SEED, MIN_PENALTY, Generation, SamplingParams, TokenLogprob

TGI_DEFAULT_MAX_NEW_TOKENS = 100  # TGI's default when a request sets none (capped by RNN_MAX_NEW_TOKENS)
MAX_STOP = 4  # TGI's --max-stop-sequences default
MAX_TOP_N_TOKENS = 5  # TGI's --max-top-n-tokens default

Int = Annotated[int, INTEGRAL]


def only(*allowed: Any) -> Any:
    """json_schema_extra for a parameter of the protocol that this service honours with these values only: the
    document allows just them (the handler refuses the others with a 422 that names the parameter)."""

    def patch(schema: dict[str, Any]) -> None:
        description = schema.get("description")
        schema.clear()
        schema["enum"] = list(allowed)
        if description:
            schema["description"] = description

    return patch


class TGIParameters(Strict):
    """TGI's `parameters` (text-generation-inference's GenerateParameters)."""

    best_of: Int | None = Field(
        default=None, ge=1, description="only 1: one sequence per request", json_schema_extra=only(None, 1)
    )
    decoder_input_details: bool | None = Field(default=None, description="with `details`: the prompt's tokens, scored")
    details: bool | None = Field(default=None, description="finish reason, seed and every generated token, scored")
    do_sample: bool | None = Field(
        default=None, description="sample; otherwise greedy unless a sampling parameter is set"
    )
    frequency_penalty: float | None = Field(
        default=None, description="not supported (only 0)", json_schema_extra=only(None, 0)
    )
    grammar: Any = Field(default=None, description="not supported: refused", json_schema_extra=only(None))
    max_new_tokens: Int | None = Field(default=None, ge=1, examples=[40])
    repetition_penalty: float | None = Field(default=None, ge=MIN_PENALTY, le=MAX_PENALTY)
    return_full_text: bool | None = Field(default=None, description="prepend the prompt to generated_text")
    seed: Int | None = Field(default=None, ge=0, le=MAX_SEED, examples=[7])
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_STOP, examples=[["\n\n"]]
    )
    temperature: float | None = Field(default=None, gt=0, examples=[0.8])
    top_k: Int | None = Field(default=None, ge=1)
    top_n_tokens: Int | None = Field(default=None, ge=0, le=MAX_TOP_N_TOKENS, description="the n most likely per token")
    top_p: float | None = Field(default=None, gt=0, lt=1)
    truncate: Int | None = Field(default=None, ge=1, description="keep only the prompt's last `truncate` characters")
    typical_p: float | None = Field(default=None, description="not supported: refused", json_schema_extra=only(None))
    watermark: bool | None = Field(
        default=None, description="not supported: refused when true", json_schema_extra=only(None, False)
    )
    adapter_id: str | None = Field(default=None, description="not supported: refused", json_schema_extra=only(None))

    _finite = field_validator("temperature", "repetition_penalty", "top_p", "frequency_penalty", "typical_p")(finite)
    _unicode_stop = field_validator("stop")(lambda values: valid_unicode_items(values, "stop"))

    def unsupported(self) -> list[tuple[str, str]]:
        """(field, why) for each parameter given that this service cannot honour (the route refuses them)."""
        refused = []
        if self.grammar is not None:
            refused.append(("grammar", "grammars (constrained decoding) are not supported"))
        if self.watermark:
            refused.append(("watermark", "watermarking is not supported"))
        if self.adapter_id is not None:
            refused.append(("adapter_id", "adapters (LoRA) are not supported"))
        if self.typical_p is not None:
            refused.append(("typical_p", "typical sampling is not supported"))
        if self.frequency_penalty:
            refused.append(("frequency_penalty", "only 0 is supported; use repetition_penalty"))
        if self.best_of is not None and self.best_of > 1:
            refused.append(("best_of", "only 1 is supported: one sequence per request"))
        return refused

    @property
    def sampling(self) -> bool:
        """TGI samples when asked to, or when a parameter that shapes the distribution is set; else greedy."""
        return bool(self.do_sample or self.temperature not in (None, 1.0) or self.top_k or self.top_p)

    def sampling_params(self, max_new_tokens: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=(self.temperature or 1.0) if self.sampling else 0.0,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repetition_penalty,
            stop=tuple(self.stop),
            seed=self.seed,
        )


TGI_EXAMPLES: Any = [
    {"inputs": "ROMEO:", "parameters": {"max_new_tokens": 40, "do_sample": True, "seed": 7, "details": True}},
    {"inputs": "ROMEO:", "parameters": {"max_new_tokens": 40, "do_sample": True}, "stream": True},
]


class TGIRequest(Strict):
    """TGI's request (POST /, /generate, /generate_stream and a generator's /models/{name})."""

    model_config = ConfigDict(json_schema_extra={"examples": TGI_EXAMPLES})

    inputs: str = Field(..., examples=["ROMEO:"])
    parameters: TGIParameters = Field(default_factory=lambda: TGIParameters())
    stream: bool = False

    @field_validator("inputs")
    @classmethod
    def _unicode(cls, value: str) -> str:
        return valid_unicode(value, "inputs")

    def unsupported(self) -> list[tuple[tuple[str, ...], str]]:
        return [(("parameters", name), why) for name, why in self.parameters.unsupported()]


class TGIToken(BaseModel):
    id: int
    text: str
    logprob: float | None
    special: bool = False


class TGIDetails(BaseModel):
    finish_reason: Literal["length", "eos_token", "stop_sequence"]
    generated_tokens: int
    seed: int | None
    prefill: list[TGIToken] = []
    tokens: list[TGIToken] = []
    top_tokens: list[list[TGIToken]] | None = None


class TGIResponse(BaseModel):
    generated_text: str
    details: TGIDetails | None = None


def token(t: TokenLogprob, specials: frozenset[int]) -> dict[str, Any]:
    return {"id": t.id, "text": t.text, "logprob": t.logprob, "special": t.id in specials}


def top_tokens(t: TokenLogprob, table: dict[int, str], specials: frozenset[int]) -> list[dict[str, Any]]:
    return [{"id": i, "text": table.get(i, "\ufffd"), "logprob": lp, "special": i in specials} for i, lp in t.top]


class TGIAnswer:
    """One TGI request's answer, from the engine's scored tokens."""

    def __init__(
        self, request: TGIRequest, prompt: str, table: dict[int, str], specials: frozenset[int], input_length: int
    ) -> None:
        self.request, self.params = request, request.parameters
        self.prompt, self.table, self.specials = prompt, table, specials
        self.input_length = input_length

    def text(self, tokens: list[TokenLogprob]) -> str:
        """TGI's generated_text: every generated token (a stop sequence included), after the prompt when
        `return_full_text`."""
        generated = "".join(t.text for t in tokens)
        return self.prompt + generated if self.params.return_full_text else generated

    def seed(self, result: Generation) -> int | None:
        return result.seed if self.params.sampling else None

    def response(self, result: Generation, tokens: list[TokenLogprob], prefill: list[TokenLogprob]) -> dict[str, Any]:
        out: dict[str, Any] = {"generated_text": self.text(tokens)}
        if self.params.details:
            details: dict[str, Any] = {
                "finish_reason": result.finish_reason,
                "generated_tokens": result.tokens,
                "seed": self.seed(result),
                "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in prefill],
                "tokens": [token(t, self.specials) for t in tokens],
            }
            if self.params.top_n_tokens:
                details["top_tokens"] = [top_tokens(t, self.table, self.specials) for t in tokens]
            out["details"] = details
        return out

    def event(self, index: int, t: TokenLogprob) -> dict[str, Any]:
        """A streamed token that is not the last (TGI's StreamResponse)."""
        out: dict[str, Any] = {"index": index, "token": token(t, self.specials)}
        if self.params.top_n_tokens:
            out["top_tokens"] = top_tokens(t, self.table, self.specials)
        out["generated_text"] = None
        out["details"] = None
        return out

    def last_event(self, index: int, t: TokenLogprob, result: Generation, tokens: list[TokenLogprob]) -> dict[str, Any]:
        out = self.event(index, t)
        out["generated_text"] = self.text(tokens)
        if self.params.details:
            out["details"] = {"finish_reason": result.finish_reason, "generated_tokens": result.tokens,
                              "seed": self.seed(result), "input_length": self.input_length}  # fmt: skip
        return out


# ------------------------------------------------------------------------------------------ classification
class ClassificationParameters(Strict):
    top_k: Int | None = Field(default=None, ge=1, description="only the k best labels")
    function_to_apply: Literal["softmax", "none", "sigmoid"] | None = Field(
        default=None,
        description="softmax (default): calibrated probabilities; none: their logarithms; sigmoid: refused",
        json_schema_extra=only(None, "softmax", "none"),
    )


Text = Annotated[str, Field(json_schema_extra=NON_BLANK)]
Texts = Text | Annotated[list[Text], Field(min_length=1)]


def _unicode_texts(value: str | list[str]) -> str | list[str]:
    for i, text in enumerate([value] if isinstance(value, str) else value):
        valid_unicode(text, "inputs" if isinstance(value, str) else f"inputs[{i}]")
    return value


class _TextsRequest(Strict):
    """A body whose `inputs` is one text, or a list of them."""

    inputs: Texts

    @field_validator("inputs")
    @classmethod
    def _unicode(cls, value: str | list[str]) -> str | list[str]:
        return _unicode_texts(value)


class ClassificationRequest(_TextsRequest):
    """The Inference API's text classification: one text, or a list of them."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "a gorgeous , witty , seductive movie ."}]})

    parameters: ClassificationParameters = Field(default_factory=lambda: ClassificationParameters())

    def unsupported(self) -> list[tuple[tuple[str, ...], str]]:
        if self.parameters.function_to_apply == "sigmoid":
            return [(("parameters", "function_to_apply"), "'sigmoid' is not supported: the labels are exclusive")]
        return []


class PredictRequest(_TextsRequest):
    """TEI's POST /predict."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "a gorgeous , witty , seductive movie ."},
                                                              {"inputs": ["a gorgeous film .", "dull ."],
                                                               "raw_scores": True}]})  # fmt: skip

    raw_scores: bool = Field(False, description="log-probabilities instead of probabilities")
    truncate: bool | None = Field(
        default=None,
        description="not supported: a text over RNN_MAX_INPUT_CHARS is refused (413), so only false",
        json_schema_extra=only(None, False),
    )
    truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
        "Right", description="accepted; no effect without truncation"
    )

    def unsupported(self) -> list[tuple[tuple[str, ...], str]]:
        if self.truncate:
            return [(("truncate",), "truncation is not supported: a text over the limit is refused")]
        return []


class LabelScore(BaseModel):
    label: str
    score: float


def label_scores(result: dict[str, Any], raw: bool = False, top_k: int | None = None) -> list[dict[str, Any]]:
    """Every label with its score, best first (TEI's Prediction list); `raw`: log-probabilities."""
    ranked = sorted(result["probabilities"].items(), key=lambda item: -item[1])[:top_k]
    if raw:
        return [{"label": label, "score": math.log(p) if p > 0 else -math.inf} for label, p in ranked]
    return [{"label": label, "score": p} for label, p in ranked]


# ------------------------------------------------------------------------------------------ token classification
class TokenClassificationParameters(Strict):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] | None = Field(
        default=None, description="none: one item per word; the others group neighbouring words of one entity (every "
        "token here is a whole word, so they agree); default: simple for BIO tags, else none"
    )  # fmt: skip
    ignore_labels: list[str] | None = Field(default=None, description="labels left out; default ['O']")
    stride: Int | None = Field(default=None, ge=0, description="accepted for compatibility: texts are never windowed")


class TokenClassificationRequest(_TextsRequest):
    """The Inference API's token classification: one text, or a list of them."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "I saw the saw ."}]})

    parameters: TokenClassificationParameters = Field(default_factory=lambda: TokenClassificationParameters())


class TranslationGenerateParameters(Strict):
    """The generation settings a translation takes: the beam and a length cap (other generation settings are refused,
    naming the field)."""

    num_beams: Int | None = Field(default=None, ge=1, le=8, description="beam size; default: the model's")
    max_new_tokens: Int | None = Field(default=None, ge=1, description="at most this many target subwords")


class TranslationParameters(Strict):
    src_lang: str | None = Field(default=None, description="accepted: a model here translates one pair of languages")
    tgt_lang: str | None = Field(default=None, description="accepted: a model here translates one pair of languages")
    clean_up_tokenization_spaces: bool | None = Field(default=None, description="accepted: output is detokenized")
    truncation: Literal["do_not_truncate", "longest_first", "only_first", "only_second"] | None = Field(
        default=None, description="accepted: inputs are never truncated (over RNN_MAX_INPUT_CHARS is a 413)"
    )
    generate_parameters: TranslationGenerateParameters | None = None


class TranslationRequest(_TextsRequest):
    """The Inference API's translation: one text, or a list of them; `[{"translation_text"}]` per text."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "Ein Hund läuft über eine Wiese."}]})

    parameters: TranslationParameters = Field(default_factory=lambda: TranslationParameters())


def _bio(tag: str) -> tuple[str, str]:
    """("B" | "I", entity) as transformers' pipeline reads a tag: B-X, I-X; anything else continues an entity."""
    if tag.startswith(("B-", "I-")):
        return tag[0], tag[2:]
    return "I", tag


def is_bio(labels: list[str]) -> bool:
    return any(label.startswith(("B-", "I-")) for label in labels)


def token_entities(
    text: str, tagged: list[dict[str, Any]], params: TokenClassificationParameters, bio: bool
) -> list[dict[str, Any]]:
    """The Inference API's token classification of one text (TokenClassificationOutputElement items)."""
    ignore = set(params.ignore_labels if params.ignore_labels is not None else ["O"])
    strategy = params.aggregation_strategy or ("simple" if bio else "none")
    if strategy == "none":
        return [{"entity": t["tag"], "score": t["score"], "index": i, "word": t["text"], "start": t["start"],
                 "end": t["end"]} for i, t in enumerate(tagged) if t["tag"] not in ignore]  # fmt: skip
    groups: list[list[dict[str, Any]]] = []
    for t in tagged:
        prefix, entity = _bio(t["tag"])
        if groups and prefix == "I" and _bio(groups[-1][-1]["tag"])[1] == entity:
            groups[-1].append(t)
        else:
            groups.append([t])
    out = []
    for group in groups:
        entity = _bio(group[0]["tag"])[1]
        if entity in ignore or group[0]["tag"] in ignore:
            continue
        start, end = group[0]["start"], group[-1]["end"]
        score = sum(t["score"] for t in group) / len(group)
        out.append({"entity_group": entity, "score": score, "word": text[start:end], "start": start, "end": end})
    return out
