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
from collections.abc import Callable
from concurrent.futures import Executor

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
      -> dropout -> packed RNN over the sentence (B, T, D*H)
      -> dropout -> linear: emissions            (B, T, K)
      softmax per token, or with `config.crf` a linear-chain CRF over the emissions (model/crf.py)

    The loss is the mean over real tokens in both cases: token cross-entropy, or the batch's summed CRF
    negative log-likelihood divided by its token count, so the two share a scale (and a learning rate).
    Packing keeps padding out of the recurrent cells, so a sentence gets the same emissions alone or in a batch.
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
        packed = pack_padded_sequence(self.dropout(x), lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.encoder(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=words.shape[1])  # (B, T, D*H)
        emissions: torch.Tensor = self.head(self.dropout(out))  # (B, T, K)
        return emissions

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
