"""Loading the models into engines, at start-up and again on a hot reload (`POST /admin/reload` or SIGHUP)."""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import logging
import signal
from pathlib import Path
from typing import Literal

from fastapi import FastAPI

from app.config import Settings, artifact_paths, default_names
from app.serving.metrics import Metrics
from app.serving.registry import ENGINES, Engine
from model.artifacts import ArtifactError, load_artifact
from model.tasks import TASKS, by_artifact_task
from model.versions import Version, check, choose, is_versioned, numbers, scan, split_pin

log = logging.getLogger("app")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
LOADING_MMAP = 1 << 20
SERVING_MMAP = 32 << 20


def load_engines(
    settings: Settings, metrics: Metrics, pins: dict[str, int | None] | None = None,
    waiting: dict[str, str] | None = None,
) -> dict[str, Engine]:  # fmt: skip
    """Load, verify and warm up every model, by name: the defaults, then RNN_MODELS (in a worker thread: this
    takes a moment). `pins`: the admin API's version policy by model name, over the paths' own (`path@N`; None:
    the newest). With `waiting`, a directory of versions that has none yet (its trainer is writing the first) is
    not an error: the model is left out and `waiting` says why, until a version appears (app/versions.py). Raises
    ArtifactError (or what loading raised) naming the file, before anything is swapped in."""
    tune_heap(loading=True)
    try:
        engines = {}
        for name, path in model_paths(settings, pins).items():
            base, pin = split_pin(path)
            if waiting is not None and pin is None and is_versioned(base) and not numbers(base):
                waiting[name] = f"no version in {base} yet"
                continue
            engines[name] = load_engine(name, path, settings, metrics)
        return engines
    finally:
        tune_heap(loading=False)


def model_paths(settings: Settings, pins: dict[str, int | None] | None = None) -> dict[str, Path]:
    """Every model's path by name (app/config.py), each with the version the admin API pinned (`@N`) or unpinned."""
    paths = artifact_paths(settings)
    for name, pin in (pins or {}).items():
        if name in paths:
            base, _ = split_pin(paths[name])
            paths[name] = base if pin is None else Path(f"{base}@{pin}")
    return paths


