"""The generator's network (one-to-many, stepped): a pure nn.Module configured by CharLMConfig.

tokens (B, T), hidden
-> embedding   (B, T, E)
-> RNN stack   (B, T, H), hidden'
-> dropout
-> linear      (B, T, V)
"""

from __future__ import annotations

import torch
from torch import nn

from model.generator.config import CharLMConfig
from model.networks import Hidden, make_rnn


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
