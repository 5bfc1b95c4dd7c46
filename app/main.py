"""The app factory: `create_app(settings)` assembles routes, middleware and the lifespan that loads the artifacts
into app.state, warms the engines up and only then reports ready. `app = create_app()` is what
`uvicorn app.main:app` serves; `python -m app` runs it with the settings' host and port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.types import ASGIApp

from app import versions
from app.auth import KeyRing
from app.config import Settings, load_settings
from app.deps import require_api_key
from app.fastpath import FastRoutes, Guard
from app.loading import load_engines, settle_heap, start_engines, watch_sighup
from app.middleware import LimitsMiddleware, MetricsMiddleware, RequestMetrics, model_posts
from app.routes import admin, generator, health, hf, openai, sentiment, tagger, translator
from app.routes.errors import http_error, validation_error
from app.serving.metrics import Metrics

log = logging.getLogger("app")
STATIC = Path(__file__).parent / "static"
# the model routes: each module's `router` (behind the API key when one is set) and `document_limits(schemas,
# settings)`; one module per kind, then the other protocols (Hugging Face's, OpenAI's)
MODEL_ROUTES = (sentiment, generator, tagger, translator, hf, openai)  # the kinds' routes, then the protocols'
# the paths under the in-flight limit (RNN_MAX_CONCURRENT_REQUESTS): the model routes, and POST / and /models/...


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    app.state.not_ready = "loading models"
    try:
        app.state.engines = await asyncio.to_thread(
            load_engines, settings, app.state.metrics, app.state.pins, app.state.waiting
        )
    except Exception as exc:
        log.error("start-up refused: %s", exc)
        raise
    await start_engines(app.state.engines, app.state.metrics)
    settle_heap("none")
    app.state.reload_lock = asyncio.Lock()
    app.state.sighup_tasks = set()
    watching = watch_sighup(app)
    poller = None
    if settings.model_poll_seconds > 0 and versions.versioned(app):
        poller = asyncio.create_task(versions.watch(app, settings.model_poll_seconds))
    for name, why in app.state.waiting.items():
        log.info("model %s: waiting for its first version (%s)", name, why)
    if app.state.waiting and poller is None:
        log.warning("RNN_MODEL_POLL_SECONDS is 0: waiting models load only through POST /admin/models/NAME/load")
    app.state.not_ready = None
    log.info("ready: %s", ", ".join(f"{name} ({engine.kind}{_version(engine)})"
                                     for name, engine in app.state.engines.items()))  # fmt: skip
    try:
        yield
    finally:
        app.state.not_ready = "shutting down"
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        if watching:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for engine in app.state.engines.values():
            await engine.stop()


def _version(engine: Any) -> str:
    """`, version N (P preset)` for a model served from a directory of versions."""
    if engine.version is None:
        return ""
    preset = engine.model.artifact.config.training.get("preset")
    return f", version {engine.version}" + (f", {preset} preset" if preset else "")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()
    keyed = settings.keyed  # then the API's description is for key holders too
    app = FastAPI(
        title="rnn-nlp-service",
        version="0.1.0",
        summary="Sentiment classification (BiLSTM), text generation (a character-level GRU by default) and sequence "
        "tagging (BiLSTM) over HTTP.",
        lifespan=lifespan,
        docs_url=None if keyed else "/docs",
        openapi_url=None if keyed else "/openapi.json",
        telemetry=None if settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    if keyed:

        @app.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require_api_key)])
        async def openapi_document() -> JSONResponse:
            return JSONResponse(app.openapi())

        @app.get("/docs", include_in_schema=False, dependencies=[Depends(require_api_key)])
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url="/openapi.json", title="rnn-nlp-service")

    app.state.settings = settings
    app.state.pins = {}  # the admin API's version pins by model name (app/versions.py)
    app.state.waiting = {}  # models whose directory of versions has none yet, by name: why (app/versions.py)
    app.state.api_keys = KeyRing("RNN_API_KEY", settings.api_key, settings.api_key_file)
    app.state.admin_keys = KeyRing("RNN_ADMIN_API_KEY", settings.admin_api_key, settings.admin_api_key_file)
    app.state.metrics = Metrics()
    app.state.not_ready = "starting"
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    # the model routes come first (a request is matched against the routers in order), and they are checked for
    # the API key only when one is set: a dependency costs every request
    guard = [Depends(require_api_key)] if keyed else []
    for routes in MODEL_ROUTES:
        app.include_router(routes.router, dependencies=guard)
    app.include_router(hf.info_router)
    app.include_router(health.router)
    app.include_router(admin.router)

    @app.get("/", response_class=HTMLResponse, tags=["operations"], dependencies=[Depends(require_api_key)])
    async def index() -> FileResponse:
        """The demo page (POST / is TGI's generation route)."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    endpoints = frozenset(
        r.endpoint for routes in MODEL_ROUTES for r in routes.router.routes if isinstance(r, APIRoute)
    )
    counter = RequestMetrics(app.state.metrics)
    app.add_middleware(MetricsMiddleware, counter=counter)
    key_check = require_api_key if keyed else None  # the dependency the model routers are included with
    _limit_outermost(app, settings, endpoints, counter, key_check)
    _document_limits(app, settings)
    return app


def _limit_outermost(app: FastAPI, settings: Settings, endpoints: frozenset[Any], counter: RequestMetrics,
                     guard: Guard | None) -> None:  # fmt: skip
    """LimitsMiddleware around the whole stack, Starlette's own error layer included: a refusal under a burst
    costs the event loop as little as it can (app/middleware.py). Just inside it, app/fastpath.py's layer answers
    the model routes' common requests. With RNN_CORS_ORIGINS, CORS wraps even that, so a browser on an allowed
    origin reads a 503 or 413 (and its Retry-After) instead of an opaque network error; a request without an
    Origin header passes CORS after one header lookup."""
    build = app.build_middleware_stack

    def build_middleware_stack() -> ASGIApp:
        exact, prefixes = model_posts([routes.router for routes in MODEL_ROUTES])  # every model route, by its own
        stack = build()
        if not isinstance(stack, ServerErrorMiddleware):
            raise TypeError(f"FastAPI's middleware stack starts with {type(stack).__name__}, not its error layer")
        fast = FastRoutes(stack, endpoints, counter, stack, guard)
        limited = LimitsMiddleware(fast, max_body=settings.max_body_bytes,
                                   max_in_flight=settings.max_concurrent_requests, metrics=app.state.metrics,
                                   exact=exact, prefixes=prefixes)  # fmt: skip
        if not settings.cors_origins:
            return limited
        return CORSMiddleware(
            limited, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After"],
        )  # fmt: skip

    app.build_middleware_stack = build_middleware_stack  # type: ignore[method-assign]


def _document_limits(app: FastAPI, settings: Settings) -> None:
    """The OpenAPI document states the limits these settings configure (the handlers enforce them with 413/422
    naming the variable), so that clients and fuzzers know them."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            for routes in MODEL_ROUTES:
                routes.document_limits(document["components"]["schemas"], settings)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def __getattr__(name: str) -> FastAPI:
    """`app.main:app` is built on first access, so importing this module never reads the environment."""
    if name == "app":
        return create_app()
    raise AttributeError(name)
