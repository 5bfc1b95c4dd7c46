"""The classifier engine: a dynamic micro-batcher in front of the sentiment network.

    request texts --> queue --> [collector: take what waits, then up to max_wait for more, max_size at most]
                  --> tokenized on the loop --> one forward in the model thread --> each future its result

The forward runs in one dedicated thread, never on the event loop; the loop does the batch's Python work around
it (tokenizer call, padding, result dicts), so the model thread holds the GIL only to start and finish a forward.
A batch of several, mostly single-text requests on ONNX Runtime goes to the forward process instead
(app/serving/forward_process.py), whose forwards never wait for the loop's GIL.
"""

from __future__ import annotations

import asyncio
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from app.serving.batching import MicroBatcher, answer, fail
from app.serving.forward_process import Forward, ForwardProcess, ForwardProcessExited
from app.serving.metrics import Metrics
from model.sentiment.onnx_runtime import OnnxClassifier, OnnxRunner
from model.sentiment.predictor import Chunk, SentimentModel

log = logging.getLogger(__name__)
WORD = re.compile(r"\S+")
COLLECT = 4  # forwards' worth of texts the collector takes at most
MAX_EXPLAIN_WORDS = 256


@dataclass
class _Item:
    text: str
    future: asyncio.Future[dict[str, Any]]
    single: bool  # the request's only text: the event loop parses and answers one request for this one forward


def feeds(chunks: list[Chunk]) -> list[Forward]:
    """The chunks' padded ids and lengths as the forward process takes them: NumPy arrays, one pair a forward."""
    return [(ids.numpy(), lengths.numpy()) for _, ids, lengths in chunks]


