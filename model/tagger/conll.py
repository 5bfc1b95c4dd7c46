"""Token-labelled data for the sequence tagger: readers for CoNLL-U, CoNLL (NER-style columns) and JSON lines, the
built-in UD English EWT treebank, and train/dev/test assembly.

    from model.conll import load_tagged_builtin, load_tagged_files
    corpus = load_tagged_builtin()                         # UD_English-EWT r2.16, UPOS tags
    corpus = load_tagged_files("train.conll", dev="dev.conll")

Formats (`fmt`; `auto` picks by extension, then by the first non-comment line: 10 tab-separated columns is CoNLL-U):
- `conllu`: CoNLL-U (https://universaldependencies.org/format.html). The tag is the `tag_column` (a column name such
  as `upos` or `xpos`, or a 1-based number). Multiword-token ranges (`3-4`) and empty nodes (`5.1`) are skipped:
  UD's own evaluation scores only the syntactic words with integer IDs. `_` counts as a missing tag.
- `conll`: `token<TAB>tag` or whitespace-separated columns (CoNLL-2003): the token is the first column, the tag the
  last (or the column numbered by `tag_column`); every token line has as many columns as the first; `-DOCSTART-`
  lines are skipped; `#` starts no comment, since `#` is a token in such files.
- `jsonl`: one object a line, `{"tokens": [...], "tags": [...]}`.

Sentences end at a blank line. Files are UTF-8, with or without a BOM. A malformed line raises `DataError` naming
`file:line`; with `skip_bad_rows` its whole sentence (a jsonl line) is dropped and counted instead.
"""

from __future__ import annotations

import codecs
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from model.data import BUILTIN, DataError, resolve, sha256_file

log = logging.getLogger(__name__)
FORMATS = ("auto", "conllu", "conll", "jsonl")
CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
TAGGED_BUILTINS = ("ud_english_ewt",)
_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"[1-9][0-9]*-[1-9][0-9]*")
_EMPTY_NODE_ID = re.compile(r"[0-9]+\.[1-9][0-9]*")
_JSONL_SHAPE = 'one JSON object a line, {"tokens": ["..."], "tags": ["..."]}'

_Block = list[tuple[int, str]]  # (line number, text) of one sentence, or of one jsonl line


@dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]


@dataclass
class TaggedFile:
    sentences: list[TaggedSentence]
    skipped: int  # sentences dropped (conllu, conll) or lines dropped (jsonl) by skip_bad_rows
    path: Path


@dataclass
class TaggedCorpus:
    name: str
    train: list[TaggedSentence]
    dev: list[TaggedSentence]
    test: list[TaggedSentence] | None
    sha256: dict[str, str] = field(default_factory=dict)
    skipped: int = 0

    @property
    def tags(self) -> list[str]:
        return sorted({tag for sentence in self.train for tag in sentence.tags})


class _BadLine(Exception):
    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


