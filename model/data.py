"""Data: the built-in data sets (verified by sha256), readers for your own files, splits and batching.

Built-in data sets resolve in this order: an explicit data directory (`--data-dir`) or `RNN_DATA_DIR` (a mirror
laid out like `<dir>/sst2/train.tsv`), then the user cache (`RNN_CACHE_DIR`, default
`~/.cache/rnn-nlp-service`), then a download from the public URL into the cache. Every file is checked
against its sha256 before use.

Your own labelled data: .csv, .tsv or .jsonl with a text and a label column (UTF-8, BOM or not, CRLF or LF).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import http.client
import json
import logging
import os
import random
import tempfile
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)
DATA_DIR_ENV = "RNN_DATA_DIR"
CACHE_DIR_ENV = "RNN_CACHE_DIR"
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "question")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "class", "category", "sentiment")


class DataError(Exception):
    """A problem with the user's data or data set: the message says what and where."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the data set directory
    sha256: str
    url: str


_SST2_URL = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/master/SST-2/{}"
_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
_UD_EWT_URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/en_ewt-ud-{}.conllu"

BUILTIN: dict[str, dict[str, RemoteFile]] = {
    "sst2": {
        "train": RemoteFile(
            "sst2/train.tsv",
            "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
            _SST2_URL.format("train.tsv"),
        ),
        "dev": RemoteFile(
            "sst2/dev.tsv",
            "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
            _SST2_URL.format("dev.tsv"),
        ),
        "test": RemoteFile(
            "sst2/test.tsv",
            "fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c",
            _SST2_URL.format("test.tsv"),
        ),
    },
    "tinyshakespeare": {
        "all": RemoteFile(
            "tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            _SHAKESPEARE_URL,
        ),
    },
    # Universal Dependencies English Web Treebank r2.16 (CoNLL-U): read by model.conll for the tagger
    "ud_english_ewt": {
        "train": RemoteFile(
            "ud_english_ewt/train.conllu",
            "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
            _UD_EWT_URL.format("train"),
        ),
        "dev": RemoteFile(
            "ud_english_ewt/dev.conllu",
            "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
            _UD_EWT_URL.format("dev"),
        ),
        "test": RemoteFile(
            "ud_english_ewt/test.conllu",
            "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
            _UD_EWT_URL.format("test"),
        ),
    },
}
SST2_LABEL_NAMES = {"0": "negative", "1": "positive"}


# --------------------------------------------------------------------------- built-in data sets


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_dir() -> Path:
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path.home() / ".cache" / "rnn-nlp-service"


def _verified(path: Path, remote: RemoteFile) -> Path:
    actual = sha256_file(path)
    if actual != remote.sha256:
        raise DataError(
            f"checksum mismatch for {path}: sha256 {actual}, expected {remote.sha256}; "
            "the file is corrupt or not the published version, refusing to use it"
        )
    return path


def _download(remote: RemoteFile, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=30) as resp:
            while chunk := resp.read(1 << 20):
                out.write(chunk)
        _verified(tmp, remote)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def resolve(dataset: str, split: str, data_dir: str | Path | None = None) -> Path:
    """The local, verified path of one file of a built-in data set, downloading it if need be."""
    if dataset not in BUILTIN:
        raise DataError(f"unknown data set {dataset!r}; built-in data sets: {', '.join(sorted(BUILTIN))}")
    files = BUILTIN[dataset]
    if split not in files:
        raise DataError(f"data set {dataset!r} has no split {split!r}; splits: {', '.join(files)}")
    remote = files[split]
    mirror = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV)
    if mirror:
        path = Path(mirror) / remote.path
        if path.is_file():
            return _verified(path, remote)
    cached = cache_dir() / remote.path
    if cached.is_file():
        return _verified(cached, remote)
    try:
        _download(remote, cached)
    except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as exc:
        where = f"{Path(mirror) / remote.path} does not exist, and " if mirror else ""
        raise DataError(
            f"missing data file {remote.path}: {where}downloading {remote.url} failed ({exc}). "
            f"Set {DATA_DIR_ENV} (or --data-dir) to a directory holding {remote.path}."
        ) from exc
    return cached


# --------------------------------------------------------------------------- labelled files


