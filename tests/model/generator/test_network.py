"""model/generator/network.py: the CharRNN step API matches the full forward."""

from __future__ import annotations

import pytest
import torch

from model.config import CELLS
from model.generator.config import CharLMConfig
from model.generator.network import CharRNN


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_stepping_equals_the_full_sequence(cell: str, num_layers: int) -> None:
    torch.manual_seed(0)
    net = CharRNN(CharLMConfig(vocab_size=11, cell=cell, embedding_dim=8, hidden_size=16, num_layers=num_layers))  # type: ignore[arg-type]
    net.eval()
    tokens = torch.randint(0, 11, (2, 7))  # (B, T)
    with torch.no_grad():
        full, full_hidden = net(tokens)  # (B, T, V)
        hidden = None
        steps = []
        for t in range(tokens.shape[1]):
            logits, hidden = net(tokens[:, t : t + 1], hidden)  # (B, 1, V)
            steps.append(logits)
        # a prefix followed by the rest, carrying the hidden state across
        head, mid = net(tokens[:, :3])
        tail, _ = net(tokens[:, 3:], mid)
    assert full.shape == (2, 7, 11)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), full, atol=1e-5, rtol=0)
    if cell == "lstm":
        assert isinstance(hidden, tuple) and isinstance(full_hidden, tuple)
        for mine, theirs in zip(hidden, full_hidden, strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=0)
    else:
        assert isinstance(hidden, torch.Tensor) and isinstance(full_hidden, torch.Tensor)
        torch.testing.assert_close(hidden, full_hidden, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_char_rnn_init_hidden_shapes(cell: str) -> None:
    net = CharRNN(CharLMConfig(vocab_size=5, cell=cell, embedding_dim=4, hidden_size=6, num_layers=2))  # type: ignore[arg-type]
    hidden = net.init_hidden(3)
    states = hidden if isinstance(hidden, tuple) else (hidden,)
    assert len(states) == (2 if cell == "lstm" else 1)
    assert all(h.shape == (2, 3, 6) and not h.any() for h in states)
    # an explicit zero state is what forward uses when given none
    tokens = torch.tensor([[1, 2, 3]] * 3)
    with torch.no_grad():
        torch.testing.assert_close(net(tokens, hidden)[0], net(tokens)[0])