class ClassifierEngine(MicroBatcher[_Item]):
    kind = "sentiment"

    def __init__(
        self,
        model: SentimentModel,
        max_batch: int,
        max_wait_ms: float,
        metrics: Metrics,
        ensemble_threads: int = 1,
        serving: dict[str, Any] | None = None,
        name: str = "sentiment",
        forward_process: bool = False,
    ) -> None:
        # the collector takes up to COLLECT forwards' worth of what waits, and sorts it by length before splitting
        # it into forwards of at most `max_batch` texts: several batch requests sorted together pad less than each
        # apart (bench/runtime.py's batching rows: 256 texts against 64)
        super().__init__(name, COLLECT * max_batch, max_wait_ms, metrics, thread="classifier")  # busy: classify()
        self.model = model
        self.serving = serving or {"runtime": "torch", "quantize": "none"}  # what /models reports
        self.version: int | None = None  # set by app/loading.py when the path is a directory of versions
        # the ensemble's members, side by side (None: one after another in the classifier thread); only a torch
        # runner uses the pool (ONNX Runtime runs its own threads: a pool would sit idle)
        threads = min(ensemble_threads, model.config.ensemble) if isinstance(model.runner, torch.nn.Module) else 1
        self.members = ThreadPoolExecutor(threads, thread_name_prefix="member") if threads > 1 else None
        # where a batch of mostly single-text requests runs: ONNX Runtime on one thread, when it has more. The
        # event loop's work grows with the requests, the forward's with the texts; for one text per request the
        # loop needs a core of its own, and a second forward thread would take it (bench/serve.py measures both)
        runner = model.runner
        self.singles_runner = runner.one_thread if isinstance(runner, OnnxClassifier) else runner
        for each in {runner, self.singles_runner}:  # ONNX Runtime's runners size forwards by their cost model
            if isinstance(each, OnnxRunner):
                each.most = max_batch
        self.fixed = None if isinstance(runner, OnnxRunner) else max_batch  # the others: forwards of max_batch
        # those batches in a process of their own (RNN_FORWARD_PROCESS), started by warmup()
        self.wants_process = forward_process and isinstance(runner, OnnxClassifier)
        self.process: ForwardProcess | None = None

    # ---------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        chunks = self.model.chunks(["warm up the network", "and its tokenizer ."])
        # each runner's outputs, one runner when the two are the same
        outputs = {
            runner: self.model.infer(chunks, self.members, runner)
            for runner in {self.model.runner, self.singles_runner}
        }
        for each in outputs.values():
            self.model.results(self.model.ordered(chunks, each))
        if self.wants_process and self.process is None:
            assert isinstance(self.model.runner, OnnxClassifier)
            try:
                self.process = ForwardProcess(self.model.runner.source)
                got = self.process.run_now(feeds(chunks))
                # the same graph on the same options as the one-thread session: the same bits
                expected = outputs[self.singles_runner]
                if not all(np.array_equal(a, b.numpy()) for a, b in zip(got, expected, strict=True)):
                    raise RuntimeError("its answers differ from the model thread's")
            except (ForwardProcessExited, OSError, RuntimeError) as exc:  # serve on from the model thread
                log.error("no forward process for %s, its forwards run in the model thread: %s", self.name, exc)
                if self.process is not None:
                    self.process.close()
                self.process = None
        self.serving["forwards"] = "process" if self.process is not None else "thread"

    async def start(self) -> None:
        if self.process is not None:
            self.process.attach(asyncio.get_running_loop())
        await super().start()

    async def stop(self) -> None:
        await super().stop()
        if self.process is not None:
            self.process.close()
        if self.members is not None:
            self.members.shutdown(wait=True, cancel_futures=True)

    # ---------------------------------------------------------------- API
    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        items = [_Item(t, loop.create_future(), len(texts) == 1) for t in texts]
        for item in items:
            self.queue.put_nowait(item)
        self.busy += 1
        try:
            if len(items) == 1:  # the common case: no gathering future and its callbacks
                return [await items[0].future]
            return list(await asyncio.gather(*(i.future for i in items)))
        finally:
            self.busy -= 1
            for item in items:  # a timed-out or disconnected request leaves nothing behind
                item.future.cancel()

    async def explain(self, text: str, label_index: int) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        self.busy += 1
        try:
            return await loop.run_in_executor(self.executor, self._occlusion, text, label_index)
        finally:
            self.busy -= 1

    # ---------------------------------------------------------------- internals
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            live = await self.next_live(observe=False)  # its forwards are counted below
            texts = [item.text for item in live]
            try:
                # tokenizing and padding here, on the loop: the model thread then takes the GIL only to start and
                # end the forward (every retake of it from a busy event loop can wait a switch interval, 5 ms)
                chunks = self.model.chunks(texts, self.fixed)
                for _, ids, _ in chunks:
                    self.batch_size.observe(len(ids))
                singles = sum(item.single for item in live) * 2 > len(live)
                # one text alone: the loop has nothing else in flight, so no GIL to wait for, and a thread's
                # hand-off is quicker than a process's (bench/peers.py's rows at 1 connection)
                outputs = await self._forward_process(chunks) if singles and len(live) > 1 else None
                if outputs is None:
                    runner = self.singles_runner if singles else self.model.runner
                    outputs = await loop.run_in_executor(self.executor, self.model.infer, chunks, self.members, runner)
                results = self.model.results(self.model.ordered(chunks, outputs))
            except Exception as exc:
                fail(live, exc, "classifier")
                continue
            answer(live, results)

    async def _forward_process(self, chunks: list[Chunk]) -> list[torch.Tensor] | None:
        """The chunks' outputs from the forward process; None without one, or when it has exited (logged), and the
        model thread then runs them."""
        if self.process is None:
            return None
        if self.process.alive:
            try:
                outputs = await self.process.run(feeds(chunks))
                return [torch.from_numpy(out) for out in outputs]
            except ForwardProcessExited:
                pass
        self.serving["forwards"] = "thread"  # what /models reports from now on
        return None

    def _occlusion(self, text: str, label_index: int) -> list[dict[str, Any]]:
        """Leave-one-out: a word's weight is how much the predicted label's probability drops without it."""
        spans = [m.span() for m in WORD.finditer(text)][:MAX_EXPLAIN_WORDS]
        variants = [text] + [(text[:a] + text[b:]).strip() or " " for a, b in spans]
        with torch.inference_mode():
            probs = self.model.predict_proba(variants, pool=self.members)[:, label_index]
        full = float(probs[0])
        return [{"token": text[a:b], "weight": full - float(p)} for (a, b), p in zip(spans, probs[1:], strict=True)]
