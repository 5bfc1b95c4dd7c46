"""The networks: pure nn.Modules configured by dataclasses (model/config.py), nothing else.

SentimentClassifier (many-to-one)       CharRNN (one-to-many, stepped)
  M member encoders, probabilities averaged
  ids (B, T), lengths (B,)                tokens (B, T), hidden
  -> embedding      (B, T, E)             -> embedding   (B, T, E)
  -> packed RNN     (B, T, D*H)           -> RNN stack   (B, T, H), hidden'
  -> masked pooling (B, P)                -> dropout
  -> dropout -> linear (B, C)             -> linear      (B, T, V)

Packing means padding never reaches the recurrent cells, and pooling masks padded positions, so a sentence
gets the same logits alone or inside a padded batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Executor

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import CharLMConfig, ClassifierConfig

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


class Encoder(nn.Module):
    """One member: embedding -> packed recurrent encoder -> masked pooling -> dropout -> linear."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
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


class SentimentClassifier(nn.Module):
    """`config.ensemble` independent encoders whose class probabilities are averaged.

    forward() returns the ensemble's log-probabilities (B, C), usable as logits; with per_member=True it returns
    every member's own logits (M, B, C), which training needs to fit each member on its own loss.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        self.members = nn.ModuleList(Encoder(config) for _ in range(config.ensemble))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, per_member: bool = False) -> torch.Tensor:
        logits = torch.stack([m(ids, lengths) for m in self.members])  # (M, B, C)
        if per_member:
            return logits
        return self.combine(logits)

    def combine(self, logits: torch.Tensor) -> torch.Tensor:
        """Members' logits (M, B, C) -> the ensemble's log of mean probabilities (B, C)."""
        log_probs = torch.log_softmax(logits, dim=-1)
        return torch.logsumexp(log_probs, dim=0) - math.log(len(self.members))

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

        logits = list(pool.map(one, self.members))
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
