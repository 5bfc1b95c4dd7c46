"""What routes need from the app: the engines, the settings and the API-key check.

The model routes (/sentiment, /generate) call `classifier`, `generator` and `settings_of` directly: FastAPI
resolves each dependency per request (fastapi 0.165: about a quarter of the app's time per /sentiment request
with four of them, measured in-process), and on the hot path that is event-loop time the batcher needs. They get
the API-key check as a dependency of their router only when a key is configured (app/main.py). The admin routes
take the settings through `SettingsDep`. Dependencies are `async`: FastAPI runs a plain `def` dependency in its
thread pool, a thread hop per request for a dictionary lookup."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.config import Settings
from app.serving.classifier import ClassifierEngine
from app.serving.generator import GeneratorEngine


def settings_of(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def classifier(request: Request) -> ClassifierEngine:
    """The serving classifier engine, or 503 while none is loaded."""
    engine: ClassifierEngine | None = getattr(request.app.state, "classifier", None)
    if engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the sentiment model is not loaded")
    return engine


def generator(request: Request) -> GeneratorEngine:
    """The serving generator engine, or 503 while none is loaded."""
    engine: GeneratorEngine | None = getattr(request.app.state, "generator", None)
    if engine is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the generator model is not loaded")
    return engine


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
