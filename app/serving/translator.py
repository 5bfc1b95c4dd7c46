"""The translator engine: continuous batching over beam searches, so the decoder steps of every request in flight
run as one batch, beams included.

    text --> source subwords (on the loop) --> queue, one item per text, with its decoding parameters
         --> [collector task, looping while there is work:
                admit:   what waits (when idle: what arrives within max_wait), up to max_batch texts in flight,
                         encoded together and added to the search (model/translator/decode.py's BeamSearch)
                drop:    texts whose requests were cancelled leave
                step:    in the model thread, every text's beams advance one subword in ONE decoder step, again
                         until one finishes, a text waits to join, or SLICE_S has passed
                answer:  each finished text's future gets its hypotheses]

Texts of one request and of different requests, with different beams, n-best and length limits, share the steps
alike; a text joins at the next step rather than after the texts before it have finished, and its result does not
depend on who it shares steps with (tests/model/translator/test_decode.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.serving.batching import MicroBatcher, answer, fail, next_batch
from app.serving.metrics import Metrics
from model.translator.decode import BeamSearch, DecodeParams, Hypothesis
from model.translator.predictor import TranslatorModel

log = logging.getLogger(__name__)

# the model thread runs steps for at most this long before the collector looks again: it answers finished texts at
# once and admits waiting ones at the next step either way, so the slice only bounds how long a cancelled
# request's beams keep being decoded and how long a reload's drain waits
SLICE_S = 0.05


@dataclass
class _Item:
    source: list[int]
    params: DecodeParams
    future: asyncio.Future[list[Hypothesis]]


class TranslatorEngine(MicroBatcher[_Item]):
    kind = "translator"

    def __init__(
        self, model: TranslatorModel, max_batch: int, max_wait_ms: float, metrics: Metrics, name: str = "translator"
    ) -> None:
        super().__init__(name, max_batch, max_wait_ms, metrics, thread="translator")
        self.model = model
        self.serving: dict[str, Any] = {"runtime": "torch", "beam": model.defaults.beam}  # what /models reports
        self.version: int | None = None  # set by app/loading.py when the path is a directory of versions

    # ---------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        self.model.translate(["Ein Hund läuft über die Wiese.", "Zwei Kinder spielen."], self.model.params(beam=2))

    # ---------------------------------------------------------------- API
    async def translate(
        self, texts: Sequence[str], params: DecodeParams, alignment: bool = False
    ) -> list[dict[str, Any]]:
        """{"translation", "score"} [+ "alternatives", "alignment"] per text, in input order."""
        loop = asyncio.get_running_loop()
        if alignment:
            params = replace(params, attention=True)
        items = [_Item(source, params, loop.create_future()) for source in self.model.encode(texts)]
        for item in items:
            self.queue.put_nowait(item)
        self.queue_depth.set(self.queue.qsize())
        self.busy += 1
        try:
            results = await asyncio.gather(*(item.future for item in items))
            return [self.model.result(text, hyps, alignment) for text, hyps in zip(texts, results, strict=True)]
        finally:
            self.busy -= 1
            for item in items:  # a timed-out or disconnected request leaves nothing behind
                item.future.cancel()

    # ---------------------------------------------------------------- internals
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        search = BeamSearch(self.model.network)
        live: dict[Hashable, _Item] = {}  # the texts in the search, by key
        keys = itertools.count()
        while True:
            if live:
                batch: list[_Item] = []
                while len(live) + len(batch) < self.max_batch and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
            else:
                batch = await next_batch(self.queue, self.max_batch, self.max_wait)
            self.queue_depth.set(self.queue.qsize())
            admitted: dict[Hashable, _Item] = {next(keys): item for item in batch if not item.future.done()}
            cancelled = {key for key, item in live.items() if item.future.done()}
            for key in cancelled:
                del live[key]
            live.update(admitted)
            if not live:
                if search:  # every text in it has gone: a fresh search rather than decoding them on
                    search = BeamSearch(self.model.network)
                continue
            if admitted:
                self.batch_size.observe(len(live))  # the texts decoding together when new ones join
            try:
                finished = await loop.run_in_executor(self.executor, self._advance, search, admitted, cancelled)
            except Exception as exc:  # the search's state is lost: every text in it fails
                fail(live.values(), exc, "translator")
                live.clear()
                search = BeamSearch(self.model.network)
                continue
            answer([live.pop(key) for key, _ in finished], [hyps for _, hyps in finished])

    def _advance(
        self, search: BeamSearch, admitted: dict[Hashable, _Item], cancelled: set[Hashable]
    ) -> list[tuple[Hashable, list[Hypothesis]]]:
        """In the model thread: drop, admit, then step until a text finishes, one waits, or the slice is over."""
        search.drop(set(cancelled))
        search.add([i.source for i in admitted.values()], [i.params for i in admitted.values()], list(admitted))
        deadline = time.perf_counter() + SLICE_S
        finished: list[tuple[Hashable, list[Hypothesis]]] = []
        while search and not finished:
            finished = search.step()
            if self.queue.qsize() or time.perf_counter() > deadline:  # a read of the queue's length only
                break
        return finished
