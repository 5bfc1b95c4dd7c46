"""The classifier's network (many-to-one): a pure nn.Module configured by ClassifierConfig.

  M member encoders [+ an n-gram bag], combined
  ids (B, T), lengths (B,)
  -> embedding      (B, T, E)
  -> packed RNN     (B, T, D*H)
  -> masked pooling (B, P)
  -> dropout -> linear (B, C)
  bag: word and hashed word-pair weights summed (B, C)

Packing means padding never reaches the recurrent cells, and pooling and the bag mask padded positions, so a
sentence gets the same logits alone or inside a padded batch.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.networks import make_rnn
from model.sentiment.config import ClassifierConfig


class Encoder(nn.Module):
    """One member: embedding -> packed recurrent encoder -> masked pooling -> dropout -> linear."""

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        table = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.padding_idx)
        self.embedding: nn.Module = table  # training may swap in a CharNGramEmbedding (model/sentiment/ngrams.py)
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
