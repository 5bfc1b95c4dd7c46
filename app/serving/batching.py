"""What the micro-batching engines (classifier, tagger, translator) share: a queue, one collector task taking the
next batch off it, one model thread, the count of calls in progress that a hot reload's drain waits for, and how a
batch's futures get their answers or, when the model fails, its error (the requests fail, the collector goes on)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from app.serving.metrics import Metrics

log = logging.getLogger(__name__)


class Waiting(Protocol):
    """A queued item: its request awaits `future`, which is done early when the request has gone."""

    @property
    def future(self) -> asyncio.Future[Any]: ...


T = TypeVar("T", bound=Waiting)


class MicroBatcher(Generic[T]):
    """The lifecycle of a micro-batching engine; a subclass gives `kind` and `_collect` (its batch loop)."""

    kind = ""  # its key in app/serving/registry.py

    def __init__(self, name: str, max_batch: int, max_wait_ms: float, metrics: Metrics, thread: str) -> None:
        self.name = name
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.batch_size = metrics.batch_size.labels(name)
        self.queue_depth = metrics.queue_depth.labels(name)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread)
        self.queue: asyncio.Queue[T] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self.busy = 0  # calls in progress

    async def _collect(self) -> None:
        raise NotImplementedError

    async def next_live(self, observe: bool = True) -> list[T]:
        """The next batch off the queue (next_batch) without the items whose requests have gone, counted in the
        batch-size histogram as one forward (`observe`; an engine that splits a batch counts its forwards)."""
        while True:
            batch = await next_batch(self.queue, self.max_batch, self.max_wait)
            live = [item for item in batch if not item.future.done()]
            if live:
                if observe:
                    self.batch_size.observe(len(live))
                return live

    async def start(self) -> None:
        # the gauge reads the serving engine's queue when /metrics is scraped, instead of being set as each request
        # queues and each batch leaves (a lock and two calls each time, on the event loop)
        self.queue_depth.set_function(self.queue.qsize)
        self._task = asyncio.create_task(self._collect(), name=f"{self.kind}-batcher-{self.name}")

    async def drain(self, timeout: float) -> None:
        """Stop once the calls in progress have their answers (or after `timeout` s): a hot reload's old engine."""
        deadline = time.monotonic() + timeout
        while self.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.stop()

    async def stop(self) -> None:
        """Cancel the collector and end the model thread. The engine lets go of the cancelled task: the task's
        error holds the collector's frame, and that frame the engine, a reference cycle that only a full
        collection frees (a swap frees the old engine by reference counting: app/loading.py's settle_heap)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])
        self.executor.shutdown(wait=True, cancel_futures=True)


async def next_batch(queue: asyncio.Queue[T], max_size: int, max_wait: float) -> list[T]:
    """Wait for an item; take what else waits, then more as it comes for up to `max_wait` s; `max_size` at most."""
    loop = asyncio.get_running_loop()
    batch = [await queue.get()]
    batch += take_waiting(queue, max_size - 1)
    deadline = loop.time() + max_wait
    while len(batch) < max_size and (remaining := deadline - loop.time()) > 0:
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch


def take_waiting(queue: asyncio.Queue[T], room: int) -> list[T]:
    """What waits on the queue now, `room` items at most, without waiting for more."""
    items: list[T] = []
    while len(items) < room and not queue.empty():
        items.append(queue.get_nowait())
    return items


def answer(items: Iterable[Waiting], results: Iterable[Any]) -> None:
    """Each item's future its result, unless its request has gone."""
    for item, result in zip(items, results, strict=True):
        if not item.future.done():
            item.future.set_result(result)


def fail(items: Iterable[Waiting], exc: BaseException, kind: str) -> None:
    """A model failure fails these requests, not the collector: logged once, each waiting future gets `exc`."""
    log.error("%s batch failed", kind, exc_info=exc)
    for item in items:
        if not item.future.done():
            item.future.set_exception(exc)
