"""The networks: pure nn.Modules configured by dataclasses (model/config.py), nothing else.

SentimentClassifier (many-to-one)           CharRNN (one-to-many, stepped)
  M member encoders [+ an n-gram bag], combined
  ids (B, T), lengths (B,)                    tokens (B, T), hidden
  -> embedding      (B, T, E)                 -> embedding   (B, T, E)
  -> packed RNN     (B, T, D*H)               -> RNN stack   (B, T, H), hidden'
  -> masked pooling (B, P)                    -> dropout
  -> dropout -> linear (B, C)                 -> linear      (B, T, V)
  bag: word and hashed word-pair weights summed (B, C)

Packing means padding never reaches the recurrent cells, and pooling and the bag mask padded positions, so a
sentence gets the same logits alone or inside a padded batch.

SequenceTagger (many-to-many): one tag per token, from words and their characters; its docstring has the diagram.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import CharLMConfig, ClassifierConfig, TaggerConfig
from model.crf import CRF

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

RNN_CLASSES: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


def make_rnn(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float, bidirectional: bool
) -> nn.RNNBase:
    return RNN_CLASSES[cell](
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
        bidirectional=bidirectional,
    )


# each cell's own kernel, the one nn.RNNBase.forward calls with all its layers and directions at once
RNN_KERNELS: dict[str, Callable[..., tuple[torch.Tensor, ...]]] = {
    "LSTM": torch.lstm, "GRU": torch.gru, "RNN_TANH": torch.rnn_tanh, "RNN_RELU": torch.rnn_relu,
}  # fmt: skip


def reverse_within(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each row's first `lengths[b]` positions in reverse order, its padding left in place: (B, T, F)."""
    steps = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    back = lengths.to(x.device)[:, None] - 1 - steps  # (B, T)
    index = torch.where(back >= 0, back, steps)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def run_padded(rnn: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`rnn` (batch_first) over right-padded `x` (B, T, F), each row's real positions getting what packing would
    give them, without packing: every direction of every layer runs over the dense batch, the reverse one over each
    row reversed within its length, so it starts from the row's own last word. Dense input takes oneDNN's fused
    CPU kernels, which packed input does not reach (the tagger's encoder forward and backward take a quarter less
    time: commit 37f45be). Positions past a row's length hold no meaningful output. (B, T, D * H)."""
    kernel, directions = RNN_KERNELS[rnn.mode], 2 if rnn.bidirectional else 1
    zero = x.new_zeros(1, x.shape[0], rnn.hidden_size)
    hx: Hidden = (zero, zero) if rnn.mode == "LSTM" else zero
    h = x
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(directions):
            suffix = f"_l{layer}{'_reverse' if d else ''}"
            names = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if rnn.bias else ())
            weights = [getattr(rnn, name + suffix) for name in names]
            inp = reverse_within(h, lengths) if d else h
            out = kernel(inp, hx, weights, rnn.bias, 1, 0.0, rnn.training, False, True)[0]  # (B, T, H)
            outs.append(reverse_within(out, lengths) if d else out)
        h = torch.cat(outs, dim=-1) if directions == 2 else outs[0]
        if layer < rnn.num_layers - 1 and rnn.dropout > 0:
            h = nn.functional.dropout(h, rnn.dropout, rnn.training)
    return h


