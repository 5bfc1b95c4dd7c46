"""What the micro-batching engines (classifier, tagger) share: a queue, one collector task taking the next batch
off it, one model thread, and the count of calls in progress that a hot reload's drain waits for."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

from app.serving.metrics import Metrics

T = TypeVar("T")


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

    async def start(self) -> None:
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
    while len(batch) < max_size and not queue.empty():
        batch.append(queue.get_nowait())
    deadline = loop.time() + max_wait
    while len(batch) < max_size and (remaining := deadline - loop.time()) > 0:
        try:
            batch.append(await asyncio.wait_for(queue.get(), remaining))
        except TimeoutError:
            break
    return batch
