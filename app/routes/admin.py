"""POST /admin/reload: swap in the artifacts found at the configured paths, with no failed request; and a
versioned model's policy (app/versions.py): load the version it wants now, pin a version, unpin."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from app import versions
from app.deps import model_named, require_admin_key
from app.loading import ReloadRefused, reload_models
from app.routes.errors import ERRORS
from app.routes.health import card
from app.schemas import ModelCard

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin_key)], responses=ERRORS)


@router.post(
    "/reload",
    responses={
        403: {"description": "no RNN_ADMIN_API_KEY is set"},
        422: {"description": "the new artifacts were refused"},
    },
)
async def reload(request: Request) -> dict[str, Any]:
    """Load every artifact again from its path (RNN_SENTIMENT_ARTIFACT, RNN_GENERATOR_ARTIFACT,
    RNN_TAGGER_ARTIFACT and RNN_MODELS) and swap them all in at once. New requests go to the new models at once;
    requests already in flight finish on the old ones. A corrupt or incomplete artifact is refused (422, naming
    the file) and the previous models keep serving."""
    try:
        models = await reload_models(request.app)
    except ReloadRefused as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, f"reload refused, still serving the previous models: {exc}"
        ) from None
    return {"reloaded": True, "models": models}


class Pin(BaseModel):
    version: int = Field(ge=1, le=999_999_999, description="the version to serve until unpinned")


VERSIONED: dict[int | str, dict[str, Any]] = {
    403: {"description": "no RNN_ADMIN_API_KEY is set"},
    404: {"description": "no model of that name"},
    409: {"description": "the model's path is one artifact, not a directory of versions"},
    422: {"description": "the version was refused (not there, unverified, another task); the current one serves"},
}


def _versioned(request: Request, name: str) -> None:
    """404 for an unknown model, 409 for one that is a plain artifact; a model waiting for its first version is
    one of versions."""
    if name not in request.app.state.waiting:
        model_named(request, name)
    if name not in versions.versioned(request.app):
        detail = f"model {name!r} is one artifact, not a directory of versions: it has no versions"
        raise HTTPException(status.HTTP_409_CONFLICT, detail)


async def _serve(request: Request, name: str, number: int | None) -> dict[str, Any]:
    """Swap model `name` to version `number` (None: what its policy wants) and answer its card."""
    try:
        if number is None:
            engine = await versions.apply_policy(request.app, name)
        else:
            engine = await versions.swap(request.app, name, number)
    except versions.SwapRefused as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"version refused: {exc}") from None
    return card(name, engine, request.app)


@router.post("/models/{name}/load", response_model=ModelCard, responses=VERSIONED)
async def load(name: str, request: Request) -> dict[str, Any]:
    """Apply the model's version policy now, as the poller does every RNN_MODEL_POLL_SECONDS: load and swap in
    the newest version that may serve (or the pinned one), when it is not the one serving."""
    _versioned(request, name)
    return await _serve(request, name, None)


@router.put("/models/{name}/pin", response_model=ModelCard, responses=VERSIONED)
async def pin(name: str, body: Pin, request: Request) -> dict[str, Any]:
    """Serve this version and keep it (a rollback, or holding a version while newer ones arrive) until unpinned;
    it overrides the pin in the model's path (`path@N`). A version that does not load is refused (422) and
    nothing changes."""
    _versioned(request, name)
    pins = request.app.state.pins
    before = dict(pins)
    pins[name] = body.version
    try:
        return await _serve(request, name, body.version)
    except HTTPException:
        request.app.state.pins = before  # the policy as it was
        raise


@router.delete("/models/{name}/pin", response_model=ModelCard, responses=VERSIONED)
async def unpin(name: str, request: Request) -> dict[str, Any]:
    """Back to the newest version that may serve (also over a pin in the model's path), swapped in now."""
    _versioned(request, name)
    request.app.state.pins[name] = None
    return await _serve(request, name, None)
