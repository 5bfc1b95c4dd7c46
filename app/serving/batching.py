"""What the micro-batching engines (classifier, tagger) share: taking the next batch off their queue."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


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
