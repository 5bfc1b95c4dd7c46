"""Sampling for the character model: pure, seeded pieces shared by the CLI and the web service.

    logits (V,) --repetition penalty--> --temperature--> --top-k--> --top-p--> sample (or argmax at T = 0)

`Sampler` holds one stream's parameters and its own seeded RNG, so a stream's text depends only on its seed and
prompt, never on what else runs beside it. `StopMatcher` ends a stream at a stop sequence; the stop sequence
itself is never part of the returned text. `Decoder` is one stream's decoding (prompt, sampled tokens, text to
emit, finish reason), the one path that the CLI (`stream`, `generate`) and the service's engine both drive;
the network's state is stepped by `model.generator.stepper.Stepper`.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer

from model.generator.network import CharRNN
from model.generator.stepper import Stepper

MAX_SEED = 2**53 - 1  # every seed is exact as a JSON (double) number: JavaScript clients and schema checks
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


def _top_k(logits: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Per row, keep the ks[row] largest logits. logits (B, V), ks (B,) in 1..V."""
    kth = -np.sort(-logits, axis=-1)[np.arange(len(ks)), ks - 1][:, None]  # (B, 1)
    return np.where(logits < kth, -np.inf, logits)


def _top_p(logits: np.ndarray, ps: np.ndarray) -> np.ndarray:
    """Per row, keep the smallest set of most likely tokens whose probability reaches ps[row] (at least one)."""
    order = np.argsort(-logits, axis=-1, kind="stable")
    sorted_logits = np.take_along_axis(logits, order, axis=-1)
    probs = np.exp(sorted_logits - sorted_logits[:, :1])
    probs /= probs.sum(-1, keepdims=True)
    drop_sorted = probs.cumsum(-1) - probs >= ps[:, None]  # the mass before this token already reaches p
    drop = np.zeros_like(drop_sorted)
    np.put_along_axis(drop, order, drop_sorted, axis=-1)
    return np.where(drop, -np.inf, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    row = logits.detach().float().numpy()[None]
    return torch.from_numpy(_top_k(row, np.array([min(k, row.shape[-1])]))[0])


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    return torch.from_numpy(_top_p(logits.detach().float().numpy()[None], np.array([p]))[0])


@dataclass
class Sampler:
    """One stream's sampling state: parameters, its own seeded RNG (Python's Mersenne Twister: a draw costs a
    tenth of a NumPy Generator call, and a batch draws once per stream per token) and recent tokens."""

    params: SamplingParams
    seed: int = field(init=False)
    rng: random.Random = field(init=False, repr=False)
    recent: deque[int] = field(init=False, repr=False)
    plain: bool = field(init=False, repr=False)  # temperature only: the fast path
    temperature: np.float32 = field(init=False, repr=False)

    def __post_init__(self) -> None:
        p = self.params
        # a drawn seed stays below 2**53, so JavaScript clients can read it back exactly and replay the sample
        self.seed = p.seed if p.seed is not None else random.SystemRandom().randrange(2**53)
        self.rng = random.Random(self.seed)
        self.recent = deque(maxlen=REPETITION_WINDOW)
        self.plain = p.temperature > 0 and p.top_k is None and p.top_p is None and p.repetition_penalty is None
        self.temperature = np.float32(p.temperature or 1.0)  # 0 (greedy) divides by 1, then takes the argmax

    def observe(self, token: int) -> None:
        self.recent.append(token)

    def next_token(self, logits: torch.Tensor | np.ndarray) -> int:
        """Pick the next token from one row of logits (V,)."""
        return sample_batch(logits[None], [self])[0]


def sample_batch(logits: torch.Tensor | np.ndarray, samplers: Sequence[Sampler]) -> list[int]:
    """One token per row of `logits` (B, V), each row with its own sampler's parameters and RNG.

    Every step is row-wise (numpy, float32), so a row's token does not depend on the other rows: a stream samples
    the same text alone or in a batch. Each sampler draws exactly one uniform number per token (inverse CDF).
    """
    rows = logits.detach().float().numpy() if isinstance(logits, torch.Tensor) else logits  # (B, V)
    if len(samplers) == 1 and samplers[0].plain:
        return [_sample_plain(rows[0], samplers[0])]
    special = [s.params for s in samplers if not s.plain]
    if any(p.repetition_penalty is not None for p in special):
        rows = rows.copy()
        for row, s in enumerate(samplers):
            if s.params.repetition_penalty is not None:
                penalised = apply_repetition_penalty(torch.from_numpy(rows[row]), s.recent, s.params.repetition_penalty)
                rows[row] = penalised.numpy()
    vocab = rows.shape[-1]
    greedy = rows.argmax(-1).tolist() if any(p.temperature == 0 for p in special) else None
    temps = np.array([s.temperature for s in samplers], dtype=np.float32)[:, None]
    # shift before dividing: a tiny temperature then sends the rest to -inf instead of overflowing
    with np.errstate(over="ignore"):  # a tiny temperature overflows the non-maximal logits to -inf, as intended
        scaled = (rows - rows.max(-1, keepdims=True)) / temps
    if any(p.top_k is not None for p in special):
        scaled = _top_k(scaled, np.array([min(s.params.top_k or vocab, vocab) for s in samplers]))
    if any(p.top_p is not None for p in special):
        scaled = _top_p(scaled, np.array([s.params.top_p or 1.0 for s in samplers]))
    cdf = np.exp(scaled, out=scaled).cumsum(-1)  # unnormalised: the draw is scaled by each row's total instead
    draws = np.array([s.rng.random() for s in samplers], dtype=np.float32) * cdf[:, -1]
    tokens: list[int] = np.minimum((cdf < draws[:, None]).sum(-1), vocab - 1).tolist()
    if greedy is not None:
        tokens = [g if s.params.temperature == 0 else t for s, g, t in zip(samplers, greedy, tokens, strict=True)]
    for s, token in zip(samplers, tokens, strict=True):
        s.recent.append(token)
    return tokens


def _sample_plain(row: np.ndarray, s: Sampler) -> int:
    """sample_batch's arithmetic for one row with temperature only, without the batch bookkeeping (the common
    single-stream case); the same float32 operations in the same order, so the same token."""
    with np.errstate(over="ignore"):  # the row's largest by its index: a reduction costs three times as much here
        scaled = (row - row[row.argmax()]) / s.temperature
    cdf = np.exp(scaled, out=scaled).cumsum()
    draw = np.float32(s.rng.random()) * cdf[-1]
    token = min(int(np.count_nonzero(cdf < draw)), len(row) - 1)
    s.observe(token)
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
        if not self.stop:  # nothing to watch for: the common case, per token
            return piece
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


@dataclass(frozen=True)
class TokenLogprob:
    """One token as the model scored it: its id and text, its log-probability under the model (the network's
    own distribution: before temperature, top-k, top-p and the repetition penalty reshape it; None for a text's
    first token, which nothing predicts) and the `top` most likely tokens at that step, best first."""

    id: int
    text: str
    logprob: float | None
    top: tuple[tuple[int, float], ...] = ()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of one row of logits (V,), in float64."""
    row = logits.astype(np.float64)
    row -= row.max()
    row -= np.log(np.exp(row).sum())
    return row


def scored(logits: np.ndarray, token: int, table: dict[int, str], top_n: int = 0) -> TokenLogprob:
    """`token` picked from one row of next-token logits (V,), with its log-probability and the top_n best."""
    lp = log_softmax(logits)
    top: tuple[tuple[int, float], ...] = ()
    if top_n > 0:
        best = np.argsort(-lp, kind="stable")[:top_n]
        top = tuple((int(i), float(lp[i])) for i in best)
    return TokenLogprob(token, table.get(token, "\ufffd"), float(lp[token]), top)


@torch.inference_mode()
def prompt_logprobs(
    network: CharRNN, tokenizer: Tokenizer, prompt: str, table: dict[int, str], top_n: int = 0
) -> list[TokenLogprob]:
    """The prompt's tokens, each scored given the ones before it (the first has no log-probability): what TGI's
    `decoder_input_details` and OpenAI's `echo` with `logprobs` report. One forward over the prompt."""
    ids = tokenizer.encode(prompt, add_special_tokens=False).ids
    if not ids:
        return []
    logits, _ = network(torch.tensor([ids], dtype=torch.long))
    rows = logits[0].float().numpy()
    out = [TokenLogprob(ids[0], table.get(ids[0], "\ufffd"), None)]
    out += [scored(rows[t - 1], ids[t], table, top_n) for t in range(1, len(ids))]
    return out


@dataclass
class Generation:
    text: str
    finish_reason: str  # "length" | "stop_sequence"
    tokens: int
    seed: int


class Decoder:
    """One stream's decoding, the same for the CLI and the service: it takes the prompt, then each sampled token,
    and says what text is safe to emit, when the stream is done and why. The caller owns the network's state and
    the sampling (`sample_batch` over one decoder's sampler, or over a batch of them): `stream` below
    steps one stream; the service's engine (app/serving/generator.py) steps many as one batch.

        dec = Decoder(prompt_ids, params, table)         # the prompt is observed (repetition penalty)
        while not dec.done:
            token = sample_batch(logits, [dec.sampler])[0]
            piece = dec.feed(token, logits[0])             # text safe to emit now ("" while a stop may begin)
            ... step the network with token ...
        tail, result = dec.finish()                        # held-back text, and the Generation
    """

    def __init__(
        self, prompt_ids: list[int], params: SamplingParams, table: dict[int, str], logprobs: int | None = None
    ) -> None:
        self.prompt_ids, self.params, self.table = prompt_ids, params, table
        self.sampler = Sampler(params)
        for token in prompt_ids:
            self.sampler.observe(token)
        self.matcher = StopMatcher(params.stop)
        self.logprobs = logprobs  # None: text only; n >= 0: also score each token (its log-probability, top n)
        self.scored: list[TokenLogprob] = []
        self.text: list[str] = []
        self.count = 0

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def done(self) -> bool:
        return self.count >= self.params.max_new_tokens or self.matcher.stopped

    def feed(self, token: int, logits: np.ndarray) -> str:
        """Take the token sampled from `logits` (its step's, (V,)): the text that is now safe to emit."""
        self.count += 1
        if self.logprobs is not None:
            self.scored.append(scored(logits, token, self.table, self.logprobs))
        piece = self.matcher.feed(self.table.get(token, "\ufffd"))
        if piece:
            self.text.append(piece)
        return piece

    def finish(self) -> tuple[str, Generation]:
        """The text held back at the end (it could have begun a stop sequence), and the result."""
        tail = self.matcher.flush()
        if tail:
            self.text.append(tail)
        reason = "stop_sequence" if self.matcher.stopped else "length"
        return tail, Generation("".join(self.text), reason, self.count, self.sampler.seed)


def stream(
    network: CharRNN, tokenizer: Tokenizer, prompt: str, params: SamplingParams
) -> Iterator[tuple[str, Generation | None]]:
    """Yield (text piece, None) per generated token, then ("", Generation) once at the end."""
    dec = Decoder(encode_prompt(tokenizer, prompt), params, id_to_text(tokenizer))
    step = Stepper(network)
    logits, h, c = step.prefill([dec.prompt_ids])  # (1, V), and the state (L, 1, H) that the steps update in place
    token_ids = np.zeros(1, dtype=np.int64)
    while not dec.done:
        token = sample_batch(logits, [dec.sampler])[0]
        piece = dec.feed(token, logits[0])
        if piece:
            yield piece, None
        if not dec.done:
            token_ids[0] = token
            logits = step.step(token_ids, h, c)
    tail, result = dec.finish()
    if tail:
        yield tail, None
    yield "", result


def generate(network: CharRNN, tokenizer: Tokenizer, prompt: str, params: SamplingParams) -> Generation:
    result = None
    for _, done in stream(network, tokenizer, prompt, params):
        result = done or result
    assert result is not None
    return result
