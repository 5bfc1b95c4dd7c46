"""model/networks.py: the shared recurrent parts; a padded batch run dense gives the real positions what packing
gives, and the parameter count."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import CELLS
from model.generator.config import CharLMConfig
from model.generator.network import CharRNN
from model.networks import count_parameters, make_rnn, reverse_within, run_padded


def test_count_parameters() -> None:
    net = CharRNN(CharLMConfig(vocab_size=5, cell="rnn", embedding_dim=4, hidden_size=6))
    # embedding 5*4, rnn 6*4 + 6*6 + 6 + 6, head 6*5 + 5
    assert count_parameters(net) == 20 + (24 + 36 + 12) + 35


@pytest.mark.parametrize("bidirectional", [True, False], ids=["bi", "uni"])
@pytest.mark.parametrize("cell", CELLS)
def test_a_padded_batch_run_gives_the_real_positions_what_packing_gives(cell: str, bidirectional: bool) -> None:
    """run_padded (dense, each direction on its own, the reverse one within each row's length) against the
    module's own packed forward: the same outputs and the same weight gradients at every real position."""
    torch.manual_seed(0)
    rnn = make_rnn(cell, 6, 5, num_layers=2, dropout=0.3, bidirectional=bidirectional).eval()
    lengths, x = torch.tensor([7, 3, 1, 5]), torch.randn(4, 7, 6)
    real = torch.arange(7)[None, :] < lengths[:, None]  # (B, T)
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(rnn(packed)[0], batch_first=True)[0][real]
    expected.sum().backward()
    grads = {name: p.grad.clone() for name, p in rnn.named_parameters() if p.grad is not None}
    rnn.zero_grad()
    got = run_padded(rnn, x, lengths)[real]
    got.sum().backward()
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    for name, p in rnn.named_parameters():
        torch.testing.assert_close(p.grad, grads[name], atol=1e-5, rtol=1e-5, msg=name)


def test_reverse_within_leaves_padding_in_place() -> None:
    x = torch.arange(8.0).view(2, 4, 1)
    flipped = reverse_within(x, torch.tensor([4, 2]))[..., 0]
    assert flipped.tolist() == [[3.0, 2.0, 1.0, 0.0], [5.0, 4.0, 6.0, 7.0]]
