"""The translator engine: continuous batching over beam searches, so the decoder steps of every request in flight
run as one batch, beams included.

    text --> source subwords (on the loop) --> queue, one item per text, with its decoding parameters
         --> [collector task, looping while there is work:
                admit:   what waits (when idle: what arrives within max_wait), up to max_batch texts in flight,
                         encoded together and added to the search (model/translator/decode.py's BeamSearch)
                drop:    texts whose requests were cancelled leave
                step:    in the model thread, every text's beams advance one subword in ONE decoder step, again
                         and again; a text that finishes gets its answer at once (handed to the loop), and the
                         thread goes back to the collector when enough texts wait to join, or after SLICE_S]

Texts of one request and of different requests, with different beams, n-best and length limits, share the steps
alike; a text joins at the next step rather than after the texts before it have finished, and its result does not
depend on who it shares steps with (tests/model/translator/test_decode.py).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from app.serving.batching import MicroBatcher, answer, fail, next_batch, take_waiting
from app.serving.metrics import Metrics
from model.translator.decode import BeamSearch, DecodeParams, Hypothesis
from model.translator.predictor import TranslatorModel

# the model thread runs steps for at most this long before the collector admits what waits (and drops what has
# gone): the longest a text waits to join under load, and how long a cancelled request's beams go on
SLICE_S = 0.02
# ... or it returns sooner, once the texts waiting are this share of those decoding (or any, when few decode): each
# admission encodes the newcomers and copies the search's encoder states, so under load texts join a few at a time
# rather than one per step (bench/serve.py's /translate rows)
JOIN_SHARE = 0.25


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
                batch = take_waiting(self.queue, self.max_batch - len(live))
            else:
                batch = await next_batch(self.queue, self.max_batch, self.max_wait)
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
                finished = await loop.run_in_executor(
                    self.executor, self._advance, loop, search, admitted, cancelled, dict(live)
                )
            except Exception as exc:  # the search's state is lost: every text in it fails
                fail(live.values(), exc, "translator")
                live.clear()
                search = BeamSearch(self.model.network)
                continue
            for key in finished:  # answered already, from the model thread
                del live[key]

    def _advance(
        self, loop: asyncio.AbstractEventLoop, search: BeamSearch, admitted: dict[Hashable, _Item],
        cancelled: set[Hashable], live: dict[Hashable, _Item],
    ) -> list[Hashable]:  # fmt: skip
        """In the model thread: drop, admit, then step, answering each text as it finishes, until enough texts
        wait to join or the slice is over; the keys answered."""
        search.drop(set(cancelled))
        search.add([i.source for i in admitted.values()], [i.params for i in admitted.values()], list(admitted))
        deadline = time.perf_counter() + SLICE_S
        answered: list[Hashable] = []
        while search:
            finished = search.step()
            if finished:
                items = [live[key] for key, _ in finished]
                loop.call_soon_threadsafe(answer, items, [hyps for _, hyps in finished])
                answered += [key for key, _ in finished]
            joining = min(self.queue.qsize(), self.max_batch - len(search))  # a read of the queue's length only
            if time.perf_counter() > deadline or joining > JOIN_SHARE * len(search):
                break
        return answered
