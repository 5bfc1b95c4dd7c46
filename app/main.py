"""The app factory: `create_app(settings)` assembles routes, middleware and the lifespan that loads the artifacts
into app.state, warms the engines up and only then reports ready. `app = create_app()` is what
`uvicorn app.main:app` serves; `python -m app` runs it with the settings' host and port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse

from app.config import Settings, load_settings
from app.middleware import LimitsMiddleware, MetricsMiddleware
from app.routes import generate, health, sentiment
from app.routes.errors import validation_error
from app.serving.classifier import ClassifierEngine
from app.serving.generator import GeneratorEngine
from app.serving.metrics import Metrics
from model.artifacts import load_generator, load_sentiment
from model.networks import quantize_int8

log = logging.getLogger("app")
STATIC = Path(__file__).parent / "static"


def _load(app: FastAPI, settings: Settings) -> None:
    """Load, verify and warm up both models (in a worker thread: this takes a moment)."""
    sentiment = load_sentiment(settings.sentiment_artifact)
    if settings.quantize == "int8":
        sentiment.network = quantize_int8(sentiment.network)  # type: ignore[assignment]
    classifier = ClassifierEngine(
        sentiment, settings.batch_max_size, settings.batch_max_wait_ms, app.state.metrics, settings.ensemble_threads
    )
    generator = GeneratorEngine(load_generator(settings.generator_artifact), settings.max_streams, app.state.metrics)
    classifier.warmup()
    generator.warmup()
    app.state.classifier, app.state.generator = classifier, generator


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    app.state.not_ready = "loading models"
    try:
        await asyncio.to_thread(_load, app, settings)
    except Exception as exc:
        log.error("start-up refused: %s", exc)
        raise
    await app.state.classifier.start()
    await app.state.generator.start()
    app.state.not_ready = None
    log.info("ready: %s and %s loaded", settings.sentiment_artifact, settings.generator_artifact)
    try:
        yield
    finally:
        app.state.not_ready = "shutting down"
        await app.state.classifier.stop()
        await app.state.generator.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    app = FastAPI(
        title="rnn-nlp-service",
        version="0.1.0",
        summary="Sentiment classification (BiLSTM) and text generation (character GRU) over HTTP.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.not_ready = "starting"
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(health.router)
    app.include_router(sentiment.router)
    app.include_router(generate.router)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.add_middleware(LimitsMiddleware, max_body=settings.max_body_bytes,
                       max_in_flight=settings.max_concurrent_requests, metrics=app.state.metrics)  # fmt: skip
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )  # fmt: skip
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` is built on first access, so importing this module never reads the environment."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
