"""What the app itself costs per request, without the model and without the network: the ASGI app driven in process
by a fake connection, with each engine's call answering at once, through FastAPI's request pipeline and through
app/fastpath.py's layer, side by side.

    python bench/hotpath.py [--requests 3000] [--rounds 6] [--update-readme]

Each round sends `--requests` requests per route and way (the way chosen per route: the fast layer's learned route,
or none, which sends it FastAPI's way); the figure is the process's CPU time per request, the median over rounds.
The default artifacts are loaded (the engines' calls are replaced, so the models never run): the routes, settings
and middleware are what `make serve` runs. Writes bench/results/hotpath.json; `--update-readme` rewrites its table
in docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.config import load_settings  # noqa: E402
from app.fastpath import FastRoutes  # noqa: E402
from app.main import create_app  # noqa: E402
from bench.readme import publish, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = {"label": "positive", "score": 0.98, "probabilities": {"negative": 0.02, "positive": 0.98}}
TAGGED = [{"text": w, "start": 0, "end": len(w), "tag": "NOUN", "score": 0.9} for w in "a gorgeous witty movie".split()]
ROUTES = {
    "/sentiment": {"text": "a gorgeous , witty , seductive movie ."},
    "/sentiment/batch": {"texts": ["a gorgeous , witty , seductive movie ."] * 8},
    "/tag": {"text": "a gorgeous witty movie"},
}


def scope(path: str, body: bytes) -> dict[str, Any]:
    """What uvicorn hands the app for a POST on a keep-alive connection."""
    headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.4"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
            "state": {}}  # fmt: skip


async def measure(requests: int, rounds: int) -> dict[str, Any]:
    settings = load_settings(
        sentiment_artifact=ROOT / "artifacts" / "sentiment", tagger_artifact=ROOT / "artifacts" / "tagger",
        generator_artifact="none", translator_artifact="none",
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        engines = app.state.engines

        async def classify(texts: list[str]) -> list[dict[str, Any]]:
            return [dict(SENTIMENT) for _ in texts]

        async def tag_texts(texts: list[str]) -> list[list[dict[str, Any]]]:
            return [[dict(t) for t in TAGGED] for _ in texts]

        engines["sentiment"].classify = classify
        engines["tagger"].tag_texts = tag_texts
        sent: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(message)

        async def call(path: str, body: bytes) -> int:
            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": body, "more_body": False}

            sent.clear()
            await app(scope(path, body), receive, send)
            return int(sent[0]["status"])

        bodies = {path: json.dumps(b).encode() for path, b in ROUTES.items()}
        for path, body in bodies.items():  # FastAPI's way once: the layer learns the route
            if await call(path, body) != 200:
                raise SystemExit(f"{path} did not answer 200: {sent}")
        layer: Any = app.middleware_stack
        while not isinstance(layer, FastRoutes):
            layer = layer.app
        learned = dict(layer.routes)
        times: dict[str, dict[str, list[float]]] = {p: {"fastapi": [], "fast": []} for p in ROUTES}
        for _ in range(rounds):
            for path, body in bodies.items():
                for way in ("fast", "fastapi"):
                    layer.routes[path] = learned[path] if way == "fast" else None
                    started = time.process_time()
                    for _ in range(requests):
                        await call(path, body)
                    times[path][way].append((time.process_time() - started) / requests * 1e6)
    return {
        "requests": requests,
        "rounds": rounds,
        "us_per_request": {p: {w: statistics.median(v) for w, v in ways.items()} for p, ways in times.items()},
    }


def render(report: dict[str, Any]) -> str:
    rows = [[f"POST {path}", f"{t['fastapi']:.0f}", f"{t['fast']:.0f}", f"{t['fastapi'] / t['fast']:.1f}x"]
            for path, t in report["us_per_request"].items()]  # fmt: skip
    header = ["route (engine answering at once)", "FastAPI's pipeline, µs", "app/fastpath.py, µs", "less"]
    return (
        table(header, rows)
        + f"\n\nCPU time of the app per request, without the network and the model: the median of {report['rounds']} "
        f"rounds of {report['requests']:,} requests per route and way, in one process (`python bench/hotpath.py`)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RNN_LOG_LEVEL", "warning")
    report = asyncio.run(measure(args.requests, args.rounds))
    print(json.dumps(report, indent=2))
    report["markdown"] = render(report)
    publish("hotpath", report, args.update_readme)


if __name__ == "__main__":
    main()
