"""The translator engine: a micro-batcher in front of beam search, so the decoder steps of every request in
flight run as one batch.

    text --> source subwords (on the loop) --> queue, one item per text, with its decoding parameters
         --> [collector: take what waits, then up to max_wait for more, max_size texts at most]
         --> per set of decoding parameters (beam, n-best, length limit, attention), one beam search in the model
             thread: every text's beams are rows of one batch --> each future its hypotheses

Texts of one request and of different requests share a batch alike; a text's result does not depend on its batch
(tests/model/translator/test_decode.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.serving.batching import MicroBatcher, next_batch
from app.serving.metrics import Metrics
from model.translator.decode import DecodeParams, Hypothesis
from model.translator.predictor import TranslatorModel

log = logging.getLogger(__name__)


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
        while True:
            batch = await next_batch(self.queue, self.max_batch, self.max_wait)
            self.queue_depth.set(self.queue.qsize())
            live = [item for item in batch if not item.future.done()]
            if not live:
                continue
            self.batch_size.observe(len(live))
            groups: dict[DecodeParams, list[_Item]] = {}
            for item in live:
                groups.setdefault(item.params, []).append(item)
            for params, items in groups.items():
                try:
                    found = await loop.run_in_executor(self.executor, self.model.search, [i.source for i in items],
                                                       params)  # fmt: skip
                except Exception as exc:  # a model failure fails these requests, not the batcher
                    log.exception("translator batch failed")
                    for item in items:
                        if not item.future.done():
                            item.future.set_exception(exc)
                    continue
                for item, hyps in zip(items, found, strict=True):
                    if not item.future.done():
                        item.future.set_result(hyps)
