"""The translator's readers: every format, every bad-row case, and the built-in Multi30k from the data mirror."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from model.data import DataError
from model.translator.data import SplitFiles, load_parallel, read_aligned, read_jsonl, read_pairs, read_tsv

SHARED_DATA = Path(os.environ.get("RNN_DATA_DIR") or Path(__file__).resolve().parents[3] / "shared" / "data")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_aligned_files_pair_line_by_line(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", "\ufeffein Hund\r\nzwei Katzen\n")
    tgt = write(tmp_path / "a.en", "a dog\ntwo cats\n")
    pairs = read_aligned(src, tgt)
    assert pairs.source == ["ein Hund", "zwei Katzen"] and pairs.target == ["a dog", "two cats"]


def test_line_counts_that_differ_name_both_files_and_counts(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", "eins\nzwei\ndrei\n")
    tgt = write(tmp_path / "a.en", "one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.de has 3 lines and .*a\.en has 2"):
        read_aligned(src, tgt)
    with pytest.raises(DataError, match="3 lines"):  # skipping bad rows cannot repair a broken pairing
        read_aligned(src, tgt, skip_bad_rows=True)


def test_an_empty_side_stops_the_run_naming_the_line_or_is_skipped_and_counted(tmp_path: Path) -> None:
    src = write(tmp_path / "a.de", "eins\n\ndrei\n")
    tgt = write(tmp_path / "a.en", "one\ntwo\n  \n")
    with pytest.raises(DataError, match=r"a\.de:2 .*empty source"):
        read_aligned(src, tgt)
    pairs = read_aligned(src, tgt, skip_bad_rows=True)
    assert pairs.source == ["eins"] and pairs.skipped == {"empty source": 1, "empty target": 1}


def test_tsv_rows_need_exactly_one_tab(tmp_path: Path) -> None:
    path = write(tmp_path / "p.tsv", "ein Hund\ta dog\nkaputt\nzu\tviele\tspalten\nzwei\ttwo\n")
    with pytest.raises(DataError, match=r"p\.tsv:2: expected source<TAB>target, found 1 column"):
        read_tsv(path)
    pairs = read_pairs(path, skip_bad_rows=True)
    assert pairs.source == ["ein Hund", "zwei"]
    assert sum(pairs.skipped.values()) == 2


def test_json_lines_need_two_strings(tmp_path: Path) -> None:
    rows = [{"source": "ein Hund", "target": "a dog", "id": 7}, {"source": "x"}, "nope", {"source": 1, "target": "y"}]
    path = write(tmp_path / "p.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    with pytest.raises(DataError, match=r"p\.jsonl:2: expected an object"):
        read_jsonl(path)
    pairs = read_pairs(path, skip_bad_rows=True)
    assert pairs.source == ["ein Hund"] and pairs.target == ["a dog"]
    assert sum(pairs.skipped.values()) == 4 and any("not JSON" in k for k in pairs.skipped)


def test_unknown_extensions_and_half_given_sides_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"\.tsv .*\.jsonl .*--source and --target"):
        read_pairs(write(tmp_path / "p.txt", "a\tb\n"))
    with pytest.raises(DataError, match="target file is missing"):
        load_parallel(SplitFiles(source=write(tmp_path / "a.de", "a\n")))
    with pytest.raises(DataError, match="no such file"):
        load_parallel(SplitFiles(pairs=tmp_path / "missing.tsv"))


def test_own_files_without_dev_hold_out_the_last_pairs(tmp_path: Path) -> None:
    path = write(tmp_path / "p.tsv", "".join(f"q{i}\tp{i}\n" for i in range(40)))
    corpus = load_parallel(SplitFiles(pairs=path), dev_fraction=0.1)
    assert len(corpus.train) == 36 and corpus.dev.source == [f"q{i}" for i in range(36, 40)]
    assert corpus.test is None and str(path) in corpus.sha256


def test_multi30k_reads_from_the_shared_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (SHARED_DATA / "multi30k" / "train.de").is_file():
        pytest.skip(f"no shared data at {SHARED_DATA}")
    monkeypatch.setenv("RNN_DATA_DIR", str(SHARED_DATA))
    corpus = load_parallel()
    assert (len(corpus.train), len(corpus.dev), len(corpus.test or [])) == (29_000, 1_014, 1_000)
    assert corpus.train.source[0].startswith("Zwei junge weiße Männer")
    assert corpus.train.target[0] == "Two young, White males are outside near many bushes."
    assert len(corpus.sha256) == 6 and corpus.skipped == {}
