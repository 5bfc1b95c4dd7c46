"""The encoder-decoder: padding does not change a sentence's outputs; every attention's shapes and masking."""

from __future__ import annotations

import pytest
import torch

from model.translator.config import TranslatorConfig
from model.translator.decode import pad_sources
from model.translator.network import Translator


def tiny(**overrides: object) -> Translator:
    torch.manual_seed(0)
    config = TranslatorConfig(source_vocab_size=30, target_vocab_size=25, embedding_dim=8, hidden_size=12, dropout=0.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return Translator(TranslatorConfig(**vars(config))).eval()


SOURCES = [[5, 6, 7, 8, 9, 3], [10, 11, 3], [12, 13, 14, 3]]


@pytest.mark.parametrize("attention", ["multiplicative", "additive", "none"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_a_sentence_gets_the_same_outputs_alone_or_in_a_padded_batch(
    attention: str, cell: str, bidirectional: bool
) -> None:
    net = tiny(attention=attention, cell=cell, bidirectional=bidirectional, num_layers=2)
    target = torch.tensor([[2, 7, 8, 9, 0, 0], [2, 4, 5, 6, 7, 8], [2, 9, 0, 0, 0, 0]])
    ids, lengths = pad_sources(SOURCES, torch.device("cpu"))
    with torch.no_grad():
        batch_logits, batch_attention = net(ids, lengths, target)
        for i, source in enumerate(SOURCES):
            alone_ids, alone_lengths = pad_sources([source], torch.device("cpu"))
            logits, attention_weights = net(alone_ids, alone_lengths, target[i : i + 1])
            torch.testing.assert_close(batch_logits[i : i + 1], logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(batch_attention[i : i + 1, :, : len(source)], attention_weights)


def test_attention_is_a_distribution_over_the_real_source_positions() -> None:
    net = tiny()
    ids, lengths = pad_sources(SOURCES, torch.device("cpu"))
    with torch.no_grad():
        logits, weights = net(ids, lengths, torch.full((3, 4), 2))
    assert logits.shape == (3, 4, 25) and weights.shape == (3, 4, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4))
    assert weights[1, :, 3:].abs().max() == 0 and weights[2, :, 4:].abs().max() == 0  # padding gets none


def test_tied_embeddings_store_one_matrix() -> None:
    tied, untied = tiny(tie_embeddings=True), tiny(tie_embeddings=False)
    assert "output.weight" not in tied.state_dict() and "output.weight" in untied.state_dict()
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 25 * 8


def test_the_config_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="attention must be one of"):
        TranslatorConfig(30, 25, attention="dot")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden_size must be even"):
        TranslatorConfig(30, 25, hidden_size=7)
