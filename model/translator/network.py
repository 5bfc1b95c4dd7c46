"""The translator's network: an encoder-decoder with attention (Cho et al. 2014; Bahdanau et al. 2015; Luong et
al. 2015), pure modules configured by TranslatorConfig.

    source ids (B, S) -> embedding -> bidirectional GRU (run_padded: each row as if alone) -> states (B, S, H)
    bridge: tanh(W [forward state at the last word; backward state at the first]) -> the decoder's first state
    target ids (B, T) -> embedding -> GRU decoder (B, T, H)
    attention of each decoder state over the source states, padded positions masked:
        multiplicative  score(h, s) = h . W s              (Luong "general")
        additive        score(h, s) = v . tanh(W h + U s)   (Bahdanau's form)
        none            the context is the bridge's summary at every step (Cho et al.)
    tanh(W [h; context]) -> dropout -> output layer (the target embedding's transpose when tied) -> logits

The attention reads the decoder's state after its step (Luong's order), not before, so a teacher-forced pass runs
the decoder GRU over the whole target at once and attends for all positions in one batched product: the CPU's
fused recurrent kernel instead of a Python loop per target word. Decoding takes the same path one step at a time
(`step`), with the source states encoded once (`encode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from model.networks import Hidden, make_rnn, run_padded
from model.translator.config import TranslatorConfig


@dataclass
class Memory:
    """What the decoder attends to, computed once per source batch: the encoder states (B, S, H), their
    projection for the attention scores (B, S, A), the mask of real positions (B, S), and the summary the bridge
    made (B, H)."""

    states: torch.Tensor
    keys: torch.Tensor
    mask: torch.Tensor
    summary: torch.Tensor

    def select(self, index: torch.Tensor) -> Memory:
        """The sentences `index`, in that order."""
        return Memory(self.states[index], self.keys[index], self.mask[index], self.summary[index])

    def narrow(self, width: int) -> Memory:
        """The first `width` source positions (those past every row's length are padding)."""
        if width >= self.states.shape[1]:
            return self
        return Memory(self.states[:, :width], self.keys[:, :width], self.mask[:, :width], self.summary)

    def join(self, other: Memory) -> Memory:
        """These rows, then `other`'s, the shorter padded (masked) to the longer's width."""
        width = max(self.states.shape[1], other.states.shape[1])
        a, b = self.widen(width), other.widen(width)
        return Memory(torch.cat([a.states, b.states]), torch.cat([a.keys, b.keys]), torch.cat([a.mask, b.mask]),
                      torch.cat([a.summary, b.summary]))  # fmt: skip

    def widen(self, width: int) -> Memory:
        """Padded with masked positions to `width`."""
        extra = width - self.states.shape[1]
        if extra <= 0:
            return self
        return Memory(F.pad(self.states, (0, 0, 0, extra)), F.pad(self.keys, (0, 0, 0, extra)),
                      F.pad(self.mask, (0, extra), value=False), self.summary)  # fmt: skip


class Translator(nn.Module):
    def __init__(self, config: TranslatorConfig) -> None:
        super().__init__()
        self.config = c = config
        per_direction = c.hidden_size // 2 if c.bidirectional else c.hidden_size
        self.source_embedding = nn.Embedding(c.source_vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.target_embedding = nn.Embedding(c.target_vocab_size, c.embedding_dim, padding_idx=c.pad_id)
        self.encoder = make_rnn(c.cell, c.embedding_dim, per_direction, c.num_layers, c.dropout, c.bidirectional)
        self.bridge = nn.Linear(c.hidden_size, c.hidden_size * c.num_layers)
        self.decoder = make_rnn(c.cell, c.embedding_dim, c.hidden_size, c.num_layers, c.dropout, False)
        if c.attention == "multiplicative":
            self.key = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        elif c.attention == "additive":
            self.key = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
            self.query = nn.Linear(c.hidden_size, c.hidden_size, bias=True)
            self.energy = nn.Linear(c.hidden_size, 1, bias=False)
        self.combine = nn.Linear(2 * c.hidden_size, c.embedding_dim)
        self.drop = nn.Dropout(c.dropout)
        self.output_bias = nn.Parameter(torch.zeros(c.target_vocab_size))
        # tied: the output layer is the target embedding's transpose (Press & Wolf, 2017); one tensor in the file
        self.output = None if c.tie_embeddings else nn.Linear(c.embedding_dim, c.target_vocab_size, bias=False)

    # ------------------------------------------------------------------ encoder

    def encode(self, source: torch.Tensor, lengths: torch.Tensor) -> Memory:
        """Source ids (B, S), right-padded, and their lengths (B,) on the CPU."""
        c = self.config
        mask = torch.arange(source.shape[1], device=source.device)[None, :] < lengths.to(source.device)[:, None]
        states = run_padded(self.encoder, self.drop(self.source_embedding(source)), lengths)  # (B, S, H)
        states = states * mask[:, :, None]  # positions past a row's length hold no meaningful output
        last = (lengths.to(source.device) - 1).clamp(min=0)
        rows = torch.arange(source.shape[0], device=source.device)
        if c.bidirectional:
            half = c.hidden_size // 2
            summary = torch.cat([states[rows, last, :half], states[:, 0, half:]], dim=-1)  # (B, H)
        else:
            summary = states[rows, last]
        keys = self.key(states) if c.attention != "none" else states[:, :, :0]
        return Memory(states, keys, mask, summary)

    def initial_state(self, memory: Memory) -> Hidden:
        """The decoder's first state (L, B, H) from the bridge; an LSTM's cell starts at zero."""
        c = self.config
        h = torch.tanh(self.bridge(memory.summary))  # (B, L * H)
        h = h.view(-1, c.num_layers, c.hidden_size).transpose(0, 1).contiguous()  # (L, B, H)
        return (h, torch.zeros_like(h)) if c.cell == "lstm" else h

    # ------------------------------------------------------------------ decoder

    def attend(self, queries: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Contexts (B, T, H) and attention weights (B, T, S) of decoder states `queries` (B, T, H)."""
        c = self.config
        if c.attention == "none":
            weights = queries.new_zeros(queries.shape[0], queries.shape[1], memory.states.shape[1])
            return memory.summary[:, None, :].expand(-1, queries.shape[1], -1), weights
        if c.attention == "multiplicative":
            scores = queries @ memory.keys.transpose(1, 2)  # (B, T, S)
        else:
            hidden = torch.tanh(self.query(queries)[:, :, None, :] + memory.keys[:, None, :, :])  # (B, T, S, H)
            scores = self.energy(hidden).squeeze(-1)  # (B, T, S)
        scores = scores.masked_fill(~memory.mask[:, None, :], torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1)
        return weights @ memory.states, weights

    def project(self, outputs: torch.Tensor, memory: Memory) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, T, V) and attention (B, T, S) from the decoder's outputs (B, T, H)."""
        context, weights = self.attend(outputs, memory)
        return self.readout(outputs, context), weights

    def readout(self, outputs: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Logits (..., V) from decoder outputs and their contexts (..., H)."""
        mixed = self.drop(torch.tanh(self.combine(torch.cat([outputs, context], dim=-1))))  # (..., E)
        weight = self.target_embedding.weight if self.output is None else self.output.weight
        return F.linear(mixed, weight, self.output_bias)

    def forward(
        self, source: torch.Tensor, lengths: torch.Tensor, target_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher forcing: logits (B, T, V) for target inputs (B, T) ([BOS] + ids, right-padded), and the
        attention (B, T, S). Padding at the end of a target row does not change its earlier positions."""
        memory = self.encode(source, lengths)
        outputs, _ = self.decoder(self.drop(self.target_embedding(target_in)), self.initial_state(memory))
        return self.project(outputs, memory)

    def step(
        self, previous: torch.Tensor, hidden: Hidden, memory: Memory, place: torch.Tensor | None = None,
        width: int = 1,
    ) -> tuple[torch.Tensor, Hidden, torch.Tensor]:  # fmt: skip
        """One decoding step for N rows: the previous target ids (N,) -> logits (N, V), the new state, attention
        (N, S). Row i attends to memory row i, or, with `place`, several rows share one sentence's memory (B
        sentences): row i is slot place[i] of a (B, width) grid, so slot b * width + k belongs to sentence b. The
        attention then runs as for a teacher-forced batch whose time steps are the sentence's rows, and no beam
        needs its own copy of the encoder states."""
        outputs, hidden = self.decoder(self.target_embedding(previous)[:, None, :], hidden)  # (N, 1, H)
        if place is None:
            logits, weights = self.project(outputs, memory)
            return logits[:, 0], hidden, weights[:, 0]
        rows = outputs[:, 0]  # (N, H)
        grid = rows.new_zeros(memory.states.shape[0] * width, rows.shape[1])
        grid[place] = rows
        context, weights = self.attend(grid.view(-1, width, rows.shape[1]), memory)  # (B, width, H), (B, width, S)
        context = context.reshape(-1, context.shape[-1])[place]
        return self.readout(rows, context), hidden, weights.reshape(-1, weights.shape[-1])[place]
