"""model/tagger/tagging.py: the tagger's encoder (words, characters, padding) and the UD-style tokenizer with
offsets."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from model.tagger.tagging import TagEncoder, normalize_word, tokenize_with_offsets
from model.tokenization import PAD_ID, UNK_ID

TRAIN = [["The", "cat", "sat", "in", "1999", "."], ["the", "dog", "sat", "."], ["A", "cat", "!"]]


def test_normalize_word_lowercases_and_zeroes_digits() -> None:
    assert normalize_word("COVID-19") == "covid-00"
    assert normalize_word("3.14") == "0.00"
    assert normalize_word("Hello") == "hello"


def test_build_counts_normalised_words_with_min_freq() -> None:
    enc = TagEncoder.build(TRAIN, min_freq=2)
    vocab = enc.tokenizer.get_vocab()
    assert vocab["[PAD]"] == PAD_ID and vocab["[UNK]"] == UNK_ID
    assert set(vocab) == {"[PAD]", "[UNK]", "the", "cat", "sat", "."}  # "The" and "the" count together
    assert enc.vocab_size == 6
    assert enc.chars == "".join(sorted(set("".join(w for s in TRAIN for w in s))))
    assert enc.char_vocab_size == len(enc.chars) + 2


def test_encode_pads_words_and_characters() -> None:
    enc = TagEncoder.build(TRAIN)
    words, chars, lengths = enc.encode([["The", "cat"], ["A", "dog", "sat", "!"]])
    assert words.dtype == chars.dtype == lengths.dtype == torch.long
    assert words.shape == (2, 4) and chars.shape == (2, 4, 3) and lengths.tolist() == [2, 4]
    vocab = enc.tokenizer.get_vocab()
    assert words[0].tolist() == [vocab["the"], vocab["cat"], PAD_ID, PAD_ID]
    assert bool((chars[0, 2:] == 0).all())
    decoded = "".join(enc.chars[i - 2] for i in chars[0, 0].tolist() if i)
    assert decoded == "The"  # characters keep the case the word lookup drops
    assert chars[1, 0].tolist() == [enc.chars.index("A") + 2, 0, 0]


def test_unknown_words_and_characters_map_to_unk() -> None:
    enc = TagEncoder.build(TRAIN)
    words, chars, _ = enc.encode([["zebra", "CAT", "2024", "é"]])
    vocab = enc.tokenizer.get_vocab()
    assert words[0].tolist() == [UNK_ID, vocab["cat"], vocab["0000"], UNK_ID]
    assert chars[0, 0, 0].item() == 1  # "z" never seen
    assert chars[0, 3, 0].item() == 1


def test_long_words_keep_their_start_and_end() -> None:
    enc = TagEncoder.build([["abcdefghij"]], max_chars_per_word=4)
    _, chars, _ = enc.encode([["abcdefghij"]])
    assert "".join(enc.chars[i - 2] for i in chars[0, 0].tolist()) == "abij"


def test_the_tokenizer_alone_encodes_as_the_encoder_does() -> None:
    enc = TagEncoder.build(TRAIN)
    tokens = ["THE", "Cat", "sat", "2001", "unseen", "."]
    expected = enc.encode([tokens])[0][0].tolist()
    assert enc.tokenizer.encode(tokens, is_pretokenized=True).ids == expected
    restored = TagEncoder.from_parts(Tokenizer.from_str(enc.tokenizer.to_str()), enc.chars, 20)
    for a, b in zip(restored.encode([tokens]), enc.encode([tokens]), strict=True):
        assert torch.equal(a, b)


def test_encode_and_construction_reject_bad_input() -> None:
    enc = TagEncoder.build(TRAIN)
    with pytest.raises(ValueError, match="no tokens"):
        enc.encode([["a"], []])
    with pytest.raises(ValueError, match="at least one sentence"):
        enc.encode([])
    with pytest.raises(ValueError, match="min_freq"):
        TagEncoder.build(TRAIN, min_freq=0)
    with pytest.raises(ValueError, match="repeat"):
        TagEncoder.from_parts(enc.tokenizer, "aa")


CASES = [
    ("I can't go.", ["I", "ca", "n't", "go", "."]),
    ("She's sure they're fine; we'll see, you've won, I'm in, I'd go.",
     ["She", "'s", "sure", "they", "'re", "fine", ";", "we", "'ll", "see", ",", "you", "'ve", "won", ",",
      "I", "'m", "in", ",", "I", "'d", "go", "."]),
    ("Isn’t it?", ["Is", "n’t", "it", "?"]),
    ("It costs $3.5 million (1,000 units) at 10:30 a.m. in the U.S.!",
     ["It", "costs", "$", "3.5", "million", "(", "1,000", "units", ")", "at", "10:30", "a.m.", "in", "the", "U.S.",
      "!"]),
    ("Mail john.doe@example.com or see https://example.com/a?b=1. Thanks...",
     ["Mail", "john.doe@example.com", "or", "see", "https://example.com/a?b=1", ".", "Thanks", "..."]),
    ("A well-known state-of-the-art model -- really?!",
     ["A", "well-known", "state-of-the-art", "model", "--", "really", "?!"]),
    ("Mr. Smith cannot stay; the dogs' bowls.",
     ["Mr.", "Smith", "can", "not", "stay", ";", "the", "dogs", "'", "bowls", "."]),
    ("  spaces\tand\nnewlines  ", ["spaces", "and", "newlines"]),
    ("", []),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_tokenize_with_offsets(text: str, expected: list[str]) -> None:
    tokens = tokenize_with_offsets(text)
    assert [token for token, _, _ in tokens] == expected
    for token, start, end in tokens:
        assert text[start:end] == token
    starts = [start for _, start, _ in tokens]
    assert starts == sorted(starts)
