"""model/tagger/network.py: shapes for every variant, padding invariance, and learning from context."""

from __future__ import annotations

import pytest
import torch

from model.config import CELLS
from model.tagger.config import TaggerConfig
from model.tagger.network import SequenceTagger
from model.tagger.tagging import TagEncoder

K = 5


def tagger(**overrides: object) -> SequenceTagger:
    torch.manual_seed(0)
    settings: dict[str, object] = {
        "vocab_size": 30, "num_tags": K, "char_vocab_size": 12, "embedding_dim": 8, "char_dim": 4,
        "char_hidden": 3, "hidden_size": 6,
    }  # fmt: skip
    settings.update(overrides)
    return SequenceTagger(TaggerConfig(**settings))  # type: ignore[arg-type]


def batch(lengths: list[int], seed: int = 0, width: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random words (B, T) and characters (B, T, L), padded with 0 past each length (and past each word)."""
    gen = torch.Generator().manual_seed(seed)
    b, t = len(lengths), max(lengths)
    lens = torch.tensor(lengths)
    real = torch.arange(t)[None, :] < lens[:, None]  # (B, T)
    words = torch.randint(2, 30, (b, t), generator=gen) * real
    word_len = torch.randint(1, width + 1, (b, t), generator=gen)
    chars = torch.randint(1, 12, (b, t, width), generator=gen) * (torch.arange(width) < word_len[..., None])
    return words, chars * real[..., None], lens


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_shapes_for_every_cell_and_direction(cell: str, bidirectional: bool) -> None:
    net = tagger(cell=cell, bidirectional=bidirectional, num_layers=2)
    words, chars, lengths = batch([4, 2, 3])
    emissions = net(words, chars, lengths)
    assert emissions.shape == (3, 4, K)
    tags = torch.randint(0, K, (3, 4))
    loss = net.loss(emissions, tags, lengths)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_without_characters() -> None:
    net = tagger(char_vocab_size=0)
    assert net.chars is None
    words, _, lengths = batch([3, 1])
    assert net(words, None, lengths).shape == (2, 3, K)


def test_a_character_tagger_needs_characters() -> None:
    words, _, lengths = batch([3, 1])
    with pytest.raises(ValueError, match="chars"):
        tagger()(words, None, lengths)


@pytest.mark.parametrize("crf", [False, True])
def test_decode_gives_tags_and_their_probabilities(crf: bool) -> None:
    net = tagger(crf=crf).eval()
    words, chars, lengths = batch([4, 1, 3])
    emissions = net(words, chars, lengths)
    probs = net.probabilities(emissions, lengths)
    assert probs.shape == (3, 4, K)
    torch.testing.assert_close(probs.sum(-1)[0], torch.ones(4))
    assert bool((probs[1, 1:] == 0).all())  # padding
    tags, scores = net.decode(emissions, lengths)
    assert [len(t) for t in tags] == [4, 1, 3] == [len(s) for s in scores]
    for b, (row, conf) in enumerate(zip(tags, scores, strict=True)):
        for t, (tag, p) in enumerate(zip(row, conf, strict=True)):
            assert 0 <= tag < K and p == pytest.approx(probs[b, t, tag].item())
    if not crf:
        assert tags[0] == emissions[0].argmax(-1).tolist()
    hot = net.probabilities(emissions, lengths, temperature=1e6)[0]
    torch.testing.assert_close(hot, torch.full_like(hot, 1 / K), atol=1e-4, rtol=0)


@pytest.mark.parametrize(("cell", "crf", "chars"), [("lstm", False, 12), ("gru", True, 12), ("rnn", False, 0)])
def test_a_sentence_is_tagged_the_same_alone_or_in_a_padded_batch(cell: str, crf: bool, chars: int) -> None:
    net = tagger(cell=cell, crf=crf, char_vocab_size=chars, num_layers=2).eval()
    words, ch, lengths = batch([3, 6, 1, 4], seed=1)
    with torch.inference_mode():
        together = net(words, ch if chars else None, lengths)
        tags, scores = net.decode(together, lengths)
        for b, n in enumerate(lengths.tolist()):
            alone = net(words[b : b + 1, :n], ch[b : b + 1, :n] if chars else None, lengths[b : b + 1])
            torch.testing.assert_close(alone[0], together[b, :n], atol=1e-5, rtol=0)
            one_tags, one_scores = net.decode(alone, lengths[b : b + 1])
            assert one_tags[0] == tags[b]
            assert one_scores[0] == pytest.approx(scores[b], abs=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_training_runs_the_batch_dense_and_gives_what_packed_inference_gives(cell: str) -> None:
    """Without dropout, training mode (dense, `run_padded`) and eval mode (packed) give each sentence the same
    emissions at its real positions, in a batch of mixed lengths."""
    net = tagger(cell=cell, num_layers=2, dropout=0.0)
    words, chars, lengths = batch([3, 6, 1, 4], seed=2)
    real = torch.arange(6)[None, :] < lengths[:, None]
    dense = net.train()(words, chars, lengths)[real]
    with torch.no_grad():
        packed = net.eval()(words, chars, lengths)[real]
    torch.testing.assert_close(dense.detach(), packed, atol=1e-5, rtol=0)


SENTENCES = [
    ("I saw the saw".split(), ["PRON", "VERB", "DET", "NOUN"]),
    ("the saw cut the wood".split(), ["DET", "NOUN", "VERB", "DET", "NOUN"]),
    ("we saw a saw".split(), ["PRON", "VERB", "DET", "NOUN"]),
]
TAGS = ["PRON", "VERB", "DET", "NOUN"]


@pytest.mark.parametrize("crf", [False, True])
def test_a_tiny_tagger_learns_that_saw_depends_on_context(crf: bool) -> None:
    encoder = TagEncoder.build([tokens for tokens, _ in SENTENCES])
    words, chars, lengths = encoder.encode([tokens for tokens, _ in SENTENCES])
    gold = [[TAGS.index(tag) for tag in tags] for _, tags in SENTENCES]
    targets = torch.tensor([row + [-100] * (words.shape[1] - len(row)) for row in gold])
    net = tagger(
        vocab_size=encoder.vocab_size, char_vocab_size=encoder.char_vocab_size, num_tags=len(TAGS), crf=crf,
        embedding_dim=16, hidden_size=16, dropout=0.0,
    )  # fmt: skip
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for step in range(200):
        loss = net.loss(net(words, chars, lengths), targets, lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 10 == 9 and net.eval().decode(net(words, chars, lengths), lengths)[0] == gold:
            break
        net.train()
    net.eval()
    tags, scores = net.decode(net(words, chars, lengths), lengths)
    assert tags == gold, f"not learned in {step + 1} steps"
    assert min(min(row) for row in scores) > 0.5
