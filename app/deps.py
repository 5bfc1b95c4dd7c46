"""What routes need from the app: the engines, the settings and the API-key checks (keys: app/auth.py).

The model routes (/sentiment, /generate, /tag) call `engine_for` (through `classifier`, `generator` and
`tagger`) and `settings_of` directly: FastAPI resolves each dependency per request (fastapi 0.165: about a
quarter of the app's time per /sentiment request with four of them, measured in-process), and on the hot path
that is event-loop time the batcher needs. They get the API-key check as a dependency of their router only when
a key is configured (app/main.py); the admin routes always get the admin-key check. Dependencies are
`async`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request for a dictionary
lookup."""

from __future__ import annotations

from typing import cast

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError

from app.auth import KeyRing, bearer_token
from app.config import Settings, kinds_off
from app.serving.generator import GeneratorEngine
from app.serving.registry import Engine
from app.serving.sentiment import ClassifierEngine
from app.serving.tagger import TaggerEngine
from app.serving.translator import TranslatorEngine

ANSWERING = "rnn.engine"  # the ASGI scope key of the engine a request was given


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
        waiting: dict[str, str] = request.app.state.waiting
        if name in waiting:
            detail = f"model {name!r} is not loaded yet: {waiting[name]} (its first version is being trained)"
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail, headers={"Retry-After": "5"})
        if name in kinds_off(request.app.state.settings):
            variable = f"RNN_{name.upper()}_ARTIFACT"
            detail = f"this deployment does not serve a {name} model ({variable}=none); loaded: {list(engines)}"
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail)
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no model named {name!r}; loaded: {list(engines)}")
    return engine


def answering(request: Request, engine: Engine) -> Engine:
    """`engine` answers this request: the metrics layer counts it and names its version in a header
    (app/middleware.py)."""
    request.scope[ANSWERING] = engine
    return engine


def engine_for(request: Request, kind: str, name: str | None = None) -> Engine:
    """The engine serving the model called `name`, which must be of `kind`; without a name, the default model of
    that kind (named after it). 503 while no model is loaded, 404 for a name no model has, 422 for a model of
    another kind."""
    engine = answering(request, model_named(request, name or kind, f"the {kind} model is not loaded"))
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


def translator(request: Request, name: str | None = None) -> TranslatorEngine:
    return cast(TranslatorEngine, engine_for(request, TranslatorEngine.kind, name))


def check_key(request: Request, keys: KeyRing, variable: str) -> None:
    """401 unless the request carries `Authorization: Bearer <key>` with a key of `keys`."""
    token = bearer_token(request.headers.get("authorization", ""))
    if token is None or not keys.accepts(token):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing or invalid API key: send 'Authorization: Bearer <key>' with a key of {variable}",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_api_key(request: Request) -> None:
    """When RNN_API_KEY (or RNN_API_KEY_FILE) is set, every protected route needs one of its keys."""
    keys: KeyRing = request.app.state.api_keys
    if keys.configured:
        check_key(request, keys, "RNN_API_KEY")


async def require_admin_key(request: Request) -> None:
    """The admin routes need a key of RNN_ADMIN_API_KEY (or RNN_ADMIN_API_KEY_FILE); an inference key is not
    one. With no admin key set they are off (403)."""
    keys: KeyRing = request.app.state.admin_keys
    if not keys.configured:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "admin routes are off: set RNN_ADMIN_API_KEY or RNN_ADMIN_API_KEY_FILE"
        )
    check_key(request, keys, "RNN_ADMIN_API_KEY")
