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

from model.networks import CharRNN

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
    with np.errstate(over="ignore"):
        scaled = (row - row.max()) / s.temperature
    cdf = np.exp(scaled, out=scaled).cumsum()
    draw = np.float32(s.rng.random()) * cdf[-1]
    token = min(int(np.count_nonzero(cdf < draw)), len(row) - 1)
    s.observe(token)
    return token


class Stepper:
    """Inference-only, one character per row, in NumPy: `step(tokens, h[, c])` advances every row by one token,
    updating the hidden state in place, and returns the next-token logits (B, V).

    Equal to CharRNN.forward on a length-1 sequence (to float32 rounding) but several times faster on CPU, where
    one-character steps are all per-call overhead:
    - NumPy's BLAS is quicker than torch's for these small products here; weights are kept pre-transposed;
    - the first layer's input projection is a precomputed (V, gates) table with the biases folded in;
    - every temporary lives in a reused buffer (fresh arrays of this size cost page faults), and the element-wise
      passes run on contiguous arrays where it matters (NumPy's in-place passes over strided views are 4x slower);
    - every nonlinearity is torch's vectorised sigmoid (3x quicker than tanh here): the pre-activations that feed
      a tanh are doubled in the weights (exact in floating point), and tanh(x) = 2 * sigmoid(2x) - 1.
    The arithmetic is row-wise: a row's result never depends on the other rows' values, and only to float32
    rounding on the batch size (a one-row product takes another BLAS path). Not thread-safe: one Stepper per thread.
    """

    def __init__(self, net: CharRNN) -> None:
        cfg = net.config
        self.cell, self.layers, n = cfg.cell, cfg.num_layers, cfg.hidden_size
        self.hidden_size, self.vocab_size = n, cfg.vocab_size
        with torch.no_grad():
            w = {name: p.detach().float().numpy().copy() for name, p in net.rnn.named_parameters()}
            emb = net.embedding.weight.detach().float().numpy()
            self.w_out = np.ascontiguousarray(net.head.weight.detach().float().numpy().T)
            self.b_out = net.head.bias.detach().float().numpy().copy()
        # double the rows that feed a tanh: the GRU's n gate, the LSTM's g gate, the plain RNN's only gate
        doubled = {"gru": slice(2 * n, 3 * n), "lstm": slice(2 * n, 3 * n), "rnn": slice(0, n)}[self.cell]
        self.w_ih: list[np.ndarray] = []  # (in, G*H), pre-transposed
        self.w_hh: list[np.ndarray] = []  # (H, G*H)
        self.b_in: list[np.ndarray] = []  # both biases, except the GRU's b_hn (it is scaled by r):
        self.b_hn: list[np.ndarray] = []  # the GRU keeps it apart
        for k in range(self.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                w[f"{name}_l{k}"][doubled] *= 2
            b_ih, b_hh = w[f"bias_ih_l{k}"], w[f"bias_hh_l{k}"]
            self.w_ih.append(np.ascontiguousarray(w[f"weight_ih_l{k}"].T))
            self.w_hh.append(np.ascontiguousarray(w[f"weight_hh_l{k}"].T))
            if self.cell == "gru":
                self.b_in.append(np.concatenate([b_ih[: 2 * n] + b_hh[: 2 * n], b_ih[2 * n :]]))
                self.b_hn.append(b_hh[2 * n :].copy())
            else:
                self.b_in.append(b_ih + b_hh)
        self.table = emb @ self.w_ih[0] + self.b_in[0]  # (V, G*H): layer 0's input projection per token
        if self.cell == "gru":  # split as _gru wants it: [i_r, i_z, b_hn] and i_n
            self.table_n = np.ascontiguousarray(self.table[:, 2 * n :])
            self.table[:, 2 * n :] = self.b_hn[0]
        self.capacity = 0
        self.buffers: dict[str, np.ndarray] = {}

    def _workspace(self, b: int) -> dict[str, np.ndarray]:
        if b > self.capacity:
            self.capacity = b
            gates = self.w_hh[0].shape[1]
            widths = {"pre": gates, "in": gates, "in_n": self.hidden_size, "tmp": self.hidden_size}
            self.buffers = {name: np.empty((b, width), np.float32) for name, width in widths.items()}
            self.buffers["logits"] = np.empty((b, self.vocab_size), np.float32)
        return {name: buf[:b] for name, buf in self.buffers.items()}

    def step(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        """Advance every row one token: tokens (B,) ints in [0, V), h (L, B, H) float32 (and c for an LSTM),
        updated in place. Returns the logits (B, V) in a buffer that the next call reuses."""
        ws = self._workspace(len(tokens))
        inp, n = ws["in"], self.hidden_size
        for k in range(self.layers):
            if k == 0:  # mode="clip": 10x quicker than the default with out=; ids are always < V here
                np.take(self.table, tokens, axis=0, out=inp, mode="clip")
                if self.cell == "gru":
                    np.take(self.table_n, tokens, axis=0, out=ws["in_n"], mode="clip")
            else:
                np.matmul(h[k - 1], self.w_ih[k], out=inp)
                inp += self.b_in[k]
                if self.cell == "gru":
                    np.copyto(ws["in_n"], inp[:, 2 * n :])
                    inp[:, 2 * n :] = self.b_hn[k]
            pre = np.matmul(h[k], self.w_hh[k], out=ws["pre"])
            pre += inp
            if self.cell == "gru":
                self._gru(h[k], pre, ws["in_n"], ws["tmp"])
            elif self.cell == "lstm":
                assert c is not None
                self._lstm(h[k], c[k], pre, ws["tmp"])
            else:
                _tanh_of_doubled(pre)
                h[k] = pre
        logits = np.matmul(h[-1], self.w_out, out=ws["logits"])
        logits += self.b_out
        return logits

    def prefill(self, prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Run prompts (non-empty id lists) from a zero state: (next-token logits (N, V), h (L, N, H), c or None),
        row i for prompts[i].

        All prompts advance together, one batched step per position, longest first, so the rows still in their
        prompt are always the top of the batch. Row-wise, as `step` is: a prompt gets the same state alone or
        beside others (to float32 rounding). Quicker than the network's forward even for one prompt (the forward
        pays torch's per-op cost at every position), and N prompts of length T cost about T steps, not N * T.
        """
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # stable: ties keep their order
        ids = [prompts[i] for i in order]
        if not ids or not ids[-1]:
            raise ValueError("prefill needs at least one prompt, each of at least one token")
        n, longest = len(ids), len(ids[0])
        lengths = [len(p) for p in ids]
        h = np.zeros((self.layers, n, self.hidden_size), np.float32)
        c = h.copy() if self.cell == "lstm" else None
        logits = np.empty((n, self.vocab_size), np.float32)
        tokens = np.zeros((longest, n), np.int64)  # row r's position t, for the rows whose prompt is that long
        for row, prompt in enumerate(ids):
            tokens[: len(prompt), row] = prompt
        live = n  # rows still in their prompt: the top `live` rows
        for t in range(longest):
            out = self.step(tokens[t, :live], h[:, :live], None if c is None else c[:, :live])
            ending = live
            while ending and lengths[ending - 1] == t + 1:  # these prompts end here: keep their logits
                ending -= 1
            logits[ending:live] = out[ending:live]
            live = ending
        back = np.argsort(order)  # to the callers' order
        return logits[back], h[:, back], None if c is None else c[:, back]

    def _gru(self, h: np.ndarray, pre: np.ndarray, in_n: np.ndarray, new: np.ndarray) -> None:
        """PyTorch's GRU, gates r, z, n: n = tanh(i_n + r * (W_hn h + b_hn)); h' = n + z * (h - n).
        pre holds [r, z, W_hn h + b_hn] before their nonlinearities (the n part doubled)."""
        n = self.hidden_size
        rz = pre[:, : 2 * n]
        torch.from_numpy(rz).sigmoid_()
        np.multiply(pre[:, 2 * n :], rz[:, :n], out=new)
        new += in_n
        _tanh_of_doubled(new)
        h -= new
        h *= rz[:, n:]
        h += new

    def _lstm(self, h: np.ndarray, c: np.ndarray, gates: np.ndarray, tmp: np.ndarray) -> None:
        """PyTorch's LSTM, gates i, f, g, o: c' = f * c + i * g; h' = o * tanh(c')."""
        n = self.hidden_size
        torch.from_numpy(gates).sigmoid_()  # g was doubled: sigmoid(2g) now, tanh(g) after the next two lines
        g = gates[:, 2 * n : 3 * n]
        g *= 2
        g -= 1
        c *= gates[:, n : 2 * n]
        np.multiply(gates[:, :n], g, out=tmp)
        c += tmp
        np.multiply(c, 2, out=tmp)
        _tanh_of_doubled(tmp)
        np.multiply(gates[:, 3 * n :], tmp, out=h)


def _tanh_of_doubled(x: np.ndarray) -> None:
    """In place: x holds 2a; afterwards it holds tanh(a) = 2 * sigmoid(2a) - 1."""
    torch.from_numpy(x).sigmoid_()
    x *= 2
    x -= 1


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


def stream(
    network: CharRNN, tokenizer: Tokenizer, prompt: str, params: SamplingParams
) -> Iterator[tuple[str, Generation | None]]:
    """Yield (text piece, None) per generated token, then ("", Generation) once at the end."""
    sampler = Sampler(params)
    table = id_to_text(tokenizer)
    ids = encode_prompt(tokenizer, prompt)
    for i in ids:
        sampler.observe(i)
    step = Stepper(network)
    logits, h, c = step.prefill([ids])  # (1, V), and the state (L, 1, H) that the steps update in place
    token_ids = np.zeros(1, dtype=np.int64)
    matcher = StopMatcher(params.stop)
    text, count = [], 0
    while count < params.max_new_tokens and not matcher.stopped:
        token = sample_batch(logits, [sampler])[0]
        count += 1
        piece = matcher.feed(table.get(token, "\ufffd"))
        if piece:
            text.append(piece)
            yield piece, None
        if count < params.max_new_tokens and not matcher.stopped:
            token_ids[0] = token
            logits = step.step(token_ids, h, c)
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
