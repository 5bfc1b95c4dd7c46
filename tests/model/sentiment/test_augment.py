"""model/sentiment/augment.py: the distillation transfer set's variants are seeded, never empty, masked and cut as
asked."""

from __future__ import annotations

import random

from model.sentiment.augment import MAX_NGRAM, augmented, variant
from model.tokenization import UNK_ID

TEXTS = [list(range(10, 30)), [5, 6, 7], [8]]


def test_the_same_seed_gives_the_same_variants() -> None:
    first = augmented(TEXTS, 4, 0.1, 0.25, seed=3)
    assert first == augmented(TEXTS, 4, 0.1, 0.25, seed=3)
    assert first != augmented(TEXTS, 4, 0.1, 0.25, seed=4)
    variants, sources = first
    assert len(variants) == 12 and sources == [0] * 4 + [1] * 4 + [2] * 4


def test_masking_replaces_words_with_unk_at_about_the_rate_asked() -> None:
    rng = random.Random(0)
    text = list(range(10, 1010))
    masked = variant(text, mask=0.1, ngram=0.0, rng=rng)
    assert len(masked) == len(text)
    rate = masked.count(UNK_ID) / len(text)
    assert 0.07 < rate < 0.13
    assert all(m in (t, UNK_ID) for m, t in zip(masked, text, strict=True))


def test_ngram_sampling_keeps_a_contiguous_piece_of_the_text() -> None:
    rng = random.Random(1)
    text = list(range(100, 120))
    for _ in range(50):
        piece = variant(text, mask=0.0, ngram=1.0, rng=rng)
        assert 1 <= len(piece) <= MAX_NGRAM
        start = text.index(piece[0])
        assert text[start : start + len(piece)] == piece


def test_a_variant_is_never_empty() -> None:
    rng = random.Random(2)
    assert all(variant(t, mask=1.0, ngram=1.0, rng=rng) for t in TEXTS for _ in range(20))