class Encoder(nn.Module):
    """One member: embedding -> packed recurrent encoder -> masked pooling -> dropout -> linear."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        table = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.embedding: nn.Module = table  # training may swap in a CharNGramEmbedding (model/ngrams.py)
        self.encoder = make_rnn(
            config.cell, config.embedding_dim, config.hidden_size, config.num_layers, config.dropout,
            config.bidirectional,
        )  # fmt: skip
        directions = 2 if config.bidirectional else 1
        features = config.hidden_size * directions * (2 if config.pooling == "maxmean" else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(features, config.num_classes)

    def pool(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Pooled sentence features (B, P)."""
        x = self.embedding(ids)  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])  # (B, T, D*H)
        lengths = lengths.to(out.device)
        mask = (torch.arange(ids.shape[1], device=out.device)[None, :] < lengths[:, None]).unsqueeze(-1)  # (B, T, 1)
        pooling = self.config.pooling
        if pooling == "last":
            return self._last(out, lengths)
        mean = (out * mask).sum(1) / lengths[:, None].to(out.dtype)  # (B, D*H)
        if pooling == "mean":
            return mean
        maxed = out.masked_fill(~mask, float("-inf")).max(1).values  # (B, D*H)
        return maxed if pooling == "max" else torch.cat([maxed, mean], dim=-1)

    def _last(self, out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = self.config.hidden_size
        rows = torch.arange(out.shape[0], device=out.device)
        forward_last = out[rows, (lengths - 1).clamp(min=0), :h]  # (B, H)
        if not self.config.bidirectional:
            return forward_last
        return torch.cat([forward_last, out[:, 0, h:]], dim=-1)  # the backward direction ends at t = 0

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(self.dropout(self.pool(ids, lengths)))  # (B, C)
        return logits


class NGramBag(nn.Module):
    """The wide path beside the recurrent encoders: a linear model over the words of the text and its hashed word
    pairs, one weight per class (fastText's bag of n-grams; the "wide" of wide & deep). From a few thousand
    sentences it learns what a recurrent network needs far more data for.

      ids (B, T) -> word weights (B, T, C), summed over the words / sqrt(length)
                 -> pair (t, t+1) hashed into `bag_buckets` rows: weights (B, T-1, C), summed / sqrt(length - 1)
                 -> + bias (C)  ->  logits (B, C)
    """

    PAIR_HASH = 1_000_003  # pair (a, b) -> (a * PAIR_HASH + b) mod buckets: an int64 product, exportable to ONNX

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.buckets = config.bag_buckets
        self.words: nn.Module = nn.Embedding(config.vocab_size, config.num_classes, padding_idx=config.padding_idx)
        self.pairs = nn.Embedding(config.bag_buckets, config.num_classes)
        self.bias = nn.Parameter(torch.zeros(config.num_classes))
        nn.init.zeros_(self.words.weight)  # a linear model starts at zero: it predicts the bias until it learns
        nn.init.zeros_(self.pairs.weight)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.to(ids.device)
        mask = (torch.arange(ids.shape[1], device=ids.device)[None, :] < lengths[:, None]).to(self.bias.dtype)
        n = lengths.to(self.bias.dtype)[:, None]  # (B, 1)
        words = (self.words(ids) * mask.unsqueeze(-1)).sum(1) / n.sqrt()  # (B, C)
        pairs = torch.remainder(ids[:, :-1] * self.PAIR_HASH + ids[:, 1:], self.buckets)  # (B, T-1)
        paired = (self.pairs(pairs) * mask[:, 1:].unsqueeze(-1)).sum(1) / (n - 1).clamp(min=1).sqrt()  # (B, C)
        logits: torch.Tensor = words + paired + self.bias
        return logits


class SentimentClassifier(nn.Module):
    """`config.ensemble` independent encoders, and with `config.bag` an n-gram bag beside them: the parts.

    Each part gives its own logits. Unweighted, their class probabilities are averaged; `config.weighted` sums
    their log-probabilities with the weights in the `mixture` buffer (fitted on dev when training ends).
    forward() returns the combination (B, C), usable as logits; with per_member=True, every part's own logits
    (K, B, C), which training needs to fit each part on its own loss.
    """

    mixture: torch.Tensor  # (K,) with config.weighted

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(Encoder(config) for _ in range(config.ensemble))
        self.bag = NGramBag(config) if config.bag else None
        if config.weighted:
            parts = len(self.parts)
            self.register_buffer("mixture", torch.full((parts,), 1.0 / parts))

    @property
    def parts(self) -> list[nn.Module]:
        """The members, then the bag if there is one: the order of per_member's first axis."""
        return [*self.members, *([self.bag] if self.bag is not None else [])]

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        logits = torch.stack([m(ids, lengths) for m in self.parts])  # (K, B, C)
        if per_member:
            return logits
        return self.combine(logits)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """Parts' logits (K, B, C) -> the mixture's log-probabilities (B, C): the log of mean probabilities, or
        with `weighted` the mixture-weighted sum of log-probabilities (unnormalised; a softmax normalises it)."""
        log_probs = torch.log_softmax(logits, dim=-1)
        if self.config.weighted:
            return (self.mixture[:, None, None] * log_probs).sum(0)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(log_probs))

    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, pool: Executor | None = None) -> torch.Tensor:
        """forward() for inference, with the members run side by side on `pool`'s threads when given (torch
        releases the GIL inside its kernels, so members on 2 threads take about half the time on 2 cores)."""
        if pool is None or len(self.members) == 1:
            with torch.inference_mode():
                together: torch.Tensor = self(ids, lengths)
                return together

        def one(member: nn.Module) -> torch.Tensor:
            with torch.inference_mode():  # thread-local: each worker enters it itself
                out: torch.Tensor = member(ids, lengths)
                return out

        logits = list(pool.map(one, self.parts))
        with torch.inference_mode():
            return self.combine(torch.stack(logits))


