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

import numpy as np
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
    """One stream's sampling state: parameters, its own RNG (numpy PCG64, seeded) and recent tokens."""

    params: SamplingParams
    seed: int = field(init=False)
    rng: np.random.Generator = field(init=False, repr=False)
    recent: deque[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # a drawn seed stays below 2**53, so JavaScript clients can read it back exactly and replay the sample
        self.seed = self.params.seed if self.params.seed is not None else random.SystemRandom().randrange(2**53)
        self.rng = np.random.Generator(np.random.PCG64(self.seed))
        self.recent = deque(maxlen=REPETITION_WINDOW)

    def observe(self, token: int) -> None:
        self.recent.append(token)

    def next_token(self, logits: torch.Tensor) -> int:
        """Pick the next token from one row of logits (V,)."""
        return sample_batch(logits[None], [self])[0]


def sample_batch(logits: torch.Tensor, samplers: Sequence[Sampler]) -> list[int]:
    """One token per row of `logits` (B, V), each row with its own sampler's parameters and RNG.

    Every step is row-wise (numpy, float32), so a row's token does not depend on the other rows: a stream samples
    the same text alone or in a batch. Each sampler draws exactly one uniform number per token (inverse CDF).
    """
    rows = logits.detach().float().numpy()  # (B, V)
    if len(samplers) == 1 and _plain(samplers[0].params):
        return [_sample_plain(rows[0], samplers[0])]
    if any(s.params.repetition_penalty is not None for s in samplers):
        rows = rows.copy()
        for row, s in enumerate(samplers):
            if s.params.repetition_penalty is not None:
                penalised = apply_repetition_penalty(torch.from_numpy(rows[row]), s.recent, s.params.repetition_penalty)
                rows[row] = penalised.numpy()
    vocab = rows.shape[-1]
    greedy = rows.argmax(-1).tolist() if any(s.params.temperature == 0 for s in samplers) else [0] * len(samplers)
    temps = np.array([[s.params.temperature or 1.0] for s in samplers], dtype=np.float32)
    # shift before dividing: a tiny temperature then sends the rest to -inf instead of overflowing
    with np.errstate(over="ignore"):  # a tiny temperature overflows the non-maximal logits to -inf, as intended
        scaled = (rows - rows.max(-1, keepdims=True)) / temps
    if any(s.params.top_k is not None for s in samplers):
        scaled = _top_k(scaled, np.array([min(s.params.top_k or vocab, vocab) for s in samplers]))
    if any(s.params.top_p is not None for s in samplers):
        scaled = _top_p(scaled, np.array([s.params.top_p or 1.0 for s in samplers]))
    cdf = np.exp(scaled, out=scaled).cumsum(-1)  # unnormalised: the draw is scaled by each row's total instead
    draws = np.array([s.rng.random() for s in samplers], dtype=np.float32) * cdf[:, -1]
    picked = np.minimum((cdf < draws[:, None]).sum(-1), vocab - 1).tolist()
    tokens = [g if s.params.temperature == 0 else p for s, g, p in zip(samplers, greedy, picked, strict=True)]
    for s, token in zip(samplers, tokens, strict=True):
        s.observe(token)
    return tokens


def _sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = np.tanh(x * 0.5) * 0.5 + 0.5  # overflow-free logistic
    return out


def _plain(p: SamplingParams) -> bool:
    return p.temperature > 0 and p.top_k is None and p.top_p is None and p.repetition_penalty is None


def _sample_plain(row: np.ndarray, s: Sampler) -> int:
    """sample_batch's arithmetic for one row with temperature only, without the batch bookkeeping (the common
    single-stream case); the same float32 operations in the same order, so the same token."""
    with np.errstate(over="ignore"):
        scaled = (row - row.max()) / np.float32(s.params.temperature)
    cdf = np.exp(scaled, out=scaled).cumsum()
    draw = np.float32(s.rng.random()) * cdf[-1]
    token = min(int(np.count_nonzero(cdf < draw)), len(row) - 1)
    s.observe(token)
    return token


class Stepper:
    """Inference-only, one character per row: tokens (B,), hidden (L, B, H) -> logits (B, V), hidden.

    Equal to CharRNN.forward on a length-1 sequence (to float32 rounding) but several times faster on CPU, where
    one-character steps are all per-call overhead: it runs in NumPy (whose BLAS is quicker than torch's for these
    small products here), the first layer's input projection is a precomputed (V, G*H) table, and weights are
    kept pre-transposed.
    """

    def __init__(self, net: CharRNN) -> None:
        cfg = net.config
        self.cell, self.hidden_size, self.layers = cfg.cell, cfg.hidden_size, cfg.num_layers
        with torch.no_grad():
            w = {name: p.detach().float().numpy() for name, p in net.rnn.named_parameters()}
            emb = net.embedding.weight.detach().float().numpy()
            self.table = np.ascontiguousarray(emb @ w["weight_ih_l0"].T + w["bias_ih_l0"])  # (V, G*H)
            self.w_ih = [np.ascontiguousarray(w[f"weight_ih_l{k}"].T) for k in range(self.layers)]
            self.b_ih = [w[f"bias_ih_l{k}"] for k in range(self.layers)]
            self.w_hh = [np.ascontiguousarray(w[f"weight_hh_l{k}"].T) for k in range(self.layers)]
            self.b_hh = [w[f"bias_hh_l{k}"] for k in range(self.layers)]
            self.w_out = np.ascontiguousarray(net.head.weight.detach().float().numpy().T)
            self.b_out = net.head.bias.detach().float().numpy()

    def __call__(self, tokens: torch.Tensor | Sequence[int], hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        lstm = isinstance(hidden, tuple)
        h_all = (hidden[0] if isinstance(hidden, tuple) else hidden).numpy()  # (L, B, H)
        c_all = hidden[1].numpy() if isinstance(hidden, tuple) else None
        new_h, new_c = np.empty_like(h_all), np.empty_like(h_all)
        x = self.table[tokens.numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)]  # (B, G*H)
        for k in range(self.layers):
            gi = x if k == 0 else x @ self.w_ih[k] + self.b_ih[k]
            gh = h_all[k] @ self.w_hh[k]
            gh += self.b_hh[k]
            x = self._cell(gi, gh, h_all[k], None if c_all is None else c_all[k], new_c[k])
            new_h[k] = x
        logits = x @ self.w_out
        logits += self.b_out
        h_out = torch.from_numpy(new_h)
        return torch.from_numpy(logits), ((h_out, torch.from_numpy(new_c)) if lstm else h_out)

    def _cell(
        self, gi: np.ndarray, gh: np.ndarray, h: np.ndarray, c: np.ndarray | None, c_out: np.ndarray
    ) -> np.ndarray:
        n = self.hidden_size
        if self.cell == "gru":  # gates r, z, n (PyTorch's order); h' = n + z * (h - n)
            rz = _sigmoid(gi[:, : 2 * n] + gh[:, : 2 * n])
            new = np.tanh(gi[:, 2 * n :] + rz[:, :n] * gh[:, 2 * n :])
            out: np.ndarray = new + rz[:, n:] * (h - new)
            return out
        if self.cell == "lstm":  # gates i, f, g, o
            gates = gi + gh
            i, f, g, o = (gates[:, j * n : (j + 1) * n] for j in range(4))
            assert c is not None
            c_out[...] = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
            lstm_out: np.ndarray = _sigmoid(o) * np.tanh(c_out)
            return lstm_out
        rnn_out: np.ndarray = np.tanh(gi + gh)
        return rnn_out


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
    step = Stepper(network)
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
            step_logits, hidden_state = step([token], hidden_state)
            logits = step_logits[:, None]  # (1, 1, V)
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
