"""The two reference servers bench/serve.py measures this service against, under the same uvicorn settings:

    python -m bench.servers ceiling --port P   # parses the same request body, returns a constant: the HTTP ceiling
                                               # (/sentiment, and /tag with one constant tag per word)
    python -m bench.servers naive --port P     # the same classifier, one forward per request, no batching, and
                                               # the same translator (RNN_TRANSLATOR_ARTIFACT), one beam search
                                               # per request

Both answer GET /ready with 200 once they can serve, like the service.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI

from app.config import load_settings
from app.schemas import (
    SentimentRequest,
    SentimentResponse,
    TagRequest,
    TagResponse,
    TranslateRequest,
    TranslateResponse,
)
from model.sentiment.predictor import load_sentiment
from model.translator.predictor import load_translator
from model.versions import resolve


def ceiling_app() -> FastAPI:
    app = FastAPI()
    constant = {"label": "positive", "score": 0.5, "probabilities": {"negative": 0.5, "positive": 0.5}}

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/sentiment", response_model=SentimentResponse, response_model_exclude_none=True)
    async def sentiment(body: SentimentRequest) -> dict[str, Any]:
        return constant

    @app.post("/tag", response_model=TagResponse, response_model_exclude_none=True)
    async def tag(body: TagRequest) -> dict[str, Any]:
        words = body.text.split()  # one tag per word, as large an answer as the tagger's (no offsets)
        return {"tokens": [{"text": w, "tag": "NOUN", "score": 0.5} for w in words]}

    return app


def naive_app(artifact: Path, translator: Path | None = None) -> FastAPI:
    """What a first version looks like: a sync route (FastAPI runs it in its thread pool), one forward (or one
    beam search) each."""
    app = FastAPI()
    model = load_sentiment(resolve(artifact, "sentiment"))  # a directory of versions: its newest
    model.predict(["warm up"])
    if translator is not None:
        translation = load_translator(resolve(translator, "translation"))
        translation.translate(["Ein Hund läuft."])

        @app.post("/translate", response_model=TranslateResponse, response_model_exclude_none=True)
        def translate(body: TranslateRequest) -> dict[str, Any]:
            return translation.translate([body.text], translation.params(beam=body.beam))[0]

    @app.get("/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/sentiment", response_model=SentimentResponse, response_model_exclude_none=True)
    def sentiment(body: SentimentRequest) -> dict[str, Any]:
        return model.predict([body.text])[0]

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["ceiling", "naive"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--artifact", type=Path, default=Path(os.environ.get("RNN_SENTIMENT_ARTIFACT", "")))
    args = parser.parse_args()
    threads = int(os.environ.get("RNN_TORCH_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    translator = os.environ.get("RNN_TRANSLATOR_ARTIFACT", "none")
    app = (
        ceiling_app()
        if args.kind == "ceiling"
        else naive_app(args.artifact, None if translator == "none" else Path(translator))
    )
    settings = load_settings()
    # the service's own uvicorn settings (app/__main__.py): one process, RNN_LOOP and RNN_HTTP
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop=settings.loop, http=settings.http,
                log_level=settings.log_level)  # fmt: skip


if __name__ == "__main__":
    main()