class CharRNN(nn.Module):
    """Character language model with a step API: forward(tokens, hidden) -> (logits, hidden)."""

    def __init__(self, config: CharLMConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim)
        self.rnn = make_rnn(
            config.cell, config.embedding_dim, config.hidden_size, config.num_layers, config.dropout, False
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)

    def init_hidden(self, batch: int, device: torch.device | str = "cpu") -> Hidden:
        shape = (self.config.num_layers, batch, self.config.hidden_size)
        h = torch.zeros(shape, device=device)
        if self.config.cell == "lstm":
            return (h, torch.zeros(shape, device=device))
        return h

    def forward(self, tokens: torch.Tensor, hidden: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        if hidden is None:
            hidden = self.init_hidden(tokens.shape[0], tokens.device)
        x = self.embedding(tokens)  # (B, T, E)
        out, hidden = self.rnn(x, hidden)  # (B, T, H)
        return self.head(self.dropout(out)), hidden  # (B, T, V)


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
        _sigmoid_(rz)
        np.multiply(pre[:, 2 * n :], rz[:, :n], out=new)
        new += in_n
        _tanh_of_doubled(new)
        h -= new
        h *= rz[:, n:]
        h += new

    def _lstm(self, h: np.ndarray, c: np.ndarray, gates: np.ndarray, tmp: np.ndarray) -> None:
        """PyTorch's LSTM, gates i, f, g, o: c' = f * c + i * g; h' = o * tanh(c')."""
        n = self.hidden_size
        _sigmoid_(gates)  # g was doubled: sigmoid(2g) now, tanh(g) after the next two lines
        g = gates[:, 2 * n : 3 * n]
        g *= 2
        g -= 1
        c *= gates[:, n : 2 * n]
        np.multiply(gates[:, :n], g, out=tmp)
        c += tmp
        np.multiply(c, 2, out=tmp)
        _tanh_of_doubled(tmp)
        np.multiply(gates[:, 3 * n :], tmp, out=h)


# torch runs an element-wise op on one thread up to this many elements (at::internal::GRAIN_SIZE); above it, it
# hands the op to its thread pool, which between NumPy's BLAS calls costs far more than it saves: an LSTM of 512
# stepping 32 streams (gates of 32 x 2,048) took 30 ms a step instead of under 1 ms, measured
SERIAL_ELEMENTS = 32768


def _sigmoid_(x: np.ndarray) -> None:
    """In place, torch's vectorised sigmoid, in row blocks small enough to stay on this thread."""
    t = torch.from_numpy(x)
    if x.size <= SERIAL_ELEMENTS:
        t.sigmoid_()
        return
    rows = max(1, SERIAL_ELEMENTS // x.shape[-1])
    for start in range(0, x.shape[0], rows):
        t[start : start + rows].sigmoid_()


def _tanh_of_doubled(x: np.ndarray) -> None:
    """In place: x holds 2a; afterwards it holds tanh(a) = 2 * sigmoid(2a) - 1."""
    _sigmoid_(x)
    x *= 2
    x -= 1


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def quantize_int8(net: nn.Module) -> nn.Module:
    """A copy with dynamic int8 quantization of its recurrent and linear layers (weights int8, activations
    quantized per batch), for CPU inference. bench/quantization.py measures what it costs and gains."""
    import copy
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the eager-mode API's notice that it moves to torchao
        layers: set[type[nn.Module]] = {nn.LSTM, nn.GRU, nn.RNN, nn.Linear}
        quantized: nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            copy.deepcopy(net), layers, dtype=torch.qint8
        )
    return quantized


class CharWordEncoder(nn.Module):
    """A word's characters (L,) -> a character BiLSTM -> both directions' final states (2 * char_hidden,).

    Only the real words of a batch run: (B, T, L) -> the words (N, L) -> packed BiLSTM (2, N, Hc) -> (N, 2 * Hc)
    -> back to their places (B, T, 2 * Hc), zeros on padding. Every occurrence runs, not each distinct word once:
    the cost is the L sequential steps, not the width N, so deduplicating saves nothing at batch 32.
    """

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(config.char_vocab_size, config.char_dim, padding_idx=0)
        self.rnn = nn.LSTM(config.char_dim, config.char_hidden, batch_first=True, bidirectional=True)
        self.features = 2 * config.char_hidden

    def forward(self, chars: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        words = chars[mask]  # (N, L) the real words
        lengths = (words != 0).sum(-1).clamp(min=1)  # (N,) an empty word still reads one padding character
        x = self.embedding(words)  # (N, L, C)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.rnn(packed)  # (2, N, Hc)
        per_word = torch.cat([h[0], h[1]], dim=-1)  # (N, 2 * Hc)
        out = per_word.new_zeros(*mask.shape, self.features)  # (B, T, 2 * Hc)
        out[mask] = per_word
        return out


class SequenceTagger(nn.Module):
    """One tag per token (part of speech, BIO entities), optionally decoded jointly by a CRF.

      words (B, T), chars (B, T, L) or None, lengths (B,)
      -> word embedding                         (B, T, E)
         [+ character BiLSTM per real word      (B, T, 2*Hc)]   concatenated
      -> dropout -> RNN over the sentence        (B, T, D*H)   packed (in training dense: `encode`)
      -> dropout -> linear: emissions            (B, T, K)
      softmax per token, or with `config.crf` a linear-chain CRF over the emissions (model/crf.py)

    The loss is the mean over real tokens in both cases: token cross-entropy, or the batch's summed CRF
    negative log-likelihood divided by its token count, so the two share a scale (and a learning rate).
    Each direction reads only the sentence's own words (`run_padded`: the reverse one starts from its last word),
    so a sentence gets the same emissions alone or in a batch.
    """

    def __init__(self, config: TaggerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.chars = CharWordEncoder(config) if config.char_vocab_size > 0 else None
        features = config.embedding_dim + (self.chars.features if self.chars is not None else 0)
        self.encoder = make_rnn(
            config.cell, features, config.hidden_size, config.num_layers, config.dropout, config.bidirectional
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size * (2 if config.bidirectional else 1), config.num_tags)
        self.crf = CRF(config.num_tags) if config.crf else None

    @staticmethod
    def mask(lengths: torch.Tensor, length: int) -> torch.Tensor:
        """True on the real tokens, (B, T)."""
        return torch.arange(length, device=lengths.device)[None, :] < lengths[:, None]

    def forward(self, words: torch.Tensor, chars: torch.Tensor | None, lengths: torch.Tensor) -> torch.Tensor:
        x = self.embedding(words)  # (B, T, E)
        if self.chars is not None:
            if chars is None:
                raise ValueError("this tagger reads characters: pass chars (B, T, L)")
            x = torch.cat([x, self.chars(chars, self.mask(lengths.to(words.device), words.shape[1]))], dim=-1)
        out = self.encode(self.dropout(x), lengths)  # (B, T, D*H)
        emissions: torch.Tensor = self.head(self.dropout(out))  # (B, T, K)
        return emissions

    def encode(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The sentence encoder over (B, T, F): dense in training, where batches are bucketed by length and the
        fused kernels' backward pays; packed otherwise, where a batch of mixed lengths (a service's requests) would
        run every sentence to the longest one's length. The two agree at every real position (tested)."""
        if self.training:
            return run_padded(self.encoder, x, lengths)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean loss per real token: cross-entropy, or the CRF's summed negative log-likelihood / tokens."""
        mask = self.mask(lengths.to(emissions.device), emissions.shape[1])  # (B, T)
        if self.crf is not None:
            return self.crf.nll(emissions, tags, mask).sum() / mask.sum()
        return nn.functional.cross_entropy(emissions[mask], tags[mask])

    def probabilities(self, emissions: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """P(tag | sentence) per token (B, T, K), 0 on padding: a softmax, or the CRF's marginals.
        `temperature` divides the scores first (calibration)."""
        mask = self.mask(lengths.to(emissions.device), emissions.shape[1])
        if self.crf is not None:
            return self.crf.marginals(emissions, mask, temperature)
        return torch.softmax(emissions / temperature, dim=-1) * mask.unsqueeze(-1).to(emissions.dtype)

    @torch.no_grad()
    def decode(
        self, emissions: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0
    ) -> tuple[list[list[int]], list[list[float]]]:
        """The best tags per sentence (argmax, or the CRF's Viterbi path) and each chosen tag's probability."""
        probs = self.probabilities(emissions, lengths, temperature)  # (B, T, K)
        if self.crf is not None:
            paths = self.crf.viterbi(emissions, self.mask(lengths.to(emissions.device), emissions.shape[1]))
            width = max(len(p) for p in paths)
            best = torch.tensor([p + [0] * (width - len(p)) for p in paths], device=probs.device)  # (B, T')
        else:
            best = probs.argmax(-1)
            paths = [row[:n] for row, n in zip(best.tolist(), lengths.tolist(), strict=True)]
        chosen = probs[:, : best.shape[1]].gather(-1, best.unsqueeze(-1)).squeeze(-1).tolist()  # (B, T')
        return paths, [row[: len(p)] for row, p in zip(chosen, paths, strict=True)]
