"""The tagger's network (many-to-many, aligned): one tag per token, from words and their characters; a pure
nn.Module configured by TaggerConfig. SequenceTagger's docstring has the diagram."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.networks import make_rnn, run_padded
from model.tagger.config import TaggerConfig
from model.tagger.crf import CRF


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
      softmax per token, or with `config.crf` a linear-chain CRF over the emissions (model/tagger/crf.py)

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
