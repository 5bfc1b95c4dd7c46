"""Subword vocabularies for translation, learned with the `tokenizers` library on the training pairs: BPE
(Sennrich et al., 2016) or Unigram (Kudo, 2018), one per side or one joint vocabulary for both.

Text is NFKC-normalised and split at whitespace with the Metaspace pre-tokenizer (a word's first piece carries
"▁"), so decoding gives the words back with their spacing and punctuation as written: what a person reads, and
what sacreBLEU scores. Ids 0-3 are [PAD], [UNK], [BOS] and [EOS] on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

PAD, UNK, BOS, EOS = "[PAD]", "[UNK]", "[BOS]", "[EOS]"
SPECIALS = [PAD, UNK, BOS, EOS]
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def learn(texts: Sequence[str], kind: str, vocab_size: int) -> Tokenizer:
    """A BPE or Unigram tokenizer of about `vocab_size` pieces learned on `texts`."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, unk_token=UNK, show_progress=False
        )
    else:
        raise ValueError(f"subwords must be bpe or unigram, got {kind!r}")
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer)
    for i, special in enumerate(SPECIALS):
        if tok.token_to_id(special) != i:
            raise RuntimeError(f"{special} got id {tok.token_to_id(special)}, expected {i}")
    return tok


@dataclass
class Vocabularies:
    """The source side's tokenizer and the target side's (the same object when joint)."""

    source: Tokenizer
    target: Tokenizer

    @property
    def joint(self) -> bool:
        return self.source is self.target

    @classmethod
    def learn(
        cls, source: Sequence[str], target: Sequence[str], kind: str, vocab_size: int, joint: bool
    ) -> Vocabularies:
        if joint:
            tok = learn([*source, *target], kind, vocab_size)
            return cls(tok, tok)
        return cls(learn(source, kind, vocab_size), learn(target, kind, vocab_size))


def encode_source(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Source subword ids, each sentence closed by [EOS] (the encoder sees where it ends)."""
    return [[*e.ids, EOS_ID] for e in tok.encode_batch(list(texts))]


def encode_target(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Target subword ids without the markers: the decoder reads [BOS] + ids and predicts ids + [EOS]."""
    return [e.ids for e in tok.encode_batch(list(texts))]


def source_words(tok: Tokenizer, text: str) -> tuple[list[str], list[int]]:
    """The source's words (as the pre-tokenizer splits them, in their original spelling) and, for each subword
    the encoder reads (the final [EOS] included, as -1), the index of the word it belongs to."""
    enc = tok.encode(text)
    words: list[str] = []
    owner: list[int] = []
    spans: dict[int, tuple[int, int]] = {}
    for word, (start, end) in zip(enc.word_ids, enc.offsets, strict=True):
        if word is None:
            owner.append(-1)
            continue
        lo, hi = spans.get(word, (start, end))
        spans[word] = (min(lo, start), max(hi, end))
        owner.append(word)
    index = {w: i for i, w in enumerate(sorted(spans))}
    words = [text[spans[w][0] : spans[w][1]].strip() for w in sorted(spans)]
    return words, [index.get(w, -1) for w in owner] + [-1]


def decode(tok: Tokenizer, ids: Sequence[int]) -> str:
    """Detokenized text of target ids (markers and padding dropped)."""
    return tok.decode([i for i in ids if i > EOS_ID], skip_special_tokens=True)
