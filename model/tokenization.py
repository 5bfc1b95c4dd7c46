"""Tokenizers built with the `tokenizers` library and saved as `tokenizer.json`.

Two kinds: `word`/`wordpiece`/`bpe` tokenizers for the classifier, and a character-level tokenizer for the
generator. Every tokenizer reserves id 0 for padding and id 1 for unknown input, so text never seen in
training maps to [UNK] instead of failing.

A word tokenizer with `pieces` keeps every training word whole and spells a word it has never seen with
WordPiece pieces ("unwatchable" -> "un", "##watch", "##able") instead of one [UNK]; the classifier gives those
pieces vectors built from their character n-grams (model/sentiment/ngrams.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
CONTINUATION = "##"  # WordPiece's prefix for a piece that continues a word
SPECIALS = [PAD, UNK]
WordScheme = Literal["word", "wordpiece", "bpe"]
SCHEMES: tuple[str, ...] = ("word", "wordpiece", "bpe")


def _normalizer(lowercase: bool) -> normalizers.Normalizer:
    steps: list[normalizers.Normalizer] = [normalizers.NFKC()]
    if lowercase:
        steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def build_word_tokenizer(
    texts: Iterable[str],
    scheme: WordScheme = "word",
    vocab_size: int = 30000,
    min_frequency: int = 1,
    lowercase: bool = True,
    pieces: int = 0,
) -> Tokenizer:
    """Train a classifier tokenizer on `texts`: word-level, WordPiece or BPE, with NFKC (+ lowercase). With
    `pieces` (word-level only), words outside the vocabulary are spelled with up to that many WordPiece pieces."""
    if pieces:
        if scheme != "word":
            raise ValueError(f"pieces spell unseen words for the word tokenizer, not for {scheme!r}")
        texts = list(texts)
        words = build_word_tokenizer(texts, "word", vocab_size, min_frequency, lowercase)
        return _with_pieces(words, build_word_tokenizer(texts, "wordpiece", pieces, 1, lowercase))
    if vocab_size <= len(SPECIALS):
        raise ValueError(f"vocab_size must be more than {len(SPECIALS)} ([PAD], [UNK] and the words), got {vocab_size}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tokenizer scheme {scheme!r}; choose one of {SCHEMES}")
    texts = list(texts)
    normalizer, pre_tokenizer = _normalizer(lowercase), pre_tokenizers.Whitespace()
    affixed = _affixed_pieces(texts, scheme, normalizer, pre_tokenizer)
    settings: dict[str, Any] = {"vocab_size": vocab_size, "min_frequency": min_frequency}
    settings["special_tokens"] = SPECIALS + affixed
    if scheme == "word":
        tok = Tokenizer(models.WordLevel(unk_token=UNK))
        trainer: trainers.Trainer = trainers.WordLevelTrainer(**settings, show_progress=False)
    elif scheme == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
        trainer = trainers.WordPieceTrainer(**settings, show_progress=False)
        tok.decoder = decoders.WordPiece()
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK, end_of_word_suffix="</w>"))
        trainer = trainers.BpeTrainer(**settings, end_of_word_suffix="</w>", show_progress=False)
        tok.decoder = decoders.BPEDecoder(suffix="</w>")
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(texts, trainer=trainer)
    if affixed:
        tok = _canonical(tok)
    _check_specials(tok)
    return tok


# The WordPiece and BPE trainers of `tokenizers` (0.23) create the "##x" / "x</w>" pieces while walking a hash map,
# so their ids, and with them the tie-breaking between merges of equal count, change from run to run: the same
# data and seed gave a different vocabulary (huggingface/tokenizers#1794). Registering those pieces up front, in
# sorted order, as extra special tokens gives them fixed ids; _canonical() then turns them back into plain tokens.


def _affixed_pieces(
    texts: list[str], scheme: str, normalizer: normalizers.Normalizer, pre_tokenizer: pre_tokenizers.PreTokenizer
) -> list[str]:
    """Every continuation ("##x", WordPiece) or word-final ("x</w>", BPE) piece the trainer would create."""
    if scheme == "word":
        return []
    pieces: set[str] = set()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            if scheme == "wordpiece":
                pieces.update(f"##{ch}" for ch in word[1:])
            else:
                pieces.add(f"{word[-1]}</w>")
    return sorted(pieces)


def _canonical(tok: Tokenizer) -> Tokenizer:
    """Only [PAD] and [UNK] stay special, and ids follow sorted order (ids are arbitrary to the model; BPE merges
    are stored as strings), so equal vocabularies get equal ids."""
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIALS]
    vocab = spec["model"]["vocab"]
    ordered = SPECIALS + sorted(token for token in vocab if token not in SPECIALS)
    spec["model"]["vocab"] = {token: i for i, token in enumerate(ordered)}
    return Tokenizer.from_str(json.dumps(spec))


def _with_pieces(words: Tokenizer, wordpiece: Tokenizer) -> Tokenizer:
    """A WordPiece tokenizer over the word vocabulary plus the WordPiece pieces. WordPiece takes the longest
    vocabulary entry first, so a training word stays one token; a word never seen is spelled with pieces (its
    first piece may be a whole word: "entertaining", "##ly"), and [UNK] is left for characters never seen."""
    vocab = set(words.get_vocab()) | set(wordpiece.get_vocab())
    ordered = SPECIALS + sorted(vocab - set(SPECIALS))
    ids = {token: i for i, token in enumerate(ordered)}
    tok = Tokenizer(models.WordPiece(ids, unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = words.normalizer
    tok.pre_tokenizer = words.pre_tokenizer
    tok.decoder = decoders.WordPiece()
    _check_specials(tok)
    return tok


def is_piece(token: str) -> bool:
    """A continuation piece ("##able") rather than a word or the start of one."""
    return token.startswith(CONTINUATION)


def build_char_tokenizer(text: str, min_frequency: int = 1) -> Tokenizer:
    """A character-level tokenizer: every distinct character of `text` (whitespace included) is a token."""
    counts: dict[str, int] = {}
    for ch in text:
        counts[ch] = counts.get(ch, 0) + 1
    chars = sorted(ch for ch, n in counts.items() if n >= min_frequency)
    vocab = {PAD: PAD_ID, UNK: UNK_ID}
    for ch in chars:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # one pre-token per character, whitespace included; [\s\S] also matches newlines
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def _check_specials(tok: Tokenizer) -> None:
    if tok.token_to_id(PAD) != PAD_ID or tok.token_to_id(UNK) != UNK_ID:
        raise RuntimeError("tokenizer must map [PAD] to 0 and [UNK] to 1")


def encode_batch(tok: Tokenizer, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
    """Token ids per text; an empty encoding becomes a single [UNK] so every sequence has length >= 1."""
    out = []
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        ids = enc.ids[:max_length] if max_length else enc.ids
        out.append(ids or [UNK_ID])
    return out


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    tok.save(str(path))


def load_tokenizer(path: str | Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(path))
    _check_specials(tok)
    return tok
