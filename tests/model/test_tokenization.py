"""model/tokenization.py: tokenizer.json round trips, [PAD]=0 / [UNK]=1, and input never seen in training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models

from model.tokenization import (
    PAD,
    PAD_ID,
    SCHEMES,
    UNK,
    UNK_ID,
    build_char_tokenizer,
    build_word_tokenizer,
    encode_batch,
    load_tokenizer,
    save_tokenizer,
)

CORPUS = [
    "A good movie with a great plot",
    "a bad film , really bad acting",
    "great acting and a good story",
    "the plot was dull and the film was boring",
]
PROBES = ["a good movie", "Bad ACTING , dull plot", "completely unseen zyzzyva", "", "   ", "émigré 中文 😀"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_word_tokenizer_round_trip(tmp_path: Path, scheme: str) -> None:
    tok = build_word_tokenizer(CORPUS, scheme, vocab_size=80)  # type: ignore[arg-type]
    assert tok.token_to_id(PAD) == PAD_ID and tok.token_to_id(UNK) == UNK_ID
    path = tmp_path / "tokenizer.json"
    save_tokenizer(tok, path)
    loaded = load_tokenizer(path)
    assert loaded.get_vocab() == tok.get_vocab()
    assert encode_batch(loaded, PROBES) == encode_batch(tok, PROBES)
    assert encode_batch(loaded, ["a good movie"]) != [[UNK_ID]]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unknown_input_maps_to_unk_without_failing(scheme: str) -> None:
    tok = build_word_tokenizer(CORPUS, scheme, vocab_size=80)  # type: ignore[arg-type]
    vocab_size = tok.get_vocab_size()
    for ids in encode_batch(tok, PROBES):
        assert ids and all(0 < i < vocab_size for i in ids)  # never padding, always in range
    unseen = encode_batch(tok, ["€€€ 中文"])[0]
    assert set(unseen) == {UNK_ID}


def test_word_level_unknown_words_are_unk_and_known_words_are_not() -> None:
    tok = build_word_tokenizer(CORPUS, "word")
    ids = encode_batch(tok, ["good zyzzyva movie"])[0]
    assert len(ids) == 3
    assert ids[1] == UNK_ID
    assert UNK_ID not in (ids[0], ids[2])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_empty_text_encodes_to_a_single_unk(scheme: str) -> None:
    tok = build_word_tokenizer(CORPUS, scheme, vocab_size=80)  # type: ignore[arg-type]
    assert encode_batch(tok, ["", " \t\n "]) == [[UNK_ID], [UNK_ID]]


def test_lowercase_setting() -> None:
    lower = build_word_tokenizer(CORPUS, "word", lowercase=True)
    cased = build_word_tokenizer(CORPUS, "word", lowercase=False)
    assert encode_batch(lower, ["GOOD Movie"]) == encode_batch(lower, ["good movie"])
    assert encode_batch(cased, ["GOOD Movie"]) == [[UNK_ID, UNK_ID]]
    assert UNK_ID not in encode_batch(cased, ["good movie"])[0]


def test_max_length_truncates() -> None:
    tok = build_word_tokenizer(CORPUS, "word")
    full = encode_batch(tok, ["the plot was dull and the film was boring"])[0]
    assert encode_batch(tok, ["the plot was dull and the film was boring"], max_length=3) == [full[:3]]


def test_min_frequency_drops_rare_words() -> None:
    tok = build_word_tokenizer(CORPUS, "word", min_frequency=2)
    assert encode_batch(tok, ["zyzzyva"]) == [[UNK_ID]]
    assert encode_batch(tok, ["great"])[0] != [UNK_ID]  # twice in the corpus
    assert encode_batch(tok, ["story"]) == [[UNK_ID]]  # once


def test_unknown_scheme_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer scheme 'sentencepiece'"):
        build_word_tokenizer(CORPUS, "sentencepiece")  # type: ignore[arg-type]


def test_load_rejects_a_tokenizer_without_the_reserved_ids(tmp_path: Path) -> None:
    bad = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "[PAD]": 1, "x": 2}, unk_token="[UNK]"))
    bad.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(RuntimeError, match=r"\[PAD\] to 0 and \[UNK\] to 1"):
        load_tokenizer(tmp_path / "tokenizer.json")


# --------------------------------------------------------------------------- character level


def test_char_tokenizer_round_trip_keeps_every_character(tmp_path: Path) -> None:
    corpus = "First Citizen:\nBefore we proceed any further, hear me speak.\n\tAll: Speak, speak.\r\n"
    tok = build_char_tokenizer(corpus)
    assert tok.token_to_id(PAD) == PAD_ID and tok.token_to_id(UNK) == UNK_ID
    assert tok.get_vocab_size() == len(set(corpus)) + 2
    save_tokenizer(tok, tmp_path / "tokenizer.json")
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    text = "Speak, Citizen:\n\thear me.\r\n"
    ids = encode_batch(loaded, [text])[0]
    assert ids == encode_batch(tok, [text])[0]
    assert len(ids) == len(text)  # one id per character, whitespace included
    assert UNK_ID not in ids
    assert loaded.decode(ids) == text


def test_char_tokenizer_unknown_characters_and_empty_text() -> None:
    tok = build_char_tokenizer("abc ")
    assert encode_batch(tok, ["a Z c😀", ""]) == [
        [tok.token_to_id("a"), tok.token_to_id(" "), UNK_ID, tok.token_to_id(" "), tok.token_to_id("c"), UNK_ID],
        [UNK_ID],
    ]


def test_char_tokenizer_min_frequency() -> None:
    tok = build_char_tokenizer("aaab", min_frequency=2)
    assert encode_batch(tok, ["ab"]) == [[tok.token_to_id("a"), UNK_ID]]


def test_too_small_vocab_size_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="vocab_size must be more than 2"):
        build_word_tokenizer(CORPUS, "word", vocab_size=1)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_the_same_texts_always_give_the_same_tokenizer(scheme: str) -> None:
    """Reruns with one seed, and every DDP rank (each trains its own tokenizer), must agree on every id. The
    subword trainers of `tokenizers` break ties between merges in hash-map order unless guarded against."""
    first = json.loads(build_word_tokenizer(CORPUS, scheme, vocab_size=80).to_str())  # type: ignore[arg-type]
    for _ in range(12):
        assert json.loads(build_word_tokenizer(CORPUS, scheme, vocab_size=80).to_str()) == first  # type: ignore[arg-type]


def test_the_same_texts_give_the_same_tokenizer_in_another_process() -> None:
    script = (
        "import json; from model.tokenization import build_word_tokenizer as b; "
        f"corpus = {CORPUS!r}; "
        "print(json.dumps({s: json.loads(b(corpus, s, vocab_size=80).to_str()) for s in ('word', 'wordpiece', 'bpe')}))"
    )
    here = {s: json.loads(build_word_tokenizer(CORPUS, s, vocab_size=80).to_str()) for s in SCHEMES}  # type: ignore[arg-type]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here


@pytest.mark.parametrize("scheme", ["wordpiece", "bpe"])
def test_subword_tokenizers_decode_and_keep_only_two_special_tokens(scheme: str) -> None:
    tok = build_word_tokenizer(CORPUS, scheme, vocab_size=80)  # type: ignore[arg-type]
    assert [t["content"] for t in json.loads(tok.to_str())["added_tokens"]] == [PAD, UNK]
    ids = encode_batch(tok, ["a good movie really"])[0]
    assert UNK_ID not in ids
    assert tok.decode(ids) == "a good movie really"


def test_pieces_keep_training_words_whole_and_spell_unseen_ones() -> None:
    plain = build_word_tokenizer(CORPUS, "word")
    tok = build_word_tokenizer(CORPUS, "word", pieces=60)
    assert encode_batch(tok, CORPUS) == [[tok.token_to_id(t) for t in plain.encode(s).tokens] for s in CORPUS]
    assert all(len(ids) == len(s.split()) for ids, s in zip(encode_batch(tok, CORPUS), CORPUS, strict=True))
    spelled = tok.encode("boringly").tokens
    assert len(spelled) > 1 and UNK not in spelled and all(t.startswith("##") for t in spelled[1:])
    assert encode_batch(plain, ["boringly"]) == [[UNK_ID]]
    assert encode_batch(tok, ["中文"]) == [[UNK_ID]]  # characters never seen still have no piece
    again = build_word_tokenizer(CORPUS, "word", pieces=60)
    assert again.to_str() == tok.to_str()  # the same data gives the same vocabulary and ids


def test_pieces_are_for_the_word_tokenizer_only() -> None:
    with pytest.raises(ValueError, match="word tokenizer"):
        build_word_tokenizer(CORPUS, "bpe", pieces=60)
