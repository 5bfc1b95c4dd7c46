"""The generator engine: continuous batching over character streams, as a task on the server's event loop.

    submit() --> pending --+          one asyncio task, looping while there is work:
                           |   admit:  prefill the new prompts, together -> hidden, next-token logits
                           +-> sample: each active stream picks its token with its own Sampler (own seed)
                               emit:   text pieces collect on the stream; before each yield, one event per stream
                               retire: finished or cancelled streams leave
                               step:   all remaining streams advance in ONE batched recurrent step
                           ... and every SLICE_S it yields to the loop (YIELD_TURNS), so requests and responses move on;
                               at once after a step that admitted streams, so their first tokens go out.

It runs on the event loop rather than in a thread of its own: a step takes well under a millisecond, and a
thread would pay for every token twice, once to hand it across threads and again in the GIL hand-offs between
the two (measured: 1,900 chars/s for one HTTP stream from a thread). Tokens produced within one slice reach
the client in one write.

A stream's text depends only on its prompt and seed: sampling is per stream, and the batched step computes each
row independently of the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from app.serving.metrics import Metrics
from app.serving.threads import blas_threads
from model.generator.predictor import GeneratorModel
from model.generator.sampling import (
    Decoder,
    Generation,
    SamplingParams,
    TokenLogprob,
    encode_prompt,
    id_to_text,
    sample_batch,
)
from model.generator.stepper import GEMV_ROWS, Stepper
from model.tokenization import SPECIALS

log = logging.getLogger(__name__)


# the engine yields to the event loop at least this often while it has work. Each yield costs a write per stream,
# so the slice is long enough to spread that cost and short enough that the loop is never kept waiting longer
# (bench/serve.py's 32-stream generation row)
SLICE_S = 0.010
# ... for this many turns of the loop: a new request needs several (accept, transport, read, handler), so a burst of
# connections reaches the engine at once. Turns, not a short sleep: asyncio's selector waits whole milliseconds, so a
# sleep of 100 us took 1.17 ms (median), a tenth of the slice with nothing to do
YIELD_TURNS = 4
# ... then more turns while a turn takes longer than BUSY_TURN_S (an idle turn takes about 10 us), up to BUSY_S in
# all: a loop with a burst of connections to take in gets them, where uvloop takes about one a turn
# (bench/overload.py, 300 connections at once with 64 streams generating). It takes at most half of a slice from
# the engine, and only while the loop is busy.
BUSY_TURN_S = 50e-6
BUSY_S = 0.005
# ... and the next slice is this short, so that the loop's next turn comes sooner: a request takes several turns
# (accept, read, handler), and /health's p99 during a burst is what bench/overload.py reports
BUSY_SLICE_S = 0.002


class EngineFull(Exception):
    """No room for another stream."""


@dataclass
class Event:
    kind: str  # "tokens" | "done" | "error"
    pieces: list[str] = field(default_factory=list)  # "tokens": text pieces, in order
    index: int = 0  # "tokens": the first piece's index in the stream
    tokens: list[TokenLogprob] = field(default_factory=list)  # "tokens", for a stream with `logprobs`: the tokens
    text: str = ""  # "error": what went wrong
    result: Generation | None = None  # "done"


@dataclass
class Stream:
    """One request's stream in the engine: its Decoder (model/generator/sampling.py: the same decoding as the CLI's) and
    how its events reach the response."""

    decoder: Decoder
    streaming: bool = True  # False: only the final event is queued (POST /generate)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    ended: bool = False  # the last event ("done" or "error") is queued
    waiter: asyncio.Future[None] | None = field(default=None, repr=False)  # set while the response pauses
    cancelled: bool = False
    pieces: int = 0
    fresh: list[str] = field(default_factory=list)  # pieces not queued yet: one "tokens" event per engine slice
    fresh_scored: list[TokenLogprob] = field(default_factory=list)  # scored tokens not queued yet

    @property
    def prompt_ids(self) -> list[int]:
        return self.decoder.prompt_ids

    @property
    def seed(self) -> int:
        return self.decoder.seed

    @property
    def text(self) -> list[str]:
        return self.decoder.text

    @property
    def scored(self) -> list[TokenLogprob]:
        """Every generated token, scored, when the stream asked for `logprobs` (TGI's details, OpenAI's logprobs):
        their text includes a stop sequence, which the text leaves out."""
        return self.decoder.scored

    def cancel(self) -> None:
        self.cancelled = True

    def flush(self) -> None:
        """Queue the fresh pieces as one event (the engine calls this before it yields to the loop)."""
        if self.fresh or self.fresh_scored:
            index = self.pieces - len(self.fresh)
            self.events.put_nowait(Event("tokens", pieces=self.fresh, index=index, tokens=self.fresh_scored))
            self.fresh, self.fresh_scored = [], []

    def put(self, event: Event) -> None:
        """Queue the last event ("done" or "error"), after the pieces before it."""
        self.flush()
        self.events.put_nowait(event)
        self.ended = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)  # the last event goes out without waiting out the pause


class GeneratorEngine:
    kind = "generator"  # its key in app/serving/registry.py

    def __init__(self, model: GeneratorModel, max_streams: int, metrics: Metrics, name: str = "generator") -> None:
        self.name = name
        self.model = model
        self.version: int | None = None  # set by app/loading.py when the path is a directory of versions
        self.step = Stepper(model.network)
        self.blas = blas_threads()  # one or two threads per step, whichever steps faster now
        self.table = id_to_text(model.tokenizer)
        vocab = model.tokenizer.get_vocab()
        self.specials = frozenset(vocab[t] for t in SPECIALS if t in vocab)  # TGI's tokens say which are special
        self.max_streams = max_streams
        self.active_streams = metrics.active_streams.labels(name)
        self.generated_tokens = metrics.generated_tokens.labels(name)
        self.pending: deque[Stream] = deque()
        self.active: list[Stream] = []  # stream i owns row i of the batch state below
        cfg = model.network.config
        shape = (cfg.num_layers, max_streams, cfg.hidden_size)
        self.h = np.zeros(shape, np.float32)  # hidden state, stepped in place
        self.c = np.zeros(shape, np.float32) if cfg.cell == "lstm" else None
        self.logits = np.zeros((max_streams, cfg.vocab_size), np.float32)  # each row's next-token logits
        self.wakeup = asyncio.Event()  # set by submit(); the loop sleeps on it when there is no work
        self.running = False
        self.task: asyncio.Task[None] | None = None
        self.steps = 0  # batched steps taken (tests read it)

    @property
    def serving(self) -> dict[str, Any]:
        """What /models reports: the Stepper steps the streams in NumPy, on the BLAS threads chosen now."""
        return {"runtime": "numpy", **self.blas.describe()}

    # ---------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        with torch.inference_mode():
            prompt = encode_prompt(self.model.tokenizer, "warm up")
            _, h, c = self.step.prefill([prompt] * 4)
            for _ in range(8):
                self.step.step(np.zeros(4, dtype=np.int64), h, c)

    async def start(self) -> None:
        self.running = True
        self.task = asyncio.create_task(self._run(), name="generator")

    async def drain(self, timeout: float) -> None:
        """Stop once the streams it holds have finished (or after `timeout` s): a hot reload's old engine."""
        deadline = time.monotonic() + timeout
        while (self.pending or self.active) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await self.stop()

    async def stop(self) -> None:
        """Stop stepping; streams still in the engine get an error event."""
        self.running = False
        self.wakeup.set()
        if self.task is not None:
            await self.task

    # ---------------------------------------------------------------- API
    def submit(
        self, prompt: str, params: SamplingParams, streaming: bool = True, logprobs: int | None = None
    ) -> Stream:
        """Queue a stream (on the event loop's thread); EngineFull when every slot is taken. `logprobs`: see
        Stream."""
        return self.submit_many([prompt], [params], streaming, logprobs)[0]

    def submit_many(
        self, prompts: list[str], params: list[SamplingParams], streaming: bool = True, logprobs: int | None = None
    ) -> list[Stream]:
        """Queue several streams at once, or none: EngineFull when fewer slots are free than it needs."""
        free = self.max_streams - len(self.pending) - len(self.active)
        if len(prompts) > free:
            if len(prompts) == 1:
                raise EngineFull(f"all {self.max_streams} generation slots are busy")
            raise EngineFull(f"{len(prompts)} streams asked for, {max(free, 0)} of {self.max_streams} slots free")
        tokenizer, table = self.model.tokenizer, self.table
        streams = [Stream(Decoder(encode_prompt(tokenizer, prompt), p, table, logprobs), streaming=streaming)
                   for prompt, p in zip(prompts, params, strict=True)]  # fmt: skip
        self.pending.extend(streams)
        self.wakeup.set()
        return streams

    @property
    def load(self) -> int:
        return len(self.pending) + len(self.active)

    # ---------------------------------------------------------------- the loop
    async def _run(self) -> None:
        busy = False
        while self.running:
            if not self.pending and not self.active:
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            deadline = time.perf_counter() + (BUSY_SLICE_S if busy else SLICE_S)
            produced = 0
            # what a slice needs once, it takes once (the metrics, inference mode): each costs one to two
            # microseconds, against a step of one stream of under 100 us
            with torch.inference_mode():
                while (self.pending or self.active) and self.running:
                    admitted = list(self.pending)
                    self.pending.clear()
                    try:
                        produced += self._iterate(admitted)
                    except Exception as exc:  # fail the streams, keep the engine alive
                        log.exception("generation step failed")
                        for s in self.active + admitted:
                            s.put(Event("error", text=str(exc)))
                        self.active = []
                    if admitted or time.perf_counter() >= deadline:  # new streams' first tokens go out at once
                        break
            self.generated_tokens.inc(produced)
            self.active_streams.set(len(self.active))
            for s in self.active:
                s.flush()
            busy = await self._yield()
        for s in self.active + list(self.pending):
            s.put(Event("error", text="server shutting down"))
        self.active, self.pending = [], deque()
        self.active_streams.set(0)

    @staticmethod
    async def _yield() -> bool:
        """Let requests in and responses out: a turn of the loop, and more while the turns find work. Whether the
        loop was busy."""
        for _ in range(YIELD_TURNS):
            await asyncio.sleep(0)
        started = turn = time.perf_counter()
        await asyncio.sleep(0)
        busy = False
        while (now := time.perf_counter()) - turn > BUSY_TURN_S and now - started < BUSY_S:
            busy = True
            turn = now
            await asyncio.sleep(0)
        return busy

    def _iterate(self, admitted: list[Stream]) -> int:
        """One step of every active stream, after admitting these: the tokens it produced."""
        admitted = [s for s in admitted if not s.cancelled]
        if admitted:  # prefill the new prompts together, into the rows after the active ones
            logits, h, c = self.step.prefill([s.prompt_ids for s in admitted])
            rows = slice(len(self.active), len(self.active) + len(admitted))
            self.logits[rows], self.h[:, rows] = logits, h
            if self.c is not None:
                self.c[:, rows] = c
            self.active += admitted
        if any(s.cancelled for s in self.active):
            self._keep([i for i, s in enumerate(self.active) if not s.cancelled])
        tokens = self._sample(self.active)
        stepping: list[int] = []  # rows that go on
        next_tokens: list[int] = []
        produced = 0
        for row, (s, picked) in enumerate(zip(self.active, tokens, strict=True)):  # per token: kept lean
            if picked is None:
                continue
            produced += 1
            d = s.decoder
            self._emit(s, d.feed(picked, self.logits[row]))
            if d.logprobs is not None and s.streaming:
                s.fresh_scored.append(d.scored[-1])
            if d.done:
                self._finish(s)
            else:
                stepping.append(row)
                next_tokens.append(picked)
        self._keep(stepping)
        if self.active:
            b = len(self.active)
            c = None if self.c is None else self.c[:, :b]
            stepped = np.array(next_tokens, dtype=np.int64)
            self.logits[:b] = self.blas.run(b <= GEMV_ROWS, self.step.step, stepped, self.h[:, :b], c)
            self.steps += 1
        return produced

    def _keep(self, rows: list[int]) -> None:
        """Keep only these rows (ascending) of the active streams and their state, packed at the top."""
        if len(rows) == len(self.active):
            return
        self.active = [self.active[i] for i in rows]
        if rows:
            idx = np.array(rows)
            for state in (self.h, self.c):
                if state is not None:
                    state[:, : len(rows)] = state[:, idx]
            self.logits[: len(rows)] = self.logits[idx]

    def _sample(self, live: list[Stream]) -> list[int | None]:
        """All live streams' next tokens in one batched call; if that fails, row by row, so one stream's broken
        parameters fail that stream alone (its token is None and it gets an error event)."""
        if not live:
            return []
        try:
            return list(sample_batch(self.logits[: len(live)], [s.decoder.sampler for s in live]))
        except Exception:
            tokens: list[int | None] = []
            for row, s in enumerate(live):
                try:
                    tokens.append(s.decoder.sampler.next_token(self.logits[row]))
                except Exception as exc:
                    log.warning("sampling failed for one stream: %s", exc)
                    s.put(Event("error", text=f"sampling failed: {exc}"))
                    tokens.append(None)
            return tokens

    def _emit(self, s: Stream, piece: str) -> None:
        if piece:
            if s.streaming:
                s.fresh.append(piece)
            s.pieces += 1

    def _finish(self, s: Stream) -> None:
        tail, result = s.decoder.finish()
        self._emit(s, tail)
        s.put(Event("done", result=result))


async def collect(stream: Stream, timeout: float | None = None) -> Generation:
    """Wait for a stream's final result (non-streaming /generate)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        event = await asyncio.wait_for(stream.events.get(), remaining)
        if event.kind == "done":
            assert event.result is not None
            return event.result
        if event.kind == "error":
            raise RuntimeError(event.text)
