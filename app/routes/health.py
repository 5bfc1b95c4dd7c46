"""GET /health (alive), /ready (models loaded and warmed up), /models (model cards), /metrics (Prometheus)."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import require_api_key
from app.schemas import ModelCard
from app.serving.registry import Engine
from app.versions import versioned
from model.versions import numbers, reserved

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive and answering."""
    return {"status": "ok"}


@router.get("/ready", responses={503: {"description": "not ready, with the reason"}})
async def ready(request: Request) -> JSONResponse:
    """200 only when every model (the defaults and RNN_MODELS) is loaded and warmed up; a model waiting for the
    first version in its directory keeps it 503 (the other models answer meanwhile)."""
    state = request.app.state
    reason = getattr(state, "not_ready", None)
    if not reason and getattr(state, "waiting", None):
        reason = "waiting for the first version of: " + ", ".join(f"{n} ({why})" for n, why in state.waiting.items())
    if not reason and not getattr(state, "engines", None):
        reason = "no model loaded"
    if reason:
        return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


def card(name: str, engine: Engine, app: Any) -> dict[str, Any]:
    """A model's card, read from its artifact; for a directory of versions, the one serving, those on disk and
    the policy choosing between them."""
    artifact, cfg = engine.model.artifact, engine.model.artifact.config
    versioned = engine.version is not None
    return {
        "name": name,
        "task": cfg.task,
        "labels": cfg.labels,
        "architecture": cfg.network,
        "parameters": cfg.parameters,
        "metrics": {k: v for k, v in cfg.metrics.items() if k != "samples"},
        "training_data": dataclasses.asdict(cfg.data),
        "created_at": cfg.created_at,
        "sha256": artifact.sha256,
        "serving": engine.serving,
        "preset": cfg.training.get("preset"),
        "version": engine.version,
        "versions": numbers(artifact.path.parent) if versioned else [],
        "in_training": reserved(artifact.path.parent) if versioned else [],
        "policy": policy(app, name) if versioned else None,
    }


def policy(app: Any, name: str) -> str:
    """`latest`, or `pinned N` (by the admin API, or in the model's path)."""
    _, pin = versioned(app).get(name, (None, None))
    return "latest" if pin is None else f"pinned {pin}"


@router.get("/models", response_model=list[ModelCard], dependencies=[Depends(require_api_key)])
async def models(request: Request) -> list[dict[str, Any]]:
    """A card per loaded model, read from its artifact: the defaults (sentiment, generator, tagger), then the
    models RNN_MODELS adds, in its order."""
    engines = getattr(request.app.state, "engines", None) or {}
    return [card(name, engine, request.app) for name, engine in engines.items()]


@router.get("/metrics", response_class=Response, dependencies=[Depends(require_api_key)])
async def metrics(request: Request) -> Response:
    """Prometheus exposition format."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
