"""app/middleware.py: the concurrency limit covers exactly the model routes, read from their own routers, so a
route added to a model router is limited without a list to keep by hand."""

from __future__ import annotations

from fastapi import APIRouter

from app.main import MODEL_ROUTES
from app.middleware import model_posts


def test_every_model_post_route_is_limited_and_nothing_else() -> None:
    exact, prefixes = model_posts([routes.router for routes in MODEL_ROUTES])
    for path in ("/sentiment", "/sentiment/batch", "/generate", "/generate/stream", "/generate_stream", "/tag",
                 "/tag/batch", "/", "/predict", "/v1/completions"):  # fmt: skip
        assert path in exact, path
    assert prefixes == ("/models/",)  # TGI's POST /models/{name}
    assert "/v1/models" not in exact  # a GET: listing models is not a model request


def test_a_route_added_to_a_model_router_is_limited() -> None:
    router = APIRouter()

    @router.post("/translate")
    async def translate() -> None: ...

    @router.get("/translate/languages")
    async def languages() -> None: ...

    @router.post("/translate/{pair}/batch")
    async def batch(pair: str) -> None: ...

    exact, prefixes = model_posts([router])
    assert exact == {"/translate"} and prefixes == ("/translate/",)
