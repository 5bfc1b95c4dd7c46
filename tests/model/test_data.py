"""model/data.py and model/sentiment/data.py: the readers, bad rows, labels, splits and the resolution of built-in
data sets."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import urllib.error
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from model import data
from model.data import DataError, RemoteFile, resolve
from model.sentiment.data import LabelledData, label_order, load_sst2, load_user_data, read_labelled, stratified_split
from tests.helpers import sentences, write_bytes, write_csv

# --------------------------------------------------------------------------- readers


def test_csv_quoted_fields_keep_commas_quotes_and_newlines(tmp_path: Path) -> None:
    path = write_bytes(
        tmp_path / "q.csv",
        'text,label\n"hello, world",pos\n"line one\nline two, still one text",neg\n"she said ""no""",neg\n',
    )
    got = read_labelled(path)
    assert got.texts == ["hello, world", "line one\nline two, still one text", 'she said "no"']
    assert got.labels == ["pos", "neg", "neg"]
    assert got.skipped == 0


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_bom_and_crlf_read_like_plain_lf(tmp_path: Path, suffix: str) -> None:
    if suffix == ".jsonl":
        body = '{"text": "a fine film", "label": "pos"}\n{"text": "a dull film", "label": "neg"}\n'
    else:
        sep = "," if suffix == ".csv" else "\t"
        body = f"text{sep}label\na fine film{sep}pos\na dull film{sep}neg\n"
    plain = read_labelled(write_bytes(tmp_path / f"lf{suffix}", body))
    crlf = read_labelled(write_bytes(tmp_path / f"crlf{suffix}", body, newline="\r\n", bom=True))
    assert plain.texts == crlf.texts == ["a fine film", "a dull film"]
    assert plain.labels == crlf.labels == ["pos", "neg"]
    assert not any("\r" in t or "\ufeff" in t for t in crlf.texts + crlf.labels)


def test_tsv_sst2_train_layout_with_crlf(tmp_path: Path) -> None:
    body = 'label\tsentence\n1\tit \'s a "charming" and often affecting journey . \n0\tunflinchingly bleak\n'
    got = read_labelled(write_bytes(tmp_path / "train.tsv", body, newline="\r\n"), "sentence", "label")
    # tsv fields are never quoted: quotes are part of the sentence
    assert got.texts == ['it \'s a "charming" and often affecting journey .', "unflinchingly bleak"]
    assert got.labels == ["1", "0"]


def test_tsv_label_content_layout_found_without_column_names(tmp_path: Path) -> None:
    body = "label\tcontent\n0\tno movement , no yuks\n1\ta gorgeous , witty film\n"
    got = read_labelled(write_bytes(tmp_path / "dev.tsv", body, newline="\r\n"))
    assert got.texts == ["no movement , no yuks", "a gorgeous , witty film"]
    assert got.labels == ["0", "1"]


def test_jsonl_values_become_strings_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    lines = [
        {"review": "loved it", "sentiment": 5, "id": 1},
        {},
        {"review": "hated it", "sentiment": 1, "id": 2},
    ]
    body = "\n".join("" if not obj else json.dumps(obj) for obj in lines) + "\n\n"
    got = read_labelled(write_bytes(tmp_path / "r.jsonl", body))
    assert got.texts == ["loved it", "hated it"]
    assert got.labels == ["5", "1"]


def test_explicit_column_names_override_the_candidates(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "c.csv", [("ignored", "first", "A"), ("ignored", "second", "B")], ("text", "body", "y"))
    got = read_labelled(path, text_column="body", label_column="y")
    assert got.texts == ["first", "second"]
    assert got.labels == ["A", "B"]


# --------------------------------------------------------------------------- bad input


BAD_ROWS = {
    "empty text": ("text,label\ngood film,pos\n   ,neg\nok,pos\n", 3),
    "empty label": ("text,label\ngood film,pos\nbad film,\nok,pos\n", 3),
    "expected 2 columns": ("text,label\ngood film,pos\nok,pos\nbad film,neg,extra\n", 4),
}


