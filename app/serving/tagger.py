"""The tagger engine: a dynamic micro-batcher in front of the sequence tagger, as the classifier has.

    text --> words with their offsets (on the loop, model/tagging.py) --+
    tokens ------------------------------------------------------------+--> queue, one item per sentence
         --> [collector: take what waits, then up to max_wait for more, max_size sentences at most]
         --> one forward in the model thread (encode, network, decode) --> each future its tags

An empty sentence is answered at once, without a forward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.serving.batching import MicroBatcher, answer, fail
from app.serving.metrics import Metrics
from model.tagger.predictor import Tagged, TaggerModel
from model.tagger.tagging import tokenize_with_offsets


@dataclass
class _Item:
    tokens: Sequence[str]
    future: asyncio.Future[Tagged]


class TaggerEngine(MicroBatcher[_Item]):
    kind = "tagger"

    def __init__(
        self, model: TaggerModel, max_batch: int, max_wait_ms: float, metrics: Metrics, name: str = "tagger"
    ) -> None:
        super().__init__(name, max_batch, max_wait_ms, metrics, thread="tagger")  # busy: tag() calls
        self.model = model
        self.serving: dict[str, Any] = {"runtime": "torch"}  # what /models reports
        self.version: int | None = None  # set by app/loading.py when the path is a directory of versions

    # ---------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        self.model.infer([["Warm", "up", "the", "tagger", "."], ["and", "its", "characters"]])

    # ---------------------------------------------------------------- API
    async def tag(self, sentences: Sequence[Sequence[str]]) -> list[Tagged]:
        """{"text", "tag", "score"} per token of each pre-tokenized sentence, in input order."""
        loop = asyncio.get_running_loop()
        items = [_Item(tokens, loop.create_future()) for tokens in sentences if tokens]
        for item in items:
            self.queue.put_nowait(item)
        self.busy += 1
        try:
            tagged = iter(await asyncio.gather(*(item.future for item in items)))
            return [next(tagged) if tokens else [] for tokens in sentences]
        finally:
            self.busy -= 1
            for item in items:  # a timed-out or disconnected request leaves nothing behind
                item.future.cancel()

    async def tag_texts(self, texts: Sequence[str]) -> list[Tagged]:
        """Raw texts, split into words; each token also gets its "start" and "end" offsets in its text."""
        spans = [tokenize_with_offsets(text) for text in texts]
        tagged = await self.tag([[token for token, _, _ in words] for words in spans])
        for sentence, words in zip(tagged, spans, strict=True):
            for token, (_, start, end) in zip(sentence, words, strict=True):
                token["start"], token["end"] = start, end
        return tagged

    # ---------------------------------------------------------------- internals
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        labels = self.model.labels
        while True:
            live = await self.next_live()
            try:
                tags, scores = await loop.run_in_executor(self.executor, self.model.infer, [i.tokens for i in live])
            except Exception as exc:
                fail(live, exc, "tagger")
                continue
            answer(live, ([{"text": token, "tag": labels[k], "score": p}
                           for token, k, p in zip(item.tokens, row, probs, strict=True)]
                          for item, row, probs in zip(live, tags, scores, strict=True)))  # fmt: skip