@dataclass
class LabelledData:
    texts: list[str]
    labels: list[str]
    source: str
    skipped: int = 0

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class SentimentData:
    train: LabelledData
    dev: LabelledData
    test: LabelledData | None
    label_names: list[str]
    name: str
    sha256: dict[str, str] = field(default_factory=dict)
    dev_from_train: bool = False  # dev is a held-out part of the training file (not a file of its own)

    def dev_in_train(self) -> SentimentData:
        """The same data with dev added to train: what a refit after choosing on dev trains on."""
        train = LabelledData(
            self.train.texts + self.dev.texts, self.train.labels + self.dev.labels, self.train.source + "+dev"
        )
        return dataclasses.replace(self, train=train)


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str, src: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{src}: no {what} column {wanted!r}; columns are {list(columns)}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(
        f"{src}: no {what} column; looked for {list(candidates)} in {list(columns)} (name it with --{what}-column)"
    )


_Row = tuple[int, dict[str, str] | None, list[str]]


def _rows_delimited(path: Path, delimiter: str) -> Iterator[_Row]:
    """Yield (line, row-dict or None if malformed, header) for a csv/tsv file."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        # csv fields may be quoted (commas, newlines); tsv is read verbatim, as GLUE's files need
        if delimiter == ",":
            reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL)
        else:
            reader = csv.reader(fh, delimiter=delimiter, quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None:
            return
        header = [h.strip() for h in header]
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    yield reader.line_num, None, header
                else:
                    yield reader.line_num, dict(zip(header, row, strict=True)), header
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
            raise DataError(f"{path}:{reader.line_num}: cannot parse the row: {exc}") from exc


def _utf8_only(rows: Iterator[_Row], path: Path) -> Iterator[_Row]:
    """Turn a decoding failure (no line number: text is decoded in chunks) into a DataError naming the file."""
    try:
        yield from rows
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from exc


def _rows_jsonl(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8-sig") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                yield n, None, []
                continue
            if not isinstance(obj, dict):
                yield n, None, []
                continue
            row = {str(k): "" if v is None else str(v) for k, v in obj.items()}
            yield n, row, list(row)


def _row_problem(row: dict[str, str] | None, header: list[str], columns: tuple[str, str] | None) -> str | None:
    if row is None:
        return f"expected {len(header)} columns" if header else "not a JSON object"
    assert columns is not None
    missing = [c for c in columns if c not in row]
    if missing:
        return f"missing {missing[0]!r}"
    if not row[columns[0]].strip():
        return "empty text"
    if not row[columns[1]].strip():
        return "empty label"
    return None


def read_labelled(
    path: str | Path,
    text_column: str | None = None,
    label_column: str | None = None,
    skip_bad_rows: bool = False,
) -> LabelledData:
    """Read a .csv/.tsv/.jsonl file of (text, label) rows. Bad rows raise with file:line, or are counted."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _rows_delimited(path, ",")
    elif suffix == ".tsv":
        rows = _rows_delimited(path, "\t")
    elif suffix in (".jsonl", ".ndjson"):
        rows = _rows_jsonl(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv or .jsonl")
    texts: list[str] = []
    labels: list[str] = []
    skipped = 0
    columns: tuple[str, str] | None = None
    for line, row, header in _utf8_only(rows, path):
        if row is not None and columns is None:
            # columns are chosen once, from the header (csv/tsv) or the first object (jsonl)
            columns = (
                _pick_column(header, text_column, TEXT_COLUMN_CANDIDATES, "text", str(path)),
                _pick_column(header, label_column, LABEL_COLUMN_CANDIDATES, "label", str(path)),
            )
        problem = _row_problem(row, header, columns)
        if problem is not None:
            if not skip_bad_rows:
                raise DataError(f"{path}:{line}: bad row ({problem}); fix it or pass --skip-bad-rows")
            skipped += 1
            continue
        assert row is not None and columns is not None
        texts.append(row[columns[0]].strip())
        labels.append(row[columns[1]].strip())
    if not texts:
        raise DataError(f"{path}: no usable rows (empty file{' after skipping bad rows' if skipped else ''})")
    return LabelledData(texts, labels, str(path), skipped)


def label_order(labels: Sequence[str]) -> list[str]:
    """Deterministic label order: numeric when every label is an integer, else alphabetical."""
    distinct = set(labels)
    try:
        # the string breaks ties ("1" and "01"), which set order would otherwise decide differently per run
        return sorted(distinct, key=lambda x: (int(x), x))
    except ValueError:
        return sorted(distinct)


def stratified_split(data: LabelledData, fraction: float, seed: int) -> tuple[LabelledData, LabelledData]:
    """Split off `fraction` of each class (at least one row of a class with two or more) as dev."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"dev fraction must be between 0 and 1, got {fraction}")
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, label in enumerate(data.labels):
        by_label[label].append(i)
    rng = random.Random(seed)
    dev_idx: list[int] = []
    for label in sorted(by_label):
        idx = by_label[label]
        rng.shuffle(idx)
        k = round(len(idx) * fraction)
        k = min(max(k, 1 if len(idx) > 1 else 0), len(idx) - 1)
        dev_idx.extend(idx[:k])
    dev_set = set(dev_idx)
    train_idx = [i for i in range(len(data)) if i not in dev_set]
    dev_idx.sort()

    def take(idx: list[int], suffix: str) -> LabelledData:
        return LabelledData([data.texts[i] for i in idx], [data.labels[i] for i in idx], data.source + suffix)

    return take(train_idx, "[train]"), take(dev_idx, "[dev]")


def check_trainable(train: LabelledData) -> None:
    counts = Counter(train.labels)
    if len(counts) < 2:
        only = next(iter(counts))
        raise DataError(f"{train.source}: only one class ({only!r}); a classifier needs at least two labels")


def load_sst2(data_dir: str | Path | None = None) -> SentimentData:
    parts: dict[str, LabelledData] = {}
    sums: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        path = resolve("sst2", split, data_dir)
        part = read_labelled(path, "sentence" if split == "train" else "content", "label")
        part.labels = [SST2_LABEL_NAMES.get(x, x) for x in part.labels]
        parts[split] = part
        sums[BUILTIN["sst2"][split].path] = BUILTIN["sst2"][split].sha256
    return SentimentData(parts["train"], parts["dev"], parts["test"], ["negative", "positive"], "sst2", sums)


def load_user_data(
    train: str | Path,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    *,
    text_column: str | None = None,
    label_column: str | None = None,
    skip_bad_rows: bool = False,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> SentimentData:
    def read(p: str | Path) -> LabelledData:
        data = read_labelled(p, text_column, label_column, skip_bad_rows)
        if data.skipped:
            log.warning("skipped %d bad row(s) in %s", data.skipped, p)
        return data

    train_data = read(train)
    check_trainable(train_data)
    sums = {str(train): sha256_file(Path(train))}
    if dev is not None:
        dev_data = read(dev)
        sums[str(dev)] = sha256_file(Path(dev))
    else:
        train_data, dev_data = stratified_split(train_data, dev_fraction, seed)
    test_data = read(test) if test is not None else None
    if test is not None:
        sums[str(test)] = sha256_file(Path(test))
    names = label_order(train_data.labels)
    for part in (dev_data, test_data):
        if part is None:
            continue
        unseen = sorted(set(part.labels) - set(names))
        if unseen:
            raise DataError(f"{part.source}: label(s) {unseen} do not occur in the training data {train_data.source}")
    return SentimentData(train_data, dev_data, test_data, names, Path(train).stem, sums, dev_from_train=dev is None)


# --------------------------------------------------------------------------- text corpora


@dataclass
class TextCorpus:
    train: str
    val: str
    name: str
    sha256: dict[str, str] = field(default_factory=dict)


def read_text(path: str | Path) -> str:
    """A UTF-8 text file with any BOM stripped; CRLF is normalised to LF."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def split_corpus(text: str, val_fraction: float, name: str, min_chars: int) -> TextCorpus:
    """First (1 - val_fraction) of the characters for training, the rest for validation (as nanoGPT splits)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction must be between 0 and 1, got {val_fraction}")
    if len(text) < min_chars:
        what = "empty" if not text.strip() else f"too short ({len(text)} characters)"
        raise DataError(f"{name}: corpus is {what}; need at least {min_chars} characters to train")
    cut = int(len(text) * (1 - val_fraction))
    return TextCorpus(text[:cut], text[cut:], name)


def load_corpus(
    train: str | Path | None = None,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    val_fraction: float = 0.1,
    min_chars: int = 1000,
) -> TextCorpus:
    """Your own text file (`train`), or a built-in corpus (default tinyshakespeare)."""
    if train is not None:
        corpus = split_corpus(read_text(train), val_fraction, str(train), min_chars)
        corpus.sha256 = {str(train): sha256_file(Path(train))}
        return corpus
    name = data or "tinyshakespeare"
    if name != "tinyshakespeare":
        raise DataError(f"{name!r} is not a text corpus; built-in for generation: tinyshakespeare")
    path = resolve(name, "all", data_dir)
    corpus = split_corpus(read_text(path), val_fraction, name, min_chars)
    corpus.sha256 = {BUILTIN[name]["all"].path: BUILTIN[name]["all"].sha256}
    return corpus