@pytest.mark.parametrize("problem", sorted(BAD_ROWS))
def test_bad_csv_row_names_file_and_line(tmp_path: Path, problem: str) -> None:
    body, line = BAD_ROWS[problem]
    path = write_bytes(tmp_path / "bad.csv", body)
    with pytest.raises(DataError) as err:
        read_labelled(path)
    assert f"{path}:{line}:" in str(err.value)
    assert problem in str(err.value)
    assert "--skip-bad-rows" in str(err.value)


def test_bad_row_line_numbers_count_physical_lines_after_a_multiline_field(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "bad.csv", 'text,label\n"two\nlines",pos\nno label,\n')
    with pytest.raises(DataError, match=rf"{path.name}:4: bad row \(empty label\)"):
        read_labelled(path)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("not json at all", "not a JSON object"),
        ('["a", "list"]', "not a JSON object"),
        ('{"text": null, "label": 1}', "empty text"),
    ],
)
def test_bad_jsonl_row_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    body = '{"text": "fine", "label": 1}\n' + line + "\n"
    path = write_bytes(tmp_path / "bad.jsonl", body)
    with pytest.raises(DataError, match=rf"bad\.jsonl:2: bad row \({problem}\)"):
        read_labelled(path)


def test_skip_bad_rows_skips_and_counts(tmp_path: Path) -> None:
    body = "text,label\ngood film,pos\n,neg\nbad film,\nfine,pos,x\ndull film,neg\n"
    got = read_labelled(write_bytes(tmp_path / "bad.csv", body), skip_bad_rows=True)
    assert got.texts == ["good film", "dull film"]
    assert got.labels == ["pos", "neg"]
    assert got.skipped == 3


def test_skip_bad_rows_with_nothing_left_is_an_error(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "bad.csv", "text,label\n,neg\nbad film,\n")
    with pytest.raises(DataError, match="no usable rows.*after skipping bad rows"):
        read_labelled(path, skip_bad_rows=True)


@pytest.mark.parametrize("body", ["", "text,label\n", "text,label\r\n\r\n"], ids=["empty", "header", "blank-lines"])
def test_empty_file_is_a_clear_error(tmp_path: Path, body: str) -> None:
    path = write_bytes(tmp_path / "empty.csv", body)
    with pytest.raises(DataError, match=r"empty\.csv: no usable rows"):
        read_labelled(path)


def test_empty_jsonl_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"empty\.jsonl: no usable rows"):
        read_labelled(write_bytes(tmp_path / "empty.jsonl", "\n \n"))


def test_missing_column_lists_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cols.csv", [("x", "pos")], ("words", "label"))
    with pytest.raises(DataError) as err:
        read_labelled(path)
    message = str(err.value)
    assert str(path) in message and "no text column" in message and "'words'" in message
    assert "--text-column" in message


def test_unknown_explicit_column_is_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cols.csv", [("x", "pos")])
    with pytest.raises(DataError, match=r"no label column 'stars'; columns are \['text', 'label'\]"):
        read_labelled(path, label_column="stars")


def test_missing_file_and_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_labelled(tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"unsupported file type '\.xlsx'"):
        read_labelled(write_bytes(tmp_path / "book.xlsx", "text,label\n"))


def test_non_utf8_file_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\u00e9 cr\u00e8me,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv.*UTF-8"):
        read_labelled(path)


def test_oversized_csv_field_is_a_data_error_naming_file_and_line(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "huge.csv", f'text,label\nfine,pos\n"{"x" * 200_000}",neg\n')
    with pytest.raises(DataError, match=r"huge\.csv:3"):
        read_labelled(path)


def test_single_class_cannot_be_trained(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "one.csv", [("good", "pos"), ("great", "pos"), ("fine", "pos")])
    with pytest.raises(DataError, match=r"one\.csv: only one class \('pos'\)"):
        load_user_data(path)


