"""What routes need from the app: the engines, the settings and the API-key check.

The model routes (/sentiment, /generate, /tag) call `engine_for` (through `classifier`, `generator` and
`tagger`) and `settings_of` directly: FastAPI resolves each dependency per request (fastapi 0.165: about a
quarter of the app's time per /sentiment request with four of them, measured in-process), and on the hot path
that is event-loop time the batcher needs. They get the API-key check as a dependency of their router only when
a key is configured (app/main.py). The admin routes take the settings through `SettingsDep`. Dependencies are
`async`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request for a dictionary
lookup."""

from __future__ import annotations

import hmac
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError

from app.config import Settings
from app.serving.classifier import ClassifierEngine
from app.serving.generator import GeneratorEngine
from app.serving.registry import Engine
from app.serving.tagger import TaggerEngine


def settings_of(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def model_named(request: Request, name: str, unloaded: str = "the models are not loaded") -> Engine:
    """The engine serving the model called `name`, of any kind: 503 (`unloaded`) while no model is loaded, 404
    for a name no model has."""
    engines: dict[str, Engine] | None = getattr(request.app.state, "engines", None)
    if engines is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, unloaded)
    engine = engines.get(name)
    if engine is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model named {name!r}; loaded: {list(engines)}")
    return engine


def engine_for(request: Request, kind: str, name: str | None = None) -> Engine:
    """The engine serving the model called `name`, which must be of `kind`; without a name, the default model of
    that kind (named after it). 503 while no model is loaded, 404 for a name no model has, 422 for a model of
    another kind."""
    engine = model_named(request, name or kind, f"the {kind} model is not loaded")
    if engine.kind != kind:
        raise RequestValidationError(
            [{"type": "model_kind", "loc": ("body", "model"), "input": name, "ctx": {"kind": engine.kind},
              "msg": f"model {name!r} is a {engine.kind} model; this route needs a {kind} model"}]
        )  # fmt: skip
    return engine


def classifier(request: Request, name: str | None = None) -> ClassifierEngine:
    return cast(ClassifierEngine, engine_for(request, ClassifierEngine.kind, name))


def generator(request: Request, name: str | None = None) -> GeneratorEngine:
    return cast(GeneratorEngine, engine_for(request, GeneratorEngine.kind, name))


def tagger(request: Request, name: str | None = None) -> TaggerEngine:
    return cast(TaggerEngine, engine_for(request, TaggerEngine.kind, name))


async def get_settings(request: Request) -> Settings:
    return settings_of(request)


async def require_api_key(request: Request) -> None:
    """When RNN_API_KEY is set, every protected route needs `Authorization: Bearer <key>`."""
    settings: Settings = request.app.state.settings
    if settings.api_key is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.api_key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing or invalid API key: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


SettingsDep = Annotated[Settings, Depends(get_settings)]