# --------------------------------------------------------------------------- lines and formats


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text without the line end); the BOM is dropped, a line that is not UTF-8 stops the read."""
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{n}: not UTF-8 text ({exc.reason}); save the file as UTF-8") from exc
            yield n, text.rstrip("\r\n")


def _blocks(lines: Iterator[tuple[int, str]]) -> Iterator[_Block]:
    block: _Block = []
    for n, text in lines:
        if text.strip():
            block.append((n, text))
        elif block:
            yield block
            block = []
    if block:
        yield block


def _sniff(path: Path) -> str:
    for _, text in _lines(path):
        if text.strip() and not text.startswith("#"):
            return "conllu" if len(text.split("\t")) == len(CONLLU_COLUMNS) else "conll"
    return "conll"


def _format(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise DataError(f"{path}: unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    if suffix == ".conllu":
        return "conllu"
    if suffix in (".jsonl", ".json"):
        return "jsonl"
    return _sniff(path)


def _checked(n: int, token: str, tag: str, where: str = "") -> tuple[str, str]:
    if not token:
        raise _BadLine(n, f"empty token{where}; expected a token and its tag")
    if not tag:
        raise _BadLine(n, f"empty tag for token {token!r}{where}; expected a tag")
    return token, tag


def _sentence(pairs: list[tuple[str, str]]) -> TaggedSentence | None:
    if not pairs:
        return None
    return TaggedSentence([token for token, _ in pairs], [tag for _, tag in pairs])


# --------------------------------------------------------------------------- CoNLL-U


def conllu_tag_index(tag_column: str) -> int:
    """The 0-based CoNLL-U column of a column name (`upos`, `xpos`, …) or a 1-based column number."""
    name = str(tag_column).strip().lower()
    if name.isdigit() and 1 <= int(name) <= len(CONLLU_COLUMNS):
        return int(name) - 1
    if name in CONLLU_COLUMNS:
        return CONLLU_COLUMNS.index(name)
    raise DataError(
        f"tag column {tag_column!r}: expected a CoNLL-U column name ({', '.join(CONLLU_COLUMNS)}) or a number 1-10"
    )


def _is_word(n: int, word_id: str) -> bool:
    if _WORD_ID.fullmatch(word_id):
        return True
    if _RANGE_ID.fullmatch(word_id) or _EMPTY_NODE_ID.fullmatch(word_id):
        return False
    raise _BadLine(
        n, f"bad ID {word_id!r}; expected a word number (1, 2, ...), a multiword range (3-4) or an empty node (5.1)"
    )


def _conllu_parser(tag_index: int) -> Callable[[_Block], TaggedSentence | None]:
    column = CONLLU_COLUMNS[tag_index].upper()

    def parse(block: _Block) -> TaggedSentence | None:
        pairs = []
        for n, text in block:
            if text.startswith("#"):
                continue
            fields = text.split("\t")
            if len(fields) != len(CONLLU_COLUMNS):
                raise _BadLine(
                    n, f"{len(fields)} tab-separated column(s), expected 10 ({' '.join(CONLLU_COLUMNS).upper()})"
                )
            if _is_word(n, fields[0]):
                tag = fields[tag_index].strip()
                pairs.append(_checked(n, fields[1], "" if tag == "_" else tag, f" in column {column}"))
        return _sentence(pairs)

    return parse


# --------------------------------------------------------------------------- CoNLL (token ... tag)


@dataclass
class _ConllParser:
    """Token first, tag last (or column `tag_number`); every token line has as many columns as the first one."""

    path: Path
    tag_number: int | None
    columns: int = 0
    first_line: int = 0

    def __call__(self, block: _Block) -> TaggedSentence | None:
        pairs = []
        for n, text in block:
            fields = [f.strip() for f in (text.split("\t") if "\t" in text else text.split())]
            if fields[0] == "-DOCSTART-":
                continue
            self._check_columns(n, len(fields))
            tag = fields[self.tag_number - 1] if self.tag_number else fields[-1]
            pairs.append(_checked(n, fields[0], tag))
        return _sentence(pairs)

    def _check_columns(self, n: int, count: int) -> None:
        if not self.columns and count >= 2:
            self.columns, self.first_line = count, n
            if self.tag_number is not None and not 2 <= self.tag_number <= count:
                raise DataError(f"{self.path}:{n}: tag column {self.tag_number}, expected 2-{count} (token first)")
        if count < 2:
            raise _BadLine(n, f"{count} column, expected a token and a tag separated by a tab or spaces")
        if count != self.columns:
            raise _BadLine(n, f"{count} columns, expected {self.columns} as on the first token line {self.first_line}")


# --------------------------------------------------------------------------- JSON lines


def _jsonl_sentence(block: _Block) -> TaggedSentence | None:
    n, text = block[0]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _BadLine(n, f"bad JSON ({exc.msg} at column {exc.colno}); expected {_JSONL_SHAPE}") from None
    tokens = obj.get("tokens") if isinstance(obj, dict) else None
    tags = obj.get("tags") if isinstance(obj, dict) else None
    if not _strings(tokens) or not _strings(tags):
        raise _BadLine(n, f'no "tokens" and "tags" lists of strings; expected {_JSONL_SHAPE}')
    assert isinstance(tokens, list) and isinstance(tags, list)
    if len(tokens) != len(tags):
        raise _BadLine(n, f"{len(tokens)} tokens but {len(tags)} tags; expected one tag per token")
    if not tokens:
        raise _BadLine(n, "no tokens; expected a sentence of at least one token")
    pairs = [
        _checked(n, token, tag.strip(), f" (token {i})")
        for i, (token, tag) in enumerate(zip(tokens, tags, strict=True), 1)
    ]
    return _sentence(pairs)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


# --------------------------------------------------------------------------- reading a file


def _units(
    path: Path, kind: str, tag_column: str
) -> tuple[Iterator[_Block], Callable[[_Block], TaggedSentence | None]]:
    """What one bad line drops (a sentence, or a jsonl line) and the parser of one such unit."""
    lines = _lines(path)
    if kind == "jsonl":
        return ([(n, text)] for n, text in lines if text.strip()), _jsonl_sentence
    if kind == "conllu":
        return _blocks(lines), _conllu_parser(conllu_tag_index(tag_column))
    number = int(tag_column) if str(tag_column).strip().isdigit() else None
    return _blocks(lines), _ConllParser(path, number)


def read_tagged(
    path: str | Path, *, fmt: str = "auto", tag_column: str = "upos", skip_bad_rows: bool = False
) -> TaggedFile:
    """Read a token-labelled file. Bad lines raise with file:line, or (skip_bad_rows) drop their sentence."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    units, parse = _units(path, _format(path, fmt), tag_column)
    sentences: list[TaggedSentence] = []
    problems: list[str] = []
    for unit in units:
        try:
            sentence = parse(unit)
        except _BadLine as bad:
            where = f"{path}:{bad.line}: {bad.problem}"
            if not skip_bad_rows:
                raise DataError(f"{where}; fix it or pass --skip-bad-rows") from None
            problems.append(where)
            continue
        if sentence is not None:
            sentences.append(sentence)
    if problems:
        log.warning("%s: skipped %d bad sentence(s) or line(s); first: %s", path, len(problems), problems[0])
    if not sentences:
        after = f" after skipping {len(problems)} bad one(s)" if problems else " (empty file)"
        raise DataError(f"{path}: no sentences{after}")
    return TaggedFile(sentences, len(problems), path)


