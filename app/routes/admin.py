"""POST /admin/reload: swap in the artifacts found at the configured paths, with no failed request."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, status

from app.deps import require_admin_key
from app.loading import ReloadRefused, reload_models
from app.routes.errors import ERRORS

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
