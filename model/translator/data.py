"""The translator's data: sentence pairs from the built-in Multi30k (German -> English, from model/data.py) or from
your own files, in any of three formats:

    two line-aligned plain-text files     --source train.de --target train.en   (line i translates line i)
    TSV                                   --train pairs.tsv                     (source<TAB>target per line)
    JSON lines                            --train pairs.jsonl                   ({"source": ..., "target": ...})

A bad pair (an empty side, a TSV line without exactly one tab, a JSON line that is not an object with two strings)
stops the run with a message naming the file and line, or, with `skip_bad_rows`, is skipped and counted. Files
whose line counts differ always stop it: the pairing itself would be wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from model.data import BUILTIN, DataError, resolve, sha256_file

MULTI30K = "multi30k"
MULTI30K_LANGUAGES = ("de", "en")  # source, target: the usual reading of the published results


@dataclass
class Pairs:
    """One split's sentence pairs, and the bad ones skipped while reading it (by reason)."""

    source: list[str]
    target: list[str]
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.source)

    def head(self, n: int) -> Pairs:
        return Pairs(self.source[:n], self.target[:n])


@dataclass
class ParallelCorpus:
    train: Pairs
    dev: Pairs
    test: Pairs | None
    name: str
    sha256: dict[str, str] = field(default_factory=dict)

    @property
    def skipped(self) -> dict[str, int]:
        """Bad rows skipped over every split, by reason."""
        total: dict[str, int] = {}
        for split in (self.train, self.dev, self.test):
            for reason, n in (split.skipped if split is not None else {}).items():
                total[reason] = total.get(reason, 0) + n
        return total


def _lines(path: Path) -> list[str]:
    """A UTF-8 file's lines (BOM stripped, CRLF read as LF, no trailing empty line)."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


class _Collector:
    """Keeps the good pairs; a bad one raises, or is counted under its reason when skipping."""

    def __init__(self, skip_bad_rows: bool) -> None:
        self.skip = skip_bad_rows
        self.pairs = Pairs([], [])

    def bad(self, where: str, reason: str) -> None:
        if not self.skip:
            raise DataError(f"{where}: {reason} (use --skip-bad-rows to skip such pairs)")
        self.pairs.skipped[reason] = self.pairs.skipped.get(reason, 0) + 1

    def add(self, where: str, source: str, target: str) -> None:
        source, target = source.strip(), target.strip()
        if not source or not target:
            self.bad(where, f"empty {'source' if not source else 'target'}")
            return
        self.pairs.source.append(source)
        self.pairs.target.append(target)


def read_aligned(source: str | Path, target: str | Path, skip_bad_rows: bool = False) -> Pairs:
    """Two line-aligned plain-text files: line i of `source` translates line i of `target`."""
    source, target = Path(source), Path(target)
    src, tgt = _lines(source), _lines(target)
    if len(src) != len(tgt):
        raise DataError(
            f"{source} has {len(src)} lines and {target} has {len(tgt)}: line-aligned files need one line per"
            " sentence on each side"
        )
    out = _Collector(skip_bad_rows)
    for i, (s, t) in enumerate(zip(src, tgt, strict=True), 1):
        out.add(f"{source}:{i} / {target}:{i}", s, t)
    return out.pairs


def read_tsv(path: str | Path, skip_bad_rows: bool = False) -> Pairs:
    """`source<TAB>target` per line."""
    path = Path(path)
    out = _Collector(skip_bad_rows)
    for i, line in enumerate(_lines(path), 1):
        cells = line.split("\t")
        if len(cells) != 2:
            out.bad(f"{path}:{i}", f"expected source<TAB>target, found {len(cells)} column(s)")
            continue
        out.add(f"{path}:{i}", cells[0], cells[1])
    return out.pairs


def read_jsonl(path: str | Path, skip_bad_rows: bool = False) -> Pairs:
    """One JSON object per line with string fields "source" and "target" (other fields are ignored)."""
    path = Path(path)
    out = _Collector(skip_bad_rows)
    for i, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            out.bad(f"{path}:{i}", f"not JSON ({exc.msg})")
            continue
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("source", "target")):
            out.bad(f"{path}:{i}", 'expected an object with string fields "source" and "target"')
            continue
        out.add(f"{path}:{i}", row["source"], row["target"])
    return out.pairs


def read_pairs(path: str | Path, skip_bad_rows: bool = False) -> Pairs:
    """A file of pairs by its extension: .tsv (or .tab), .jsonl (or .json)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".tsv", ".tab"):
        return read_tsv(path, skip_bad_rows)
    if suffix in (".jsonl", ".json"):
        return read_jsonl(path, skip_bad_rows)
    raise DataError(
        f'{path}: a file of pairs must be .tsv (source<TAB>target) or .jsonl ({{"source", "target"}}); for two'
        " line-aligned text files use --source and --target"
    )