def test_dev_label_unseen_in_training_is_an_error(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", sentences(8, ["neg", "pos"]))
    dev = write_csv(tmp_path / "dev.csv", [("so so", "meh")])
    with pytest.raises(DataError, match=r"dev\.csv: label\(s\) \['meh'\] do not occur"):
        load_user_data(train, dev)


# --------------------------------------------------------------------------- labels


def test_labels_are_arbitrary_strings(tmp_path: Path) -> None:
    labels = ["très bien", "👎", "a, b", "0.5"]
    path = write_csv(tmp_path / "odd.csv", [(f"text {i}", label) for i, label in enumerate(labels * 2)])
    got = load_user_data(path, dev_fraction=0.5)
    assert got.label_names == sorted(labels)
    assert Counter(got.train.labels) == Counter(labels)
    assert Counter(got.dev.labels) == Counter(labels)


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["3", "1", "10", "2", "9"], ["1", "2", "3", "9", "10"]),
        (["1", "-1", "0"], ["-1", "0", "1"]),
        (
            ["joy", "anger", "sadness", "fear", "love", "surprise"],
            ["anger", "fear", "joy", "love", "sadness", "surprise"],
        ),
        (["10", "9", "nine"], ["10", "9", "nine"]),
        (["1", "01"], ["01", "1"]),
    ],
)
def test_label_order_is_deterministic(labels: list[str], expected: list[str]) -> None:
    rng = random.Random(0)
    for _ in range(5):
        shuffled = labels * 2
        rng.shuffle(shuffled)
        assert label_order(shuffled) == expected


@pytest.mark.parametrize(
    ("labels", "names"),
    [
        (["5", "4", "3", "2", "1"], ["1", "2", "3", "4", "5"]),
        (
            ["sadness", "joy", "love", "anger", "fear", "surprise"],
            ["anger", "fear", "joy", "love", "sadness", "surprise"],
        ),
    ],
)
def test_multi_class_data_keeps_every_class(tmp_path: Path, labels: list[str], names: list[str]) -> None:
    path = write_csv(tmp_path / "multi.csv", sentences(10 * len(labels), labels))
    got = load_user_data(path, dev_fraction=0.2, seed=3)
    assert got.label_names == names
    assert set(got.train.labels) == set(got.dev.labels) == set(labels)
    assert len(got.train) + len(got.dev) == 10 * len(labels)
    assert got.name == "multi"
    assert got.sha256 == {str(path): hashlib.sha256(path.read_bytes()).hexdigest()}


# --------------------------------------------------------------------------- splits


