"""Loading the models into engines, at start-up and again on a hot reload (`POST /admin/reload` or SIGHUP)."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal

from fastapi import FastAPI

from app.config import Settings
from app.serving.classifier import ClassifierEngine
from app.serving.generator import GeneratorEngine
from app.serving.metrics import Metrics
from model import onnx_runtime
from model.networks import quantize_int8
from model.predictors import load_generator, load_sentiment

log = logging.getLogger("app")


def load_engines(settings: Settings, metrics: Metrics) -> tuple[ClassifierEngine, GeneratorEngine]:
    """Load, verify and warm up both models (in a worker thread: this takes a moment). Raises ArtifactError (or
    what loading raised) naming the file, before anything is swapped in."""
    sentiment = load_sentiment(settings.sentiment_artifact)
    int8, kind = settings.quantize == "int8", runtime(settings)
    if kind == "onnx":
        sentiment.runner = onnx_runtime.OnnxClassifier(sentiment.network, settings.onnx_threads, int8=int8)
    elif int8:
        sentiment.runner = quantize_int8(sentiment.network)  # type: ignore[assignment]  # an int8 copy
    serving = {"runtime": kind, "quantize": settings.quantize}
    classifier = ClassifierEngine(
        sentiment, settings.batch_max_size, settings.batch_max_wait_ms, metrics, settings.ensemble_threads, serving
    )
    generator = GeneratorEngine(load_generator(settings.generator_artifact), settings.max_streams, metrics)
    classifier.warmup()
    generator.warmup()
    return classifier, generator


def settle_heap(collect: bool = True) -> None:
    """Freeze what is alive once the models are loaded (the app, its libraries, the models: some 220,000 objects)
    out of the garbage collector's sight. Otherwise each full collection scans them all: about 60 ms with every
    request and stream stopped, every few seconds under load.

    After a reload, `collect` first unfreezes and collects, so the previous models' reference cycles are freed
    before the new state is frozen. At start-up there is nothing to free yet (and the tests start hundreds of apps
    in one process: a full collection each time cost them 16 s)."""
    if collect:
        gc.unfreeze()
        gc.collect()
    gc.freeze()


def runtime(settings: Settings) -> str:
    """The classifier runtime RNN_RUNTIME asks for; `auto` picks ONNX Runtime when it is installed."""
    if settings.runtime == "auto":
        return "onnx" if onnx_runtime.available() else "torch"
    return settings.runtime


class ReloadRefused(Exception):
    """The new artifacts did not load; the previous models keep serving."""


async def reload_models(app: FastAPI) -> list[dict[str, str]]:
    """Load the artifacts again from their paths and swap them in: new requests go to the new engines at once,
    the old ones finish what they hold (up to RNN_REQUEST_TIMEOUT_S) and stop. One reload at a time; a bad
    artifact raises ReloadRefused and changes nothing. Returns [{name, sha256}] of what now serves."""
    settings: Settings = app.state.settings
    async with app.state.reload_lock:
        try:
            classifier, generator = await asyncio.to_thread(load_engines, settings, app.state.metrics)
        except Exception as exc:
            log.error("reload refused, still serving the previous models: %s", exc)
            app.state.metrics.reloads.labels("refused").inc()
            raise ReloadRefused(str(exc)) from exc
        await classifier.start()
        await generator.start()
        old = (app.state.classifier, app.state.generator)
        app.state.classifier, app.state.generator = classifier, generator  # one step on the event loop: atomic
        app.state.metrics.reloads.labels("ok").inc()
        log.info("reloaded %s and %s", settings.sentiment_artifact, settings.generator_artifact)
        await asyncio.gather(*(engine.drain(settings.request_timeout_s) for engine in old))
        del old
        settle_heap()  # the old models are collected, the new ones frozen
        return [
            {"name": "sentiment", "sha256": classifier.model.artifact.sha256},
            {"name": "generator", "sha256": generator.model.artifact.sha256},
        ]


def watch_sighup(app: FastAPI) -> bool:
    """SIGHUP reloads the models, as `POST /admin/reload` does. Only where this loop may own signals."""
    loop = asyncio.get_running_loop()

    def on_hup() -> None:
        task = loop.create_task(reload_models(app))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # refused: logged already
        app.state.sighup_tasks.add(task)
        task.add_done_callback(app.state.sighup_tasks.discard)

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (e.g. TestClient), or no SIGHUP
        return False
    return True