def stamp(path: Path) -> int:
    """A version directory's identity for counting it once: its modification time (0 when it is gone)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def skip(name: str, version: Version, metrics: Metrics) -> None:
    """A version that may not serve: logged and counted, once per version directory (a poll sees it again)."""
    if metrics.skip_version(name, version.number, stamp(version.path)):
        log.warning("model %s: version %d skipped: %s", name, version.number, version.problem)


def pick_version(name: str, path: Path, task: str | None, metrics: Metrics) -> tuple[Path, int | None]:
    """Where the model's artifact is: `path` itself, or in a directory of versions the pinned version (`path@N`)
    or else the newest that verifies and is of `task`; each version that may not serve is logged, counted and
    skipped. Raises ArtifactError when none may."""
    base, pin = split_pin(path)
    if not is_versioned(base):
        if pin is not None:
            raise ArtifactError(f"{base} is one artifact, not a directory of versions: it has no version {pin}")
        return base, None
    if pin is not None:
        there = numbers(base)
        if pin not in there:
            raise ArtifactError(f"{base}: version {pin} is not there (versions on disk: "
                                f"{', '.join(map(str, there)) or 'none'})")  # fmt: skip
        problem = check(base / str(pin), task)
        if problem is not None:
            raise ArtifactError(f"{base}: version {pin} may not serve: {problem}")
        return base / str(pin), pin
    versions = scan(base, task)
    for bad in (v for v in versions if not v.usable):
        skip(name, bad, metrics)
    try:
        chosen = choose(versions)
    except ArtifactError as exc:
        raise ArtifactError(f"{base}: {exc}") from None
    return chosen.path, chosen.number


def expected_task(name: str) -> str | None:
    """The artifact task a default model must hold (one named after its kind); None for an RNN_MODELS entry."""
    return TASKS[name].artifact_task if name in default_names() else None


def load_engine(name: str, path: Path, settings: Settings, metrics: Metrics) -> Engine:
    """The artifact at `path` (or the version of it to serve) as its kind's engine, warmed up. A default model
    must be of its kind; an RNN_MODELS entry is of whatever kind its config.json names."""
    expected = expected_task(name)
    try:
        path, version = pick_version(name, path, expected, metrics)
        artifact = load_artifact(path, expected)
        task = by_artifact_task(artifact.task)
        if task.name not in ENGINES:
            raise ArtifactError(f"{path} holds a {task.name} model, and this service has no engine for that kind")
    except ArtifactError as exc:
        if expected is None:
            raise ArtifactError(f"RNN_MODELS entry {name!r}: {exc}") from exc
        raise
    engine = ENGINES[task.name](name, task.predictor(artifact), settings, metrics)
    engine.version = version
    engine.warmup()
    return engine


async def start_engines(engines: dict[str, Engine], metrics: Metrics) -> None:
    """Start each engine on the loop, and say which version of it serves (rnn_model_version; 0: a plain artifact)."""
    for name, engine in engines.items():
        await engine.start()
        metrics.version.labels(name).set(engine.version or 0)


def describe(engines: dict[str, Engine]) -> list[dict[str, str]]:
    """[{name, task, sha256}] of what serves."""
    return [{"name": name, "task": e.model.artifact.task, "sha256": e.model.artifact.sha256}
            for name, e in engines.items()]  # fmt: skip


def settle_heap(collect: Literal["none", "young", "all"]) -> None:
    """Freeze what is alive once the models are loaded (the app, its libraries, the models: some 220,000 objects)
    out of the garbage collector's sight. Otherwise each full collection scans them all: about 60 ms with every
    request and stream stopped, every few seconds under load.

    `collect` says what is collected first:
    - "none", at start-up: nothing to free yet (and the tests start hundreds of apps in one process: a full
      collection each time cost them 16 s);
    - "young", after a live swap: only the objects made since the last freeze (the new engine's), a fraction of a
      millisecond. The old engine, frozen with the rest, is freed by reference counting when it is dropped: no
      engine holds a reference cycle (tests/app/test_live_versions.py checks every kind). A full collection here
      stopped every request for 90 ms, the whole of a swap's p99 (bench/swaps.py);
    - "all", after a reload: unfreeze and collect everything, so even a reference cycle the previous models left
      is freed. An operator's reload pays the pause once.
    Then the freed heap goes back to the system."""
    if collect == "all":
        gc.unfreeze()
    if collect != "none":
        gc.collect()
        _trim()
    gc.freeze()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """glibc, opened once (each load and reload asks for it three times)."""
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: its allocator has other habits, and these calls do not exist
        return None


def tune_heap(loading: bool) -> None:
    """glibc's allocator around model loading. While models load, blocks of LOADING_MMAP bytes and more get pages
    of their own, which go back to the system when the models are freed; otherwise glibc raises its threshold to
    the largest block freed so far, and after a reload the next models came from the heap the previous ones had
    left in pieces: resident memory grew by 5-15 MB a reload (bench/soak.py, 7 reloads in 4 minutes: +9 %, flat
    with pages of their own). Serving, the threshold is SERVING_MMAP, the top of glibc's own range: the requests'
    buffers come from the heap, as fast as glibc's default once warm (1 MB there cost 10 % of throughput)."""
    libc = _libc()
    if libc is not None:
        threshold = LOADING_MMAP if loading else SERVING_MMAP
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        # as glibc's dynamic mode would: a heap top kept up to twice that, not handed back and asked for again
        # between requests (settle_heap trims it after a reload)
        libc.mallopt(M_TRIM_THRESHOLD, 2 * threshold)


def _trim() -> None:
    """Hand the freed heap back to the system (glibc keeps what was freed otherwise)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


class ReloadRefused(Exception):
    """The new artifacts did not load; the previous models keep serving."""


async def reload_models(app: FastAPI) -> list[dict[str, str]]:
    """Load the artifacts again from their paths and swap them in: new requests go to the new engines at once,
    the old ones finish what they hold (up to RNN_REQUEST_TIMEOUT_S) and stop. One reload at a time; a bad
    artifact raises ReloadRefused and changes nothing. Returns [{name, task, sha256}] of what now serves."""
    settings: Settings = app.state.settings
    async with app.state.reload_lock:
        waiting: dict[str, str] = {}
        try:
            engines = await asyncio.to_thread(load_engines, settings, app.state.metrics, app.state.pins, waiting)
        except Exception as exc:
            log.error("reload refused, still serving the previous models: %s", exc)
            app.state.metrics.reloads.labels("refused").inc()
            raise ReloadRefused(str(exc)) from exc
        await start_engines(engines, app.state.metrics)
        old, app.state.engines = app.state.engines, engines  # one step on the event loop: atomic
        app.state.waiting = waiting
        app.state.metrics.reloads.labels("ok").inc()
        log.info("reloaded %s", ", ".join(engines))
        await asyncio.gather(*(engine.drain(settings.request_timeout_s) for engine in old.values()))
        del old
        settle_heap("all")  # the old models are collected, the new ones frozen
        return describe(engines)


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
