"""The sequence tagger's input: raw text -> word tokens with offsets -> padded word and character ids.

No training code lives here: the service imports it to serve a tagger.

  tokenize_with_offsets("I can't go.")  ->  [("I", 0, 1), ("ca", 2, 4), ("n't", 4, 7), ("go", 8, 10), (".", 10, 11)]
  TagEncoder.encode([["I", "ca", "n't"], ...])  ->  words (B, T), chars (B, T, L), lengths (B,)

Words are looked up in a `tokenizers` WordLevel vocabulary ([PAD] = 0, [UNK] = 1) by a normalised form
(lowercase, every digit 0), so "2024" and "1999" share a vector; the characters keep the original form, so the
character path still sees case and digits. The character vocabulary is a string of the training characters
(ids: 0 padding, 1 unknown, 2.. the string's characters), which the artifact stores beside tokenizer.json.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers

from model.tokenization import PAD, PAD_ID, UNK, UNK_ID

CHAR_PAD_ID, CHAR_UNK_ID = 0, 1
CHAR_OFFSET = 2  # the first character's id

_DIGIT = re.compile(r"\d")


def normalize_word(word: str) -> str:
    """The form a word is looked up by: lowercase, every digit mapped to 0 ("Route 66" -> "route", "00")."""
    return _DIGIT.sub("0", word.lower())


def _word_tokenizer(vocab: dict[str, int]) -> Tokenizer:
    """A WordLevel tokenizer that normalises as normalize_word() does, so the tokenizer alone encodes correctly
    (`tokenizer.encode(tokens, is_pretokenized=True)`)."""
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex(r"\d"), "0")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


class TagEncoder:
    """Tokens -> padded word ids, character ids and lengths, for SequenceTagger.forward()."""

    def __init__(self, tokenizer: Tokenizer, chars: str, max_chars_per_word: int = 20) -> None:
        if max_chars_per_word < 1:
            raise ValueError(f"max_chars_per_word must be >= 1, got {max_chars_per_word}")
        if tokenizer.token_to_id(PAD) != PAD_ID or tokenizer.token_to_id(UNK) != UNK_ID:
            raise ValueError("the word tokenizer must map [PAD] to 0 and [UNK] to 1")
        if len(set(chars)) != len(chars):
            raise ValueError("chars must not repeat a character")
        self.tokenizer = tokenizer
        self.chars = chars
        self.max_chars_per_word = max_chars_per_word
        self._words = tokenizer.get_vocab()  # a plain dict: one lookup per token, no tokenizer call per batch
        self._chars = {ch: i + CHAR_OFFSET for i, ch in enumerate(chars)}

    @classmethod
    def build(
        cls, sentences_tokens: Sequence[Sequence[str]], min_freq: int = 1, max_chars_per_word: int = 20
    ) -> TagEncoder:
        """Vocabularies from training sentences: words seen at least `min_freq` times (normalised; most frequent
        first, ties in alphabetical order), and every character seen."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1, got {min_freq}")
        counts = Counter(normalize_word(token) for sentence in sentences_tokens for token in sentence)
        kept = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        vocab = {PAD: PAD_ID, UNK: UNK_ID} | {w: i + 2 for i, w in enumerate(kept)}
        chars = "".join(sorted({ch for sentence in sentences_tokens for token in sentence for ch in token}))
        return cls(_word_tokenizer(vocab), chars, max_chars_per_word)

    @classmethod
    def from_parts(cls, tokenizer: Tokenizer, chars: str, max_chars_per_word: int = 20) -> TagEncoder:
        """The encoder an artifact stored: its tokenizer.json and the character string from config.json."""
        return cls(tokenizer, chars, max_chars_per_word)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def char_vocab_size(self) -> int:
        return len(self.chars) + CHAR_OFFSET

    def word_ids(self, tokens: Sequence[str]) -> list[int]:
        return [self._words.get(normalize_word(token), UNK_ID) for token in tokens]

    def char_ids(self, token: str, width: int) -> list[int]:
        """A token's character ids, at most `width`: a longer word keeps its start and its end, where its
        prefixes and suffixes are."""
        if len(token) > width:
            token = token[: (width + 1) // 2] + token[len(token) - width // 2 :]
        return [self._chars.get(ch, CHAR_UNK_ID) for ch in token]

    def encode(self, batch_tokens: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """words (B, T), chars (B, T, L) and lengths (B,), padded with 0; L is the batch's longest word, at most
        max_chars_per_word."""
        if not batch_tokens:
            raise ValueError("encode needs at least one sentence")
        lengths = np.array([len(sentence) for sentence in batch_tokens], dtype=np.int64)
        if (lengths == 0).any():
            raise ValueError(f"sentence {int(np.argmin(lengths))} has no tokens; every sentence needs one")
        width = min(self.max_chars_per_word, max(len(token) for sentence in batch_tokens for token in sentence))
        words = np.zeros((len(batch_tokens), int(lengths.max())), dtype=np.int64)  # (B, T)
        chars = np.zeros((*words.shape, max(width, 1)), dtype=np.int64)  # (B, T, L)
        for b, sentence in enumerate(batch_tokens):
            words[b, : len(sentence)] = self.word_ids(sentence)
            for t, token in enumerate(sentence):
                ids = self.char_ids(token, width)
                chars[b, t, : len(ids)] = ids
        return torch.from_numpy(words), torch.from_numpy(chars), torch.from_numpy(lengths)


# Tokens the way UD English (EWT) splits them: punctuation apart, clitics apart ("ca" "n't", "I" "'m"), while
# numbers, URLs, e-mail addresses, abbreviations and hyphenated words stay whole. Alternatives are tried in order.
_TOKEN = re.compile(
    r"""
    (?:https?://|www\.)[^\s<>"]*[^\s<>".,;:!?'()\[\]{}]   # a URL, without the sentence's closing punctuation
  | [\w.+-]+@\w[\w-]*(?:\.\w[\w-]*)+                        # an e-mail address
  | \d+(?:[.,:/]\d+)+                                       # 3.5, 1,000, 10:30, 1/2
  | (?:[A-Za-z]\.){2,}                                      # U.S., e.g., a.m.
  | (?:Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|vs|etc|Inc|Ltd|Co|Corp)\.(?!\w)   # titles and a few others
  | \w+(?:[-'’]\w+)*                                       # words, hyphenated words, words with apostrophes
  | \.{2,} | -{2,} | [!?]+ | \S                             # ellipses, dashes, !?!, any other symbol alone
    """,
    re.VERBOSE,
)
_CLITIC = re.compile(r"(?i)(?:n['’]t|['’](?:s|re|ll|ve|m|d))$")
_SPLIT_AT = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3}  # EWT: can|not, gon|na, got|ta, wan|na


def _split_clitic(word: str, start: int) -> list[tuple[str, int, int]]:
    """ "can't" -> "ca", "n't"; "she's" -> "she", "'s"; "cannot" -> "can", "not"; anything else whole."""
    cut = _SPLIT_AT.get(word.lower())
    if cut is None:
        match = _CLITIC.search(word)
        cut = match.start() if match and match.start() > 0 else None
    if cut is None:
        return [(word, start, start + len(word))]
    return [(word[:cut], start, start + cut), (word[cut:], start + cut, start + len(word))]


def tokenize_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """Word tokens of English text with their character offsets: text[start:end] == token."""
    tokens: list[tuple[str, int, int]] = []
    for match in _TOKEN.finditer(text):
        tokens.extend(_split_clitic(match.group(), match.start()))
    return tokens


__all__ = ["TagEncoder", "normalize_word", "tokenize_with_offsets"]
