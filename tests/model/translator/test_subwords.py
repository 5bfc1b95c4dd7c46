"""Subword vocabularies: learned on the training text, round trip to the text as written, word alignment."""

from __future__ import annotations

import pytest

from model.translator.subwords import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Vocabularies,
    decode,
    encode_source,
    encode_target,
    source_words,
)

TEXTS = [
    "Ein Mann fährt Fahrrad.",
    "Zwei Hunde spielen im Schnee, nicht im Haus!",
    "Eine Frau (mit Hut) liest ein Buch.",
    "Kinder laufen über die Straße.",
] * 5


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_decoding_gives_back_the_text_as_written(kind: str) -> None:
    vocab = Vocabularies.learn(TEXTS, TEXTS, kind, 200, joint=True)
    assert vocab.joint
    for text, ids in zip(TEXTS, encode_target(vocab.target, TEXTS), strict=True):
        assert decode(vocab.target, ids) == text
        assert min(ids) > EOS_ID  # the markers are never text


def test_specials_have_fixed_ids_and_the_source_ends_with_eos() -> None:
    vocab = Vocabularies.learn(TEXTS, [t.lower() for t in TEXTS], "bpe", 150, joint=False)
    assert not vocab.joint
    for tok in (vocab.source, vocab.target):
        assert [tok.token_to_id(s) for s in ("[PAD]", "[UNK]", "[BOS]", "[EOS]")] == [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    (ids,) = encode_source(vocab.source, ["Ein Mann"])
    assert ids[-1] == EOS_ID and EOS_ID not in ids[:-1]
    assert decode(vocab.target, [BOS_ID, *encode_target(vocab.target, ["ein mann"])[0], EOS_ID, PAD_ID]) == "ein mann"


def test_each_source_subword_knows_its_word() -> None:
    vocab = Vocabularies.learn(TEXTS, TEXTS, "bpe", 120, joint=True)
    text = "Zwei Hunde spielen im Schnee."
    words, owner = source_words(vocab.source, text)
    assert words == ["Zwei", "Hunde", "spielen", "im", "Schnee."]
    (ids,) = encode_source(vocab.source, [text])
    assert len(owner) == len(ids) and owner[-1] == -1  # the closing [EOS] belongs to no word
    assert owner[:-1] == sorted(owner[:-1]) and set(owner[:-1]) == set(range(len(words)))