def test_a_dev_split_carved_from_train_can_go_back_into_it(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", sentences(20, ["a", "b"]))
    carved = load_user_data(path, dev_fraction=0.2)
    assert carved.dev_from_train
    whole = carved.dev_in_train()
    assert whole.train.texts == carved.train.texts + carved.dev.texts
    assert whole.train.labels == carved.train.labels + carved.dev.labels
    assert whole.dev == carved.dev and whole.label_names == carved.label_names and whole.sha256 == carved.sha256
    assert sorted(whole.train.texts) == sorted(text for text, _ in sentences(20, ["a", "b"]))
    own = load_user_data(path, dev=write_csv(tmp_path / "dev.csv", sentences(4, ["a", "b"])))
    assert not own.dev_from_train


def _labelled(counts: dict[str, int]) -> LabelledData:
    texts, labels = [], []
    for label, n in counts.items():
        for i in range(n):
            texts.append(f"{label} text {i}")
            labels.append(label)
    return LabelledData(texts, labels, "mem")


def test_stratified_split_is_seeded_disjoint_and_keeps_every_class() -> None:
    whole = _labelled({"a": 40, "b": 20, "c": 2, "d": 1})
    train, dev = stratified_split(whole, 0.25, seed=7)
    again_train, again_dev = stratified_split(whole, 0.25, seed=7)
    other_train, other_dev = stratified_split(whole, 0.25, seed=8)
    assert (train.texts, dev.texts) == (again_train.texts, again_dev.texts)
    assert dev.texts != other_dev.texts
    assert Counter(train.texts + dev.texts) == Counter(whole.texts)
    assert not set(train.texts) & set(dev.texts)
    assert Counter(dev.labels) == {"a": 10, "b": 5, "c": 1}
    # every class stays in training; a class with a single row cannot also be in dev
    assert set(train.labels) == {"a", "b", "c", "d"}
    assert train.source == "mem[train]" and dev.source == "mem[dev]"


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_stratified_split_rejects_fractions_outside_0_1(fraction: float) -> None:
    with pytest.raises(DataError, match="dev fraction"):
        stratified_split(_labelled({"a": 4, "b": 4}), fraction, seed=0)


def test_user_data_split_follows_the_seed(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "s.csv", sentences(40, ["neg", "pos"]))
    first = load_user_data(path, dev_fraction=0.25, seed=1)
    second = load_user_data(path, dev_fraction=0.25, seed=1)
    assert first.dev.texts == second.dev.texts
    assert first.test is None
    assert Counter(first.dev.labels) == {"neg": 5, "pos": 5}


# --------------------------------------------------------------------------- built-in data sets


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    """A built-in data set 'toy' whose one file lives in a mirror under tmp_path; its URL is unreachable."""
    content = b"label\tsentence\r\n1\ta fine film\r\n0\ta dull film\r\n"
    remote = RemoteFile("toy/train.tsv", _sha(content), "https://example.invalid/toy/train.tsv")
    monkeypatch.setitem(data.BUILTIN, "toy", {"train": remote})
    mirror = tmp_path / "mirror"
    write_bytes(mirror / "toy" / "train.tsv", content.decode())
    return {"content": content, "remote": remote, "mirror": mirror}


def test_resolve_uses_the_mirror_from_the_environment(monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any]) -> None:
    monkeypatch.setenv("RNN_DATA_DIR", str(toy["mirror"]))
    assert resolve("toy", "train") == toy["mirror"] / "toy" / "train.tsv"


def test_resolve_data_dir_argument_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    monkeypatch.setenv("RNN_DATA_DIR", str(tmp_path / "elsewhere"))
    assert resolve("toy", "train", data_dir=toy["mirror"]) == toy["mirror"] / "toy" / "train.tsv"


def test_resolve_refuses_a_corrupt_mirror_file(monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any]) -> None:
    path = toy["mirror"] / "toy" / "train.tsv"
    path.write_bytes(toy["content"].replace(b"fine", b"fina"))
    monkeypatch.setenv("RNN_DATA_DIR", str(toy["mirror"]))
    with pytest.raises(DataError) as err:
        resolve("toy", "train")
    assert f"checksum mismatch for {path}" in str(err.value)
    assert toy["remote"].sha256 in str(err.value)