@dataclass
class SplitFiles:
    """Where one split comes from: a file of pairs, or a source file and a target file."""

    pairs: str | Path | None = None
    source: str | Path | None = None
    target: str | Path | None = None

    def given(self) -> bool:
        return any(x is not None for x in (self.pairs, self.source, self.target))

    def read(self, split: str, skip_bad_rows: bool) -> Pairs:
        if self.pairs is not None:
            if self.source is not None or self.target is not None:
                raise DataError(f"{split}: give a file of pairs or --source/--target files, not both")
            return read_pairs(self.pairs, skip_bad_rows)
        if self.source is None or self.target is None:
            missing = "target" if self.target is None else "source"
            raise DataError(f"{split}: a {missing} file is missing; line-aligned data needs both sides")
        return read_aligned(self.source, self.target, skip_bad_rows)

    def files(self) -> list[Path]:
        return [Path(p) for p in (self.pairs, self.source, self.target) if p is not None]


def load_parallel(
    train: SplitFiles | None = None,
    dev: SplitFiles | None = None,
    test: SplitFiles | None = None,
    *,
    data: str | None = None,
    data_dir: str | Path | None = None,
    skip_bad_rows: bool = False,
    dev_fraction: float = 0.05,
) -> ParallelCorpus:
    """Your own pairs (train, and dev/test when you have them: without dev, the last `dev_fraction` of the
    training pairs), or the built-in Multi30k (German -> English; its val is dev, test_2016_flickr is test)."""
    if train is not None and train.given():
        pairs = train.read("train", skip_bad_rows)
        if dev is not None and dev.given():
            dev_pairs = dev.read("dev", skip_bad_rows)
        else:
            cut = len(pairs) - max(1, int(len(pairs) * dev_fraction))
            dev_pairs = Pairs(pairs.source[cut:], pairs.target[cut:])
            pairs = Pairs(pairs.source[:cut], pairs.target[:cut], pairs.skipped)
        test_pairs = test.read("test", skip_bad_rows) if test is not None and test.given() else None
        if len(pairs) < 2 or len(dev_pairs) < 1:
            raise DataError(f"{', '.join(map(str, train.files()))}: too few pairs to train ({len(pairs)})")
        files = [f for split in (train, dev, test) if split is not None for f in split.files()]
        name = str(train.pairs or train.source)
        return ParallelCorpus(pairs, dev_pairs, test_pairs, name, {str(f): sha256_file(f) for f in files})
    name = data or MULTI30K
    if name != MULTI30K:
        raise DataError(f"{name!r} is not a parallel corpus; built-in for translation: {MULTI30K}")
    src, tgt = MULTI30K_LANGUAGES
    splits = {}
    sums = {}
    for split in ("train", "dev", "test"):
        paths = [resolve(name, f"{split}.{lang}", data_dir) for lang in (src, tgt)]
        splits[split] = read_aligned(paths[0], paths[1], skip_bad_rows)
        for lang in (src, tgt):
            remote = BUILTIN[name][f"{split}.{lang}"]
            sums[remote.path] = remote.sha256
    return ParallelCorpus(splits["train"], splits["dev"], splits["test"], name, sums)