# --------------------------------------------------------------------------- corpora


def load_tagged_builtin(
    name: str = "ud_english_ewt", data_dir: str | Path | None = None, *, tag_column: str = "upos"
) -> TaggedCorpus:
    """A built-in tagged data set (train, dev, test), each file verified by sha256 (see model.data.resolve)."""
    if name not in TAGGED_BUILTINS:
        raise DataError(f"{name!r} is not a tagged data set; built-in tagged data sets: {', '.join(TAGGED_BUILTINS)}")
    parts: dict[str, list[TaggedSentence]] = {}
    sums: dict[str, str] = {}
    for split in ("train", "dev", "test"):
        path = resolve(name, split, data_dir)
        parts[split] = read_tagged(path, fmt="conllu", tag_column=tag_column).sentences
        sums[BUILTIN[name][split].path] = BUILTIN[name][split].sha256
    return TaggedCorpus(name, parts["train"], parts["dev"], parts["test"], sums)


def split_dev(
    sentences: list[TaggedSentence], fraction: float, seed: int
) -> tuple[list[TaggedSentence], list[TaggedSentence]]:
    """A seeded random `fraction` of the sentences (at least one, never all) as dev; both keep the file order."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"dev fraction must be between 0 and 1, got {fraction}")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    k = min(max(round(len(sentences) * fraction), 1), len(sentences) - 1)
    dev = set(order[:k])
    return [s for i, s in enumerate(sentences) if i not in dev], [s for i, s in enumerate(sentences) if i in dev]


def load_tagged_files(
    train: str | Path,
    dev: str | Path | None = None,
    test: str | Path | None = None,
    *,
    fmt: str = "auto",
    tag_column: str = "upos",
    skip_bad_rows: bool = False,
    dev_fraction: float = 0.1,
    seed: int = 0,
) -> TaggedCorpus:
    """Your own tagged files; without `dev`, a seeded random `dev_fraction` of the training sentences."""
    files = {"train": train, "dev": dev, "test": test}
    read = {
        split: read_tagged(p, fmt=fmt, tag_column=tag_column, skip_bad_rows=skip_bad_rows)
        for split, p in files.items()
        if p is not None
    }
    train_sentences = read["train"].sentences
    if len(train_sentences) < 2:
        raise DataError(f"{train}: {len(train_sentences)} sentence(s); need at least 2 to train and validate")
    if "dev" in read:
        dev_sentences = read["dev"].sentences
    else:
        train_sentences, dev_sentences = split_dev(train_sentences, dev_fraction, seed)
    corpus = TaggedCorpus(
        Path(train).stem,
        train_sentences,
        dev_sentences,
        read["test"].sentences if "test" in read else None,
        {str(p): sha256_file(Path(p)) for p in files.values() if p is not None},
        sum(f.skipped for f in read.values()),
    )
    _warn_unseen_tags(corpus)
    return corpus


def _warn_unseen_tags(corpus: TaggedCorpus) -> None:
    """A tag missing from training is a warning, not an error: one rare tag in dev should not block a tagger."""
    known = set(corpus.tags)
    for split, part in (("dev", corpus.dev), ("test", corpus.test or [])):
        unseen = sorted({tag for s in part for tag in s.tags} - known)
        if unseen:
            log.warning("%s: %s tag(s) %s do not occur in the training data", corpus.name, split, unseen)
