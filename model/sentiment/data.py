"""The classifier's data: labelled files of your own (.csv, .tsv or .jsonl with a text and a label column;
UTF-8, BOM or not, CRLF or LF), SST-2 (a built-in, model/data.py), and the splits between them."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model.data import BUILTIN, DataError, resolve, sha256_file

log = logging.getLogger(__name__)
SST2_LABEL_NAMES = {"0": "negative", "1": "positive"}
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "content", "review", "question")


LABEL_COLUMN_CANDIDATES = ("label", "labels", "class", "category", "sentiment")


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
