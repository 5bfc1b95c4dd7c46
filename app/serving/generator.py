"""The generator engine: continuous batching over character streams.

    submit() --> pending --+                     one model thread, looping:
                           |   admit: prefill each new prompt (its own forward) -> hidden, next-token logits
                           +-> sample: each active stream picks its token with its own Sampler (own seed)
                               emit:   text pieces go to the stream's asyncio queue (thread-safe)
                               retire: finished or cancelled streams leave
                               step:   all remaining streams advance in ONE batched recurrent step

A stream's text depends only on its prompt and seed: sampling is per stream, and the batched step computes each
row independently of the others.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import torch

from app.serving.metrics import Metrics
from model.artifacts import GeneratorModel
from model.networks import Hidden
from model.sampling import (
    Generation,
    Sampler,
    SamplingParams,
    Stepper,
    StopMatcher,
    encode_prompt,
    id_to_text,
    sample_batch,
)

log = logging.getLogger(__name__)


class EngineFull(Exception):
    """No room for another stream."""


@dataclass
class Event:
    kind: str  # "token" | "done" | "error"
    text: str = ""
    index: int = 0
    result: Generation | None = None


@dataclass
class Stream:
    prompt_ids: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    sampler: Sampler = field(init=False)
    matcher: StopMatcher = field(init=False)
    cancelled: threading.Event = field(default_factory=threading.Event)
    hidden: Hidden | None = None
    logits: torch.Tensor | None = None
    count: int = 0
    pieces: int = 0
    text: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sampler = Sampler(self.params)
        self.matcher = StopMatcher(self.params.stop)

    @property
    def seed(self) -> int:
        return self.sampler.seed

    def cancel(self) -> None:
        self.cancelled.set()

    def put(self, event: Event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class GeneratorEngine:
    def __init__(self, model: GeneratorModel, max_streams: int, metrics: Metrics) -> None:
        self.model = model
        self.net = model.network
        self.step = Stepper(model.network)
        self.table = id_to_text(model.tokenizer)
        self.max_streams = max_streams
        self.metrics = metrics
        self.pending: deque[Stream] = deque()
        self.active: list[Stream] = []
        self.wakeup = threading.Condition()
        self.running = False
        self.thread: threading.Thread | None = None
        self.steps = 0  # batched steps taken (tests read it)

    # ---------------------------------------------------------------- lifecycle
    def warmup(self) -> None:
        with torch.inference_mode():
            _, hidden = self.net(torch.tensor([encode_prompt(self.model.tokenizer, "warm up")]))
            hidden = self._cat([hidden] * 4)
            for _ in range(8):
                _, hidden = self.step(torch.zeros(4, dtype=torch.long), hidden)

    def start(self) -> None:
        self.running = True
        self.thread = threading.Thread(target=self._run, name="generator", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        with self.wakeup:
            self.running = False
            self.wakeup.notify_all()
        if self.thread is not None:
            self.thread.join(timeout=10)

    # ---------------------------------------------------------------- API
    def submit(self, prompt: str, params: SamplingParams) -> Stream:
        stream = Stream(encode_prompt(self.model.tokenizer, prompt), params, asyncio.get_running_loop())
        with self.wakeup:
            if len(self.pending) + len(self.active) >= self.max_streams:
                raise EngineFull(f"all {self.max_streams} generation slots are busy")
            self.pending.append(stream)
            self.wakeup.notify()
        return stream

    @property
    def load(self) -> int:
        return len(self.pending) + len(self.active)

    # ---------------------------------------------------------------- the loop
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self.wakeup:
                while self.running and not self.pending and not self.active:
                    self.wakeup.wait()
                if not self.running:
                    break
                admitted = list(self.pending)
                self.pending.clear()
            try:
                with torch.inference_mode():
                    self._iterate(admitted)
            except Exception as exc:  # fail the streams, keep the engine alive
                log.exception("generation step failed")
                for s in self.active + admitted:
                    s.put(Event("error", text=str(exc)))
                self.active = []
            self.metrics.active_streams.set(len(self.active))
        for s in self.active + list(self.pending):
            s.put(Event("error", text="server shutting down"))

    def _iterate(self, admitted: list[Stream]) -> None:
        for s in admitted:
            if s.cancelled.is_set():
                continue
            for token in s.prompt_ids:
                s.sampler.observe(token)
            logits, s.hidden = self.net(torch.tensor([s.prompt_ids]))  # prefill: (1, T, V)
            s.logits = logits[0, -1]
            self.active.append(s)
        self.metrics.active_streams.set(len(self.active))
        live = [s for s in self.active if not s.cancelled.is_set()]
        tokens = self._sample(live)
        stepping: list[Stream] = []
        next_tokens: list[int] = []
        for s, picked in zip(live, tokens, strict=True):
            if picked is None:
                continue
            s.count += 1
            self._emit(s, s.matcher.feed(self.table.get(picked, "\ufffd")))
            if s.count >= s.params.max_new_tokens or s.matcher.stopped:
                self._finish(s)
            else:
                stepping.append(s)
                next_tokens.append(picked)
        self.metrics.generated_tokens.inc(sum(t is not None for t in tokens))
        self.active = stepping
        if stepping:
            logits, hidden = self.step(next_tokens, self._cat([s.hidden for s in stepping]))
            self.steps += 1
            for i, s in enumerate(stepping):
                s.logits = logits[i]
                s.hidden = self._slice(hidden, i)

    def _sample(self, live: list[Stream]) -> list[int | None]:
        """All live streams' next tokens in one batched call; if that fails, row by row, so one stream's broken
        parameters fail that stream alone (its token is None and it gets an error event)."""
        if not live:
            return []
        try:
            return list(sample_batch(torch.stack([s.logits for s in live]), [s.sampler for s in live]))  # type: ignore[misc]
        except Exception:
            tokens: list[int | None] = []
            for s in live:
                try:
                    tokens.append(s.sampler.next_token(s.logits))  # type: ignore[arg-type]
                except Exception as exc:
                    log.warning("sampling failed for one stream: %s", exc)
                    s.put(Event("error", text=f"sampling failed: {exc}"))
                    tokens.append(None)
            return tokens

    def _emit(self, s: Stream, piece: str) -> None:
        if piece:
            s.text.append(piece)
            s.put(Event("token", text=piece, index=s.pieces))
            s.pieces += 1

    def _finish(self, s: Stream) -> None:
        self._emit(s, s.matcher.flush())
        reason = "stop_sequence" if s.matcher.stopped else "length"
        s.put(Event("done", result=Generation("".join(s.text), reason, s.count, s.seed)))

    @staticmethod
    def _cat(hiddens: list[Any]) -> Hidden:
        if isinstance(hiddens[0], tuple):
            return (torch.cat([h[0] for h in hiddens], dim=1), torch.cat([h[1] for h in hiddens], dim=1))
        return torch.cat(hiddens, dim=1)  # (L, B, H)

    @staticmethod
    def _slice(hidden: Hidden, i: int) -> Hidden:
        if isinstance(hidden, tuple):
            return (hidden[0][:, i : i + 1], hidden[1][:, i : i + 1])
        return hidden[:, i : i + 1]


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
