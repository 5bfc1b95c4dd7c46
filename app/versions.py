"""Live versions: a model whose path is a directory of versions (model/versions.py) is swapped to a new version
while it serves, as TensorFlow Serving and Triton's polling mode do.

Each model has a version policy: the newest that may serve (the default), or a pinned number (`path@N` in its
setting, or the admin API's pin, which overrides that until unpinned). Every RNN_MODEL_POLL_SECONDS the poller
asks each versioned model's directory which version its policy wants; when that is not the one serving, `swap`
loads and warms it beside the current one, switches new requests to it in one step on the event loop, lets the
requests and streams the old one holds finish (up to RNN_REQUEST_TIMEOUT_S), then frees it. A version that may
not serve (its manifest does not verify, or it is of another task) is logged and counted once, and skipped; the
current version keeps serving. Rollback is a pin, or removing the newest directory.

One swap at a time (the reload lock, shared with `POST /admin/reload` and SIGHUP): memory holds the models
serving plus one copy of the model being swapped.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI

from app.loading import expected_task, load_engine, model_paths, settle_heap, skip, stamp, start_engines, tune_heap
from app.serving.registry import Engine
from model.artifacts import ArtifactError
from model.versions import Version, check, is_versioned, numbers, split_pin

log = logging.getLogger("app")


class SwapRefused(Exception):
    """The version asked for did not load; the current one keeps serving."""


def versioned(app: FastAPI) -> dict[str, tuple[Path, int | None]]:
    """The models whose path is a directory of versions: name -> (directory, pinned version or None)."""
    sources = {name: _source(path) for name, path in model_paths(app.state.settings, app.state.pins).items()}
    return {name: source for name, source in sources.items() if source is not None}


def _source(path: Path) -> tuple[Path, int | None] | None:
    """(directory, pinned version or None) for a path naming a directory of versions; None for one artifact."""
    base, pin = split_pin(path)
    return (base, pin) if is_versioned(base) else None


def wanted(app: FastAPI, name: str) -> int | None:
    """The version model `name`'s policy wants serving: its pin, or the newest that may serve. The newer ones that
    may not are skipped and counted once; the one serving and the older ones are not read again (checking a
    version hashes its weights). None when there is no such version (the model is not versioned, or nothing there
    may serve, or the pinned version was refused before): the current version keeps serving. Reads the disk:
    call it in a worker thread."""
    path = model_paths(app.state.settings, app.state.pins).get(name)
    source = None if path is None else _source(path)
    engine = app.state.engines.get(name)  # None: waiting for its first version
    if source is None or (engine is None and name not in app.state.waiting):
        return None
    (base, pin), metrics = source, app.state.metrics
    if pin is not None:
        return None if metrics.was_skipped(name, pin, stamp(base / str(pin))) else pin
    task = expected_task(name) or (engine.model.artifact.config.task if engine else None)
    for number in reversed(numbers(base)):
        path = base / str(number)
        if engine is not None and number == engine.version:
            return number
        if metrics.was_skipped(name, number, stamp(path)):
            continue
        problem = check(path, task)
        if problem is None:
            return number
        skip(name, Version(number, path, problem), metrics)
    return None


async def swap(app: FastAPI, name: str, number: int) -> Engine:
    """Serve version `number` of model `name`: load and warm it (in a worker thread), switch new requests to it,
    drain and free the one it replaces. Returns the engine now serving. Raises SwapRefused (the current version
    keeps serving) when it does not load, KeyError for a model not served."""
    settings, metrics = app.state.settings, app.state.metrics
    async with app.state.reload_lock:
        current: Engine | None = app.state.engines.get(name)
        if current is None and name not in app.state.waiting:
            raise KeyError(name)
        if current is not None and current.version == number:
            return current
        base, _ = split_pin(model_paths(settings, app.state.pins)[name])
        try:
            engine = await asyncio.to_thread(_load, name, Path(f"{base}@{number}"), app)
        except Exception as exc:
            metrics.swaps.labels(name, "refused").inc()
            path = base / str(number)
            skip(name, Version(number, path, str(exc)), metrics)  # not tried again until its directory changes
            serving = f"version {current.version} keeps serving" if current else "still waiting"
            log.error("model %s: version %d refused, %s: %s", name, number, serving, exc)
            raise SwapRefused(str(exc)) from exc
        await start_engines({name: engine}, metrics)
        order = model_paths(settings, app.state.pins)  # the configured order, whatever loaded first
        engines = {**app.state.engines, name: engine}
        app.state.engines = {n: engines[n] for n in order if n in engines}  # one step on the event loop: atomic
        app.state.waiting.pop(name, None)
        metrics.swaps.labels(name, "ok").inc()
        preset = engine.model.artifact.config.training.get("preset") or "no"
        was = f"was {current.version}" if current else "its first"
        log.info("model %s: now serving version %d, %s preset (%s)", name, number, preset, was)
        if current is not None:
            await current.drain(settings.request_timeout_s)
            del current
            settle_heap("young")  # the old model is freed by reference counting, the new one frozen
        return engine


def _load(name: str, path: Path, app: FastAPI) -> Engine:
    tune_heap(loading=True)
    try:
        return load_engine(name, path, app.state.settings, app.state.metrics)
    finally:
        tune_heap(loading=False)


async def apply_policy(app: FastAPI, name: str) -> Engine:
    """Swap model `name` to the version its policy wants, when that is not the one serving."""
    number = await asyncio.to_thread(wanted, app, name)
    if number is None:
        if name in app.state.waiting:
            raise SwapRefused(f"no version of {name!r} may serve yet: {app.state.waiting[name]}")
        engine: Engine = app.state.engines[name]
        return engine
    return await swap(app, name, number)


async def poll(app: FastAPI) -> None:
    """Apply every versioned model's policy once; a version that does not load is refused and logged, and not
    tried again until its directory changes."""
    for name in list(versioned(app)):
        try:
            await apply_policy(app, name)
        except SwapRefused:
            pass  # logged and counted by swap
        except (ArtifactError, OSError) as exc:
            log.error("model %s: version check failed: %s", name, exc)


async def watch(app: FastAPI, seconds: float) -> None:
    """Poll every `seconds` until cancelled (at shut-down)."""
    while True:
        await asyncio.sleep(seconds)
        await poll(app)
