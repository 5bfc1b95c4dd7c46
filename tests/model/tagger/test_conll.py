"""Tests for model/tagger/conll.py: the CoNLL-U, CoNLL and JSON-lines readers, bad lines, the built-in UD English EWT
treebank (read from $RNN_DATA_DIR or ../shared/data) and train/dev/test assembly."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest

from model import data
from model.data import DataError, RemoteFile
from model.tagger.conll import TaggedSentence, load_tagged_builtin, load_tagged_files, read_tagged
from tests.helpers import write_bytes

# the mirror the Makefile exports (read at collection, before the session fixture clears it), else ../shared/data
SHARED_DATA = Path(os.environ.get("RNN_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")

# a sentence with a multiword token (3-4) and an empty node (5.1), then a plain one
CONLLU = """\
# sent_id = 1
# text = I don't know
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
4.1\tit\t_\tPRON\tPRP\t_\t_\t_\t4:obj\t_

# sent_id = 2
1\tHello\thello\tINTJ\tUH\t_\t0\troot\t_\t_
2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_
"""

CONLL_2003 = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""

GOOD_CONLLU_LINE = "1\tok\tok\tADJ\tJJ\t_\t0\troot\t_\t_"


def _conllu(tmp_path: Path, body: str, name: str = "x.conllu") -> Path:
    return write_bytes(tmp_path / name, body)


# --------------------------------------------------------------------------- formats


def test_conllu_keeps_integer_ids_and_skips_ranges_empty_nodes_and_comments(tmp_path: Path) -> None:
    got = read_tagged(_conllu(tmp_path, CONLLU))
    assert got.sentences == [
        TaggedSentence(["I", "do", "n't", "know"], ["PRON", "AUX", "PART", "VERB"]),
        TaggedSentence(["Hello", "!"], ["INTJ", "PUNCT"]),
    ]
    assert got.skipped == 0 and got.path == tmp_path / "x.conllu"


@pytest.mark.parametrize("column", ["xpos", "XPOS", "5"])
def test_conllu_tag_column_by_name_or_number(tmp_path: Path, column: str) -> None:
    got = read_tagged(_conllu(tmp_path, CONLLU), tag_column=column)
    assert [s.tags for s in got.sentences] == [["PRP", "VBP", "RB", "VB"], ["UH", "."]]


def test_conllu_deprel_by_column_number(tmp_path: Path) -> None:
    got = read_tagged(_conllu(tmp_path, CONLLU), tag_column="8")
    assert got.sentences[1].tags == ["root", "punct"]


@pytest.mark.parametrize("column", ["postag", "0", "11"])
def test_conllu_unknown_tag_column_lists_the_columns(tmp_path: Path, column: str) -> None:
    with pytest.raises(DataError, match=r"tag column .*upos, xpos.*number 1-10"):
        read_tagged(_conllu(tmp_path, CONLLU), tag_column=column)


def test_conll_two_columns_tab_separated(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "ner.txt", "New York\tB-LOC\nis\tO\n\nHi\tO\n")
    got = read_tagged(path)
    assert got.sentences == [TaggedSentence(["New York", "is"], ["B-LOC", "O"]), TaggedSentence(["Hi"], ["O"])]


def test_conll_2003_four_columns_take_the_last_and_skip_docstart(tmp_path: Path) -> None:
    got = read_tagged(write_bytes(tmp_path / "eng.train", CONLL_2003))
    assert got.sentences == [
        TaggedSentence(["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"]),
        TaggedSentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]


def test_conll_column_number_picks_another_column(tmp_path: Path) -> None:
    got = read_tagged(write_bytes(tmp_path / "eng.train", CONLL_2003), tag_column="2")
    assert [s.tags for s in got.sentences] == [["NNP", "VBZ", "JJ"], ["NNP", "NNP"]]


def test_conll_column_number_beyond_the_columns_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"eng\.train:3: tag column 9, expected 2-4"):
        read_tagged(write_bytes(tmp_path / "eng.train", CONLL_2003), tag_column="9")


def test_jsonl(tmp_path: Path) -> None:
    rows = [{"tokens": ["a", "cat"], "tags": ["DET", "NOUN"]}, {"tokens": ["hi"], "tags": ["INTJ"], "id": 7}]
    path = write_bytes(tmp_path / "x.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    got = read_tagged(path)
    assert got.sentences == [TaggedSentence(["a", "cat"], ["DET", "NOUN"]), TaggedSentence(["hi"], ["INTJ"])]


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_bom_and_crlf_read_like_plain_lf(tmp_path: Path, newline: str) -> None:
    plain = read_tagged(_conllu(tmp_path, CONLLU, "plain.conllu"))
    bommed = read_tagged(write_bytes(tmp_path / "bom.conllu", CONLLU, newline=newline, bom=True))
    assert bommed.sentences == plain.sentences
    ner = read_tagged(write_bytes(tmp_path / "bom.txt", "a\tO\nb\tB-X\n", newline=newline, bom=True))
    assert ner.sentences == [TaggedSentence(["a", "b"], ["O", "B-X"])]


@pytest.mark.parametrize(("name", "body", "tags"), [("x.conll", CONLLU, ["INTJ", "PUNCT"]), ("x.txt", "a\tO\n", ["O"])])
def test_auto_sniffs_the_first_non_comment_line(tmp_path: Path, name: str, body: str, tags: list[str]) -> None:
    assert read_tagged(write_bytes(tmp_path / name, body)).sentences[-1].tags == tags


def test_explicit_format_overrides_the_extension(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "x.jsonl", CONLLU)
    assert len(read_tagged(path, fmt="conllu").sentences) == 2
    with pytest.raises(DataError, match="unknown format 'csv'"):
        read_tagged(path, fmt="csv")


def test_not_utf8_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "x.conllu"
    path.write_bytes(CONLLU.encode("utf-8") + "1\tcafé\t_\tNOUN\t_\t_\t0\troot\t_\t_\n".encode("latin-1"))
    with pytest.raises(DataError, match=rf"{path}:13: not UTF-8 text .*save the file as UTF-8"):
        read_tagged(path)


@pytest.mark.parametrize(("name", "body"), [("x.conllu", ""), ("x.conllu", "# only a comment\n\n"), ("x.jsonl", "\n")])
def test_empty_file_names_the_file(tmp_path: Path, name: str, body: str) -> None:
    path = write_bytes(tmp_path / name, body)
    with pytest.raises(DataError, match=rf"{path}: no sentences \(empty file\)"):
        read_tagged(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_tagged(tmp_path / "nope.conllu")


# --------------------------------------------------------------------------- bad lines


def _jsonl(middle: str) -> str:
    return f'{{"tokens": ["a"], "tags": ["O"]}}\n{middle}\n{{"tokens": ["d"], "tags": ["O"]}}\n'


BAD_CASES = {
    # name: (file name, body, bad line number, message fragment); each body: good sentence, bad one, good one
    "conllu columns": (
        "x.conllu",
        f"{GOOD_CONLLU_LINE}\n\n1\tbad\tbad\tNOUN\n\n{GOOD_CONLLU_LINE}\n",
        3,
        "4 tab-separated column(s), expected 10 (ID FORM",
    ),
    "conllu bad id": (
        "x.conllu",
        f"{GOOD_CONLLU_LINE}\n\n{GOOD_CONLLU_LINE}\n{GOOD_CONLLU_LINE.replace('1', 'x', 1)}\n\n{GOOD_CONLLU_LINE}\n",
        4,
        "bad ID 'x'; expected a word number (1, 2, ...), a multiword range (3-4) or an empty node (5.1)",
    ),
    "conllu empty tag": (
        "x.conllu",
        f"{GOOD_CONLLU_LINE}\n\n{GOOD_CONLLU_LINE.replace('ADJ', '_')}\n\n{GOOD_CONLLU_LINE}\n",
        3,
        "empty tag for token 'ok' in column UPOS",
    ),
    "conll columns": ("x.txt", "a\tO\n\nb\tO\nc\n\nd\tO\n", 4, "1 column, expected a token and a tag"),
    "conll extra column": (
        "x.txt",
        "a\tO\n\nb\tO\tO\n\nd\tO\n",
        3,
        "3 columns, expected 2 as on the first token line 1",
    ),
    "conll empty tag": ("x.txt", "a\tO\n\nb\t\n\nd\tO\n", 3, "empty tag for token 'b'"),
    "jsonl bad json": (
        "x.jsonl",
        _jsonl('{"tokens": ["b"],'),
        2,
        "bad JSON (",
    ),
    "jsonl lengths": (
        "x.jsonl",
        _jsonl('{"tokens": ["b", "c"], "tags": ["O"]}'),
        2,
        "2 tokens but 1 tags; expected one tag per token",
    ),
    "jsonl empty tag": (
        "x.jsonl",
        _jsonl('{"tokens": ["b", "c"], "tags": ["O", " "]}'),
        2,
        "empty tag for token 'c' (token 2)",
    ),
    "jsonl not lists": (
        "x.jsonl",
        _jsonl('{"tokens": "b c", "tags": ["O"]}'),
        2,
        'no "tokens" and "tags" lists of strings',
    ),
}


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_line_names_file_line_and_problem(tmp_path: Path, case: str) -> None:
    name, body, line, problem = BAD_CASES[case]
    path = write_bytes(tmp_path / name, body)
    with pytest.raises(DataError) as err:
        read_tagged(path)
    message = str(err.value)
    assert message.startswith(f"{path}:{line}: ")
    assert problem in message and "--skip-bad-rows" in message


@pytest.mark.parametrize("case", BAD_CASES)
def test_skip_bad_rows_drops_the_sentence_counts_and_warns(
    tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture
) -> None:
    name, body, line, _ = BAD_CASES[case]
    path = write_bytes(tmp_path / name, body)
    with caplog.at_level(logging.WARNING, logger="model.conll"):
        got = read_tagged(path, skip_bad_rows=True)
    assert got.skipped == 1
    assert len(got.sentences) == 2  # the good sentences before and after
    assert f"{path}:{line}:" in caplog.text


def test_skip_bad_rows_with_nothing_left_is_an_error(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "x.txt", "a\n\nb\n")
    with pytest.raises(DataError, match=r"no sentences after skipping 2 bad one\(s\)"):
        read_tagged(path, skip_bad_rows=True)


# --------------------------------------------------------------------------- the built-in treebank


def test_builtin_ud_english_ewt_from_the_shared_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED_DATA / "ud_english_ewt" / "train.conllu").is_file():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    monkeypatch.setenv("RNN_DATA_DIR", str(SHARED_DATA))
    corpus = load_tagged_builtin()
    assert corpus.test is not None
    assert [len(part) for part in (corpus.train, corpus.dev, corpus.test)] == [12_544, 2_001, 2_077]
    words = [sum(len(s.tokens) for s in part) for part in (corpus.train, corpus.dev, corpus.test)]
    assert words == [204_577, 25_147, 25_094]
    assert len(corpus.tags) == 17 and {"NOUN", "VERB", "PUNCT", "PROPN", "X"} <= set(corpus.tags)
    assert corpus.sha256 == {
        f"ud_english_ewt/{split}.conllu": data.BUILTIN["ud_english_ewt"][split].sha256
        for split in ("train", "dev", "test")
    }
    assert corpus.name == "ud_english_ewt" and corpus.skipped == 0


def _mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, train_sha: str | None = None) -> Path:
    """A small ud_english_ewt mirror under tmp_path, registered with its own checksums (or a wrong train one)."""
    files = {}
    for split in ("train", "dev", "test"):
        path = _conllu(tmp_path / "mirror" / "ud_english_ewt", CONLLU, f"{split}.conllu")
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        url = f"https://example.invalid/{split}.conllu"
        files[split] = RemoteFile(
            f"ud_english_ewt/{split}.conllu", train_sha if split == "train" and train_sha else sha, url
        )
    monkeypatch.setitem(data.BUILTIN, "ud_english_ewt", files)
    return tmp_path / "mirror"


def test_builtin_with_xpos_from_a_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = load_tagged_builtin(data_dir=_mirror(tmp_path, monkeypatch), tag_column="xpos")
    assert corpus.train[0].tags == ["PRP", "VBP", "RB", "VB"]


def test_builtin_checksum_mismatch_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = _mirror(tmp_path, monkeypatch, train_sha="0" * 64)
    monkeypatch.setenv("RNN_DATA_DIR", str(mirror))
    with pytest.raises(DataError) as err:
        load_tagged_builtin()
    assert f"checksum mismatch for {mirror / 'ud_english_ewt' / 'train.conllu'}" in str(err.value)
    assert "0" * 64 in str(err.value)


def test_builtin_rejects_a_data_set_that_is_not_tagged() -> None:
    with pytest.raises(DataError, match="'sst2' is not a tagged data set; built-in tagged data sets: ud_english_ewt"):
        load_tagged_builtin("sst2")


# --------------------------------------------------------------------------- your own files


def _ner_file(path: Path, n: int) -> Path:
    return write_bytes(path, "".join(f"w{i}\tB-X\nend\tO\n\n" for i in range(n)))


def test_dev_split_from_train_is_seeded_disjoint_and_at_least_one(tmp_path: Path) -> None:
    train = _ner_file(tmp_path / "mine.txt", 30)
    first = load_tagged_files(train, seed=3)
    again = load_tagged_files(train, seed=3)
    other = load_tagged_files(train, seed=4)
    assert (len(first.train), len(first.dev)) == (27, 3)
    assert first.dev == again.dev and first.dev != other.dev
    train_words = {s.tokens[0] for s in first.train}
    assert not train_words & {s.tokens[0] for s in first.dev}
    assert len(train_words) + len(first.dev) == 30
    assert len(load_tagged_files(_ner_file(tmp_path / "two.txt", 2)).dev) == 1
    assert first.name == "mine" and first.test is None and first.tags == ["B-X", "O"]


def test_explicit_dev_and_test_files_and_their_checksums(tmp_path: Path) -> None:
    paths = [_ner_file(tmp_path / f"{split}.txt", 3) for split in ("train", "dev", "test")]
    corpus = load_tagged_files(*paths)
    assert (len(corpus.train), len(corpus.dev)) == (3, 3)
    assert corpus.test is not None and len(corpus.test) == 3
    assert corpus.sha256 == {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def test_skipped_counts_add_up_across_files(tmp_path: Path) -> None:
    train = write_bytes(tmp_path / "train.txt", "a\tO\n\nb\n\nc\tO\n")
    dev = write_bytes(tmp_path / "dev.txt", "a\n\nc\tO\n")
    corpus = load_tagged_files(train, dev, skip_bad_rows=True)
    assert corpus.skipped == 2 and len(corpus.train) == 2


def test_too_little_training_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"1 sentence\(s\); need at least 2"):
        load_tagged_files(_ner_file(tmp_path / "one.txt", 1))


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_dev_fraction_outside_0_1(tmp_path: Path, fraction: float) -> None:
    with pytest.raises(DataError, match="dev fraction must be between 0 and 1"):
        load_tagged_files(_ner_file(tmp_path / "x.txt", 5), dev_fraction=fraction)


def test_dev_tag_unseen_in_training_is_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    train = _ner_file(tmp_path / "train.txt", 3)
    dev = write_bytes(tmp_path / "dev.txt", "x\tB-NEW\n")
    with caplog.at_level(logging.WARNING, logger="model.conll"):
        load_tagged_files(train, dev)
    assert "dev tag(s) ['B-NEW'] do not occur in the training data" in caplog.text