def _offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def refuse(url: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(url)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    return calls


def test_resolve_without_mirror_or_network_names_the_file_and_the_variable(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    calls = _offline(monkeypatch)
    monkeypatch.setenv("RNN_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        resolve("toy", "train")
    message = str(err.value)
    assert "missing data file toy/train.tsv" in message
    assert "RNN_DATA_DIR" in message and "no network" in message
    assert calls == [toy["remote"].url]
    # the failed download leaves no partial file in the cache
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


def test_resolve_names_the_mirror_path_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    _offline(monkeypatch)
    monkeypatch.setenv("RNN_DATA_DIR", str(tmp_path / "empty-mirror"))
    with pytest.raises(DataError, match=rf"{tmp_path / 'empty-mirror' / 'toy' / 'train.tsv'} does not exist"):
        resolve("toy", "train")


def test_resolve_downloads_verifies_and_caches(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    source = toy["mirror"] / "toy" / "train.tsv"
    monkeypatch.setitem(
        data.BUILTIN, "toy", {"train": RemoteFile("toy/train.tsv", toy["remote"].sha256, source.as_uri())}
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("RNN_CACHE_DIR", str(cache))
    got = resolve("toy", "train")
    assert got == cache / "toy" / "train.tsv"
    assert got.read_bytes() == toy["content"]
    assert sorted(p.name for p in (cache / "toy").iterdir()) == ["train.tsv"]  # no .part left behind
    # the second time the cache answers: no download
    calls = _offline(monkeypatch)
    assert resolve("toy", "train") == got
    assert calls == []


def test_resolve_unpacks_a_gzipped_download_and_verifies_the_unpacked_file(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    served = tmp_path / "served" / "train.tsv.gz"
    served.parent.mkdir(parents=True)
    served.write_bytes(gzip.compress(toy["content"]))
    remote = RemoteFile("toy/train.tsv", toy["remote"].sha256, served.as_uri(), gzipped=True)
    monkeypatch.setitem(data.BUILTIN, "toy", {"train": remote})
    monkeypatch.setenv("RNN_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve("toy", "train").read_bytes() == toy["content"]


def test_resolve_rejects_a_download_with_the_wrong_checksum(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    source = write_bytes(tmp_path / "served" / "train.tsv", "label\tsentence\n1\ttampered\n")
    monkeypatch.setitem(
        data.BUILTIN, "toy", {"train": RemoteFile("toy/train.tsv", toy["remote"].sha256, source.as_uri())}
    )
    cache = tmp_path / "cache"
    monkeypatch.setenv("RNN_CACHE_DIR", str(cache))
    with pytest.raises(DataError, match=r"checksum mismatch for .*train\.tsv"):
        resolve("toy", "train")
    assert not [p for p in cache.rglob("*") if p.is_file()]


def test_resolve_refuses_a_corrupt_cached_file(
    monkeypatch: pytest.MonkeyPatch, toy: dict[str, Any], tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    cached = write_bytes(cache / "toy" / "train.tsv", "label\tsentence\n1\tstale\n")
    monkeypatch.setenv("RNN_CACHE_DIR", str(cache))
    with pytest.raises(DataError, match=f"checksum mismatch for {cached}"):
        resolve("toy", "train")


def test_resolve_unknown_data_set_or_split() -> None:
    with pytest.raises(DataError, match="unknown data set 'imdb'.*sst2"):
        resolve("imdb", "train")
    with pytest.raises(DataError, match="has no split 'validation'; splits: train, dev, test"):
        resolve("sst2", "validation")


def test_load_sst2_reads_a_mirror_and_names_the_labels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bodies = {
        "train": "label\tsentence\n1\ta gorgeous film\n0\ta dreary mess\n1\twitty\n",
        "dev": "label\tcontent\n0\tno yuks\n1\tcharming\n",
        "test": "label\tcontent\n1\tjoyous\n0\tlifeless\n",
    }
    files = {}
    for split, body in bodies.items():
        path = write_bytes(tmp_path / "mirror" / "sst2" / f"{split}.tsv", body, newline="\r\n")
        files[split] = RemoteFile(f"sst2/{split}.tsv", _sha(path.read_bytes()), f"https://example.invalid/{split}")
    monkeypatch.setitem(data.BUILTIN, "sst2", files)
    got = load_sst2(tmp_path / "mirror")
    assert got.label_names == ["negative", "positive"]
    assert got.train.texts == ["a gorgeous film", "a dreary mess", "witty"]
    assert got.train.labels == ["positive", "negative", "positive"]
    assert got.dev.labels == ["negative", "positive"]
    assert got.test is not None and got.test.texts == ["joyous", "lifeless"]
    assert got.sha256 == {f"sst2/{split}.tsv": files[split].sha256 for split in files}
    assert not got.dev_from_train  # its own dev split: nothing to refit on
