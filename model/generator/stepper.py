"""The generator's inference kernel: CharRNN's weights stepped in NumPy, many streams at once, for the service
and the CLI (model/generator/sampling.py). Tested against the network's own forward."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from model.generator.network import CharRNN


class Stepper:
    """Inference-only, one character per row, in NumPy: `step(tokens, h[, c])` advances every row by one token,
    updating the hidden state in place, and returns the next-token logits (B, V).

    Equal to CharRNN.forward on a length-1 sequence (to float32 rounding) but several times faster on CPU, where
    one-character steps are all per-call overhead:
    - NumPy's BLAS is quicker than torch's for these small products here;
    - the first layer's input projection is a precomputed (V, gates) table with the biases folded in;
    - every temporary lives in a reused buffer (fresh arrays of this size cost page faults), and the element-wise
      passes run on contiguous arrays where it matters (NumPy's in-place passes over strided views are 4x slower);
    - every nonlinearity is torch's vectorised sigmoid (3x quicker than tanh here): the pre-activations that feed
      a tanh are doubled in the weights (exact in floating point), and tanh(x) = 2 * sigmoid(2x) - 1;
    - for a few rows (GEMV_ROWS), each product is a matrix-vector product per row on the weights in PyTorch's
      layout (OpenBLAS's matrix product copies the whole weight matrix on every call, too much for a few rows); for
      more, one matrix product on a transposed copy (`Weight`).
    The arithmetic is row-wise: a row's result never depends on the other rows' values, and only to float32
    rounding on the batch size (a few rows take another BLAS path). Not thread-safe: one Stepper per thread.
    """

    def __init__(self, net: CharRNN) -> None:
        cfg = net.config
        self.cell, self.layers, n = cfg.cell, cfg.num_layers, cfg.hidden_size
        self.hidden_size, self.vocab_size = n, cfg.vocab_size
        with torch.no_grad():
            w = {name: p.detach().float().numpy().copy() for name, p in net.rnn.named_parameters()}
            emb = net.embedding.weight.detach().float().numpy()
            self.w_out = Weight(net.head.weight.detach().float().numpy().copy())  # (V, H)
            self.b_out = net.head.bias.detach().float().numpy().copy()
        # double the rows that feed a tanh: the GRU's n gate, the LSTM's g gate, the plain RNN's only gate
        doubled = {"gru": slice(2 * n, 3 * n), "lstm": slice(2 * n, 3 * n), "rnn": slice(0, n)}[self.cell]
        self.w_ih: list[Weight] = []  # (G*H, in)
        self.w_hh: list[Weight] = []  # (G*H, H)
        self.b_in: list[np.ndarray] = []  # both biases, except the GRU's b_hn (it is scaled by r):
        self.b_hn: list[np.ndarray] = []  # the GRU keeps it apart
        for k in range(self.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                w[f"{name}_l{k}"][doubled] *= 2
            b_ih, b_hh = w[f"bias_ih_l{k}"], w[f"bias_hh_l{k}"]
            self.w_ih.append(Weight(w[f"weight_ih_l{k}"]))
            self.w_hh.append(Weight(w[f"weight_hh_l{k}"]))
            if self.cell == "gru":
                self.b_in.append(np.concatenate([b_ih[: 2 * n] + b_hh[: 2 * n], b_ih[2 * n :]]))
                self.b_hn.append(b_hh[2 * n :].copy())
            else:
                self.b_in.append(b_ih + b_hh)
        self.table = emb @ self.w_ih[0].t + self.b_in[0]  # (V, G*H): layer 0's input projection per token
        if self.cell == "gru":  # split as _gru wants it: [i_r, i_z, b_hn] and i_n
            self.table_n = np.ascontiguousarray(self.table[:, 2 * n :])
            self.table[:, 2 * n :] = self.b_hn[0]
        self.capacity = 0
        self.buffers: dict[str, np.ndarray] = {}
        self.views: tuple[int, dict[str, np.ndarray]] = (0, {})  # the last batch size's views of the buffers
        self.tensors: dict[str, torch.Tensor] = {}  # ... and torch's views of those that a sigmoid takes

    def _workspace(self, b: int) -> dict[str, np.ndarray]:
        if b == self.views[0]:  # a stream steps at one size for many steps in a row
            return self.views[1]
        if b > self.capacity:
            self.capacity = b
            gates = self.w_hh[0].rows.shape[0]
            widths = {"pre": gates, "in": gates, "in_n": self.hidden_size, "tmp": self.hidden_size}
            self.buffers = {name: np.empty((b, width), np.float32) for name, width in widths.items()}
            self.buffers["logits"] = np.empty((b, self.vocab_size), np.float32)
        ws = {name: buf[:b] for name, buf in self.buffers.items()}
        # the slices that every step takes, taken once per batch size: a torch view of an array costs about a
        # microsecond per call and a slice a third of that, where a whole step of one stream is under 100 us
        n, pre, inp = self.hidden_size, ws["pre"], ws["in"]
        # the gates' quarters of pre (the GRU's r, z; the LSTM's i, f, g, o), the GRU's r and z together and the
        # rest, and the GRU's b_hn part of a layer's input
        ws |= {"q0": pre[:, :n], "q1": pre[:, n : 2 * n], "q2": pre[:, 2 * n : 3 * n], "q3": pre[:, 3 * n :],
               "rz": pre[:, : 2 * n], "hn": pre[:, 2 * n :], "in_hn": inp[:, 2 * n :]}  # fmt: skip
        self.tensors = {name: torch.from_numpy(ws[name]) for name in ("pre", "rz", "tmp")}
        self.views = (b, ws)
        return ws

    def step(self, tokens: np.ndarray, h: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        """Advance every row one token: tokens (B,) ints in [0, V), h (L, B, H) float32 (and c for an LSTM),
        updated in place. Returns the logits (B, V) in a buffer that the next call reuses."""
        ws = self._workspace(len(tokens))
        inp = ws["in"]
        for k in range(self.layers):
            if k == 0:  # mode="clip": 10x quicker than the default with out=; ids are always < V here. The
                # array's own method: np.take's wrapper costs more than the copy of a row
                self.table.take(tokens, axis=0, out=inp, mode="clip")
                if self.cell == "gru":
                    self.table_n.take(tokens, axis=0, out=ws["in_n"], mode="clip")
            else:
                _product(h[k - 1], self.w_ih[k], inp)
                inp += self.b_in[k]
                if self.cell == "gru":
                    np.copyto(ws["in_n"], ws["in_hn"])
                    ws["in_hn"][...] = self.b_hn[k]
            pre = _product(h[k], self.w_hh[k], ws["pre"])
            pre += inp
            if self.cell == "gru":
                self._gru(h[k], ws)
            elif self.cell == "lstm":
                assert c is not None
                self._lstm(h[k], c[k], ws)
            else:
                _tanh_of_doubled(pre, self.tensors["pre"])
                h[k] = pre
        logits = _product(h[-1], self.w_out, ws["logits"])
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

    def _gru(self, h: np.ndarray, ws: dict[str, np.ndarray]) -> None:
        """PyTorch's GRU, gates r, z, n: n = tanh(i_n + r * (W_hn h + b_hn)); h' = n + z * (h - n).
        ws["pre"] holds [r, z, W_hn h + b_hn] before their nonlinearities (the n part doubled), ws["in_n"] i_n."""
        _sigmoid_(self.tensors["rz"])
        new = ws["tmp"]
        np.multiply(ws["hn"], ws["q0"], out=new)
        new += ws["in_n"]
        _tanh_of_doubled(new, self.tensors["tmp"])
        h -= new
        h *= ws["q1"]
        h += new

    def _lstm(self, h: np.ndarray, c: np.ndarray, ws: dict[str, np.ndarray]) -> None:
        """PyTorch's LSTM, gates i, f, g, o: c' = f * c + i * g; h' = o * tanh(c')."""
        tmp = ws["tmp"]
        _sigmoid_(self.tensors["pre"])  # g was doubled: sigmoid(2g) now, tanh(g) after the next two lines
        g = ws["q2"]
        g *= 2
        g -= 1
        c *= ws["q1"]
        np.multiply(ws["q0"], g, out=tmp)
        c += tmp
        np.multiply(c, 2, out=tmp)
        _tanh_of_doubled(tmp, self.tensors["tmp"])
        np.multiply(ws["q3"], tmp, out=h)


# up to this many rows, a product is a matrix-vector product per row on the weights in PyTorch's layout; above, one
# matrix product on the pre-transposed weights. OpenBLAS's sgemm copies the whole weight matrix into its panels on
# every call, which costs more than the rows' work for a few rows. On two BLAS threads the two cross at about 6
# rows, on one (each row's product with one core alone) at about 3 (bench/generator_quality.py --sections rows,
# docs/results.md). One bound for both: the two ways round differently, and a stream must step to the same bits on
# one thread or two, since the service switches between them mid-stream (app/serving/threads.py)
GEMV_ROWS = 3


class Weight:
    """A weight matrix in PyTorch's (N, K) layout, `rows`, for a product per row, and its transpose (K, N), `t`,
    for one matrix product: made on first use, since one stream never needs it, and for a GRU of 512 the copies
    take 5.5 ms of the 9 ms a Stepper's setup took with them (cProfile), paid on every call of
    `model.generator.sampling.stream`."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._t: np.ndarray | None = None

    @property
    def t(self) -> np.ndarray:
        if self._t is None:  # two threads may both make it: the same array either way
            self._t = np.ascontiguousarray(self.rows.T)
        return self._t


def _product(x: np.ndarray, w: Weight, out: np.ndarray) -> np.ndarray:
    """x @ w.rows.T into out (B, N), for x (B, K), C-contiguous."""
    if len(x) <= GEMV_ROWS:
        for i in range(len(x)):
            np.matmul(w.rows, x[i], out=out[i])
        return out
    return np.matmul(x, w.t, out=out)


# torch runs an element-wise op on one thread up to this many elements (at::internal::GRAIN_SIZE); above it, it
# hands the op to its thread pool, which between NumPy's BLAS calls costs far more than it saves: an LSTM of 512
# stepping 32 streams (gates of 32 x 2,048) took 30 ms a step instead of under 1 ms, measured
SERIAL_ELEMENTS = 32768


def _sigmoid_(t: torch.Tensor) -> None:
    """In place, torch's vectorised sigmoid, in row blocks small enough to stay on this thread."""
    if t.numel() <= SERIAL_ELEMENTS:
        t.sigmoid_()
        return
    rows = max(1, SERIAL_ELEMENTS // t.shape[-1])
    for start in range(0, t.shape[0], rows):
        t[start : start + rows].sigmoid_()


def _tanh_of_doubled(x: np.ndarray, t: torch.Tensor) -> None:
    """In place: x holds 2a; afterwards it holds tanh(a) = 2 * sigmoid(2a) - 1. t is torch's view of x."""
    _sigmoid_(t)
    x *= 2
    x -= 1
