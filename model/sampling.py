"""Sampling for the character model: pure, seeded pieces shared by the CLI and the web service.

    logits (V,) --repetition penalty--> --temperature--> --top-k--> --top-p--> sample (or argmax at T = 0)

`Sampler` holds one stream's parameters and its own torch.Generator, so a stream's text depends only on its
seed and prompt, never on what else runs beside it. `StopMatcher` ends a stream at a stop sequence; the stop
sequence itself is never part of the returned text (CLI and service alike). `generate` runs the whole loop for
one prompt.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from tokenizers import Tokenizer

from model.networks import CharRNN, Hidden

MAX_SEED = 2**63 - 1
REPETITION_WINDOW = 64  # characters of context the repetition penalty looks back over
MIN_PENALTY, MAX_PENALTY = 1e-3, 1e3  # beyond these the penalised logits overflow float32


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 200
    temperature: float = 1.0  # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty is not None and not (MIN_PENALTY <= self.repetition_penalty <= MAX_PENALTY):
            raise ValueError(
                f"repetition_penalty must be in [{MIN_PENALTY}, {MAX_PENALTY}], got {self.repetition_penalty}"
            )
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must be non-empty strings")
        if self.seed is not None and not (0 <= self.seed <= MAX_SEED):
            raise ValueError(f"seed must be in [0, {MAX_SEED}], got {self.seed}")


def apply_repetition_penalty(logits: torch.Tensor, recent: Sequence[int], penalty: float) -> torch.Tensor:
    """CTRL-style: logits of recently seen tokens are divided by `penalty` when positive, multiplied when not."""
    if penalty == 1.0 or not recent:
        return logits
    idx = torch.tensor(sorted(set(recent)), dtype=torch.long)
    picked = logits[idx]
    logits = logits.clone()
    logits[idx] = torch.where(picked > 0, picked / penalty, picked * penalty)
    return logits


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches p (always at least one)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
    drop_sorted = cumulative - torch.softmax(sorted_logits, dim=-1) >= p  # mass before this token already >= p
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


@dataclass
class Sampler:
    """One stream's sampling state: parameters, its own RNG and the recent tokens for the penalty."""

    params: SamplingParams
    seed: int = field(init=False)
    generator: torch.Generator = field(init=False, repr=False)
    recent: deque[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.seed = self.params.seed if self.params.seed is not None else random.SystemRandom().randrange(MAX_SEED)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.recent = deque(maxlen=REPETITION_WINDOW)

    def observe(self, token: int) -> None:
        self.recent.append(token)

    def next_token(self, logits: torch.Tensor) -> int:
        """Pick the next token from one row of logits (V,)."""
        logits = logits.detach().float()
        if self.params.repetition_penalty is not None:
            logits = apply_repetition_penalty(logits, self.recent, self.params.repetition_penalty)
        if self.params.temperature == 0:
            token = int(torch.argmax(logits))
        else:
            # shift before dividing: a tiny temperature then sends the rest to -inf instead of overflowing
            logits = (logits - logits.max()) / self.params.temperature
            if self.params.top_k is not None:
                logits = top_k_filter(logits, self.params.top_k)
            if self.params.top_p is not None:
                logits = top_p_filter(logits, self.params.top_p)
            probs = torch.softmax(logits, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self.generator))
        self.observe(token)
        return token


class StopMatcher:
    """Feeds generated text through; holds back any tail that could still become a stop sequence.

    `feed(piece)` returns the text safe to emit now; `stopped` turns true once a stop sequence appeared, and
    everything from the stop sequence on is dropped. `flush()` returns what was held back at the end.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(stop)
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.pending += piece
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self.pending = self.pending[: min(hits)], ""
            return out
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), 0, -1):
                if self.pending.endswith(s[:n]):
                    hold = max(hold, n)
                    break
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(self.pending) - hold :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def encode_prompt(tokenizer: Tokenizer, prompt: str) -> list[int]:
    """Prompt ids; an empty prompt starts from a newline (the start of a line of text), or [UNK]."""
    ids = tokenizer.encode(prompt or "\n", add_special_tokens=False).ids
    return ids or [1]


def id_to_text(tokenizer: Tokenizer) -> dict[int, str]:
    """Map every id to its text; specials map to "" except [UNK], shown as U+FFFD."""
    table = {i: tok for tok, i in tokenizer.get_vocab().items()}
    table[0] = ""
    table[1] = "\ufffd"
    return table


@dataclass
class Generation:
    text: str
    finish_reason: str  # "length" | "stop_sequence"
    tokens: int
    seed: int


@torch.inference_mode()
def stream(
    network: CharRNN, tokenizer: Tokenizer, prompt: str, params: SamplingParams
) -> Iterator[tuple[str, Generation | None]]:
    """Yield (text piece, None) per generated token, then ("", Generation) once at the end."""
    sampler = Sampler(params)
    table = id_to_text(tokenizer)
    ids = encode_prompt(tokenizer, prompt)
    for i in ids:
        sampler.observe(i)
    logits, hidden = network(torch.tensor([ids]))
    hidden_state: Hidden = hidden
    matcher = StopMatcher(params.stop)
    text, count = [], 0
    while count < params.max_new_tokens and not matcher.stopped:
        token = sampler.next_token(logits[0, -1])
        count += 1
        piece = matcher.feed(table.get(token, "\ufffd"))
        if piece:
            text.append(piece)
            yield piece, None
        if count < params.max_new_tokens and not matcher.stopped:
            logits, hidden_state = network(torch.tensor([[token]]), hidden_state)
    tail = matcher.flush()
    if tail:
        text.append(tail)
        yield tail, None
    reason = "stop_sequence" if matcher.stopped else "length"
    yield "", Generation("".join(text), reason, count, sampler.seed)


def generate(network: CharRNN, tokenizer: Tokenizer, prompt: str, params: SamplingParams) -> Generation:
    result = None
    for _, done in stream(network, tokenizer, prompt, params):
        result = done or result
    assert result is not None
    return result
