"""The generator's data: a plain-text corpus (a file of your own, or tiny-shakespeare from model/data.py) and
its train/validation split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from model.data import BUILTIN, DataError, resolve, sha256_file


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
