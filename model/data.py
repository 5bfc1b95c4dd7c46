"""Data: the built-in data sets (verified by sha256), readers for your own files, splits and batching.

Built-in data sets resolve in this order: an explicit data directory (`--data-dir`) or `RNN_DATA_DIR` (a mirror
laid out like `<dir>/sst2/train.tsv`), then the user cache (`RNN_CACHE_DIR`, default
`~/.cache/rnn-nlp-service`), then a download from the public URL into the cache. Every file is checked
against its sha256 before use.

Your own labelled data: .csv, .tsv or .jsonl with a text and a label column (UTF-8, BOM or not, CRLF or LF).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


DATA_DIR_ENV = "RNN_DATA_DIR"


CACHE_DIR_ENV = "RNN_CACHE_DIR"


class DataError(Exception):
    """A problem with the user's data or data set: the message says what and where."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to the data set directory
    sha256: str  # of the file as it is used (unpacked)
    url: str
    gzipped: bool = False  # the URL serves it gzip-compressed


_SST2_URL = "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2/master/SST-2/{}"


_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


_UD_EWT_URL = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16/en_ewt-ud-{}.conllu"


_MULTI30K_URL = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/{}.gz"
_MULTI30K_SHA256 = {
    "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
    "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
    "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
    "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
    "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
    "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
}
# Multi30k task 1's splits as this project names them: train, dev (its val) and test (test_2016_flickr)
_MULTI30K_SPLITS = {"train": "train", "dev": "val", "test": "test_2016_flickr"}


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
    "multi30k": {
        f"{split}.{lang}": RemoteFile(
            f"multi30k/{name}.{lang}", _MULTI30K_SHA256[f"{name}.{lang}"], _MULTI30K_URL.format(f"{name}.{lang}"), True
        )
        for split, name in _MULTI30K_SPLITS.items()
        for lang in ("de", "en")
    },
}


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
            stream = gzip.GzipFile(fileobj=resp) if remote.gzipped else resp
            while chunk := stream.read(1 << 20):
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
