"""Versioned model directories, as TensorFlow Serving's `model_base_path/<version>/`: a model's path is either one
artifact (config.json inside) or a directory of numbered versions, each an artifact, the newest the highest.

    artifacts/sentiment/1/   the quick preset's artifact, written first
    artifacts/sentiment/2/   the default preset's, written later beside it
    artifacts/sentiment/.2.tmp-…   a version being written (save_artifact's sibling): never listed

`scan` says which versions a directory holds and which of them may serve (manifest verified, the right task);
`choose` picks the one to serve under a policy: the newest that may serve, or a pinned number. A trainer reserves
the next number with `new_version`, so two trainers never write the same one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from model.artifacts import CONFIG, MANIFEST, REQUIRED, ArtifactError, read_config, verify

NUMBER = r"[1-9][0-9]{0,8}"  # 1 … 999,999,999: a plain number, no sign, no leading zero
VERSION = re.compile(rf"^{NUMBER}$")
PINNED = re.compile(rf"^(?P<path>.+)@(?P<version>{NUMBER})$")
RESERVED = ".reserved-"  # `.reserved-N`: a trainer is writing version N


@dataclass(frozen=True)
class Version:
    """One numbered version on disk and whether it may serve; `problem` says why not."""

    number: int
    path: Path
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None


def split_pin(path: Path) -> tuple[Path, int | None]:
    """`artifacts/sentiment@3`: a directory of versions with version 3 pinned; a path without `@N`: no pin (a
    plain artifact, or a directory of versions serving its newest)."""
    found = PINNED.match(str(path))
    return (Path(found["path"]), int(found["version"])) if found else (path, None)


def is_versioned(path: str | Path) -> bool:
    """True for a directory of versions: a directory holding none of an artifact's own files (so one missing only
    its config.json is still a broken artifact, and loading it says which file is missing). One with nothing
    numbered in it yet (a trainer's first version still to come) is one too; other entries (a trainer's
    checkpoint, `N.ckpt`) are not versions and are never listed."""
    path = Path(path)
    return path.is_dir() and not any((path / name).exists() for name in (*REQUIRED, MANIFEST))


def numbers(path: str | Path) -> list[int]:
    """The version numbers present in `path`, ascending (complete or not)."""
    path = Path(path)
    if not path.is_dir():
        return []
    return sorted(int(p.name) for p in path.iterdir() if VERSION.match(p.name) and p.is_dir())


def check(path: Path, task: str | None) -> str | None:
    """Why the artifact at `path` may not serve (None when it may): an unverified manifest, or another task."""
    try:
        verify(path)
        found = read_config(path).task
    except (ArtifactError, OSError, ValueError) as exc:
        return str(exc)
    if task is not None and found != task:
        return f"{path} holds a {found!r} model, not {task!r}"
    return None


def scan(path: str | Path, task: str | None = None) -> list[Version]:
    """Every numbered version in `path`, ascending, each verified (manifest, and `task` when given)."""
    return [Version(n, Path(path) / str(n), check(Path(path) / str(n), task)) for n in numbers(path)]


def choose(versions: list[Version], pin: int | None = None) -> Version:
    """The version to serve: `pin` when given (it must be there and usable), else the newest usable one. Raises
    ArtifactError saying what is there when there is none."""
    if pin is not None:
        found = next((v for v in versions if v.number == pin), None)
        if found is None:
            there = ", ".join(str(v.number) for v in versions) or "none"
            raise ArtifactError(f"version {pin} is not there (versions on disk: {there})")
        if found.problem is not None:
            raise ArtifactError(f"version {pin} may not serve: {found.problem}")
        return found
    usable = [v for v in versions if v.usable]
    if not usable:
        if not versions:
            raise ArtifactError("no version yet: the directory holds no numbered version")
        raise ArtifactError(f"no version may serve: {'; '.join(f'{v.number}: {v.problem}' for v in versions)}")
    return usable[-1]


def resolve(path: str | Path, task: str | None = None) -> Path:
    """The artifact a path names: the path itself, or in a directory of versions the newest that may serve."""
    return choose(scan(path, task)).path if is_versioned(path) else Path(path)


def new_version(path: str | Path) -> Path:
    """Reserve the next version number in `path` (created if need be) and return where its artifact goes.

    The reservation is a hidden marker made with O_EXCL, so two trainers starting together get two numbers; the
    artifact itself is written as any other (into a sibling, then renamed into place), and a reader never sees
    the number until it is complete. Refuses a path that holds a plain artifact."""
    path = Path(path)
    if (path / CONFIG).exists():
        raise ArtifactError(
            f"{path} holds an artifact of its own, not versions; move it to {path / '1'} to start versioning it"
        )
    path.mkdir(parents=True, exist_ok=True)
    number = max([*numbers(path), *reserved(path), 0]) + 1
    while True:
        try:
            fd = os.open(path / f"{RESERVED}{number}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            number += 1
            continue
        os.close(fd)
        return path / str(number)


def reserved(path: str | Path) -> list[int]:
    """The version numbers trainers have reserved in `path` and are writing, ascending."""
    names = (p.name[len(RESERVED) :] for p in Path(path).glob(RESERVED + "*"))
    return sorted(int(n) for n in names if n.isdigit())


@contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Where an artifact meant for `path` is written: `path` itself, or, when it is a directory of versions, its
    next version (reserved while it is written, as `new_version`), so that a benchmark's --keep adds a version
    instead of replacing them all."""
    path = Path(path)
    if not is_versioned(path):
        yield path
        return
    out = new_version(path)
    try:
        yield out
    finally:
        release(out)


def release(out: Path) -> None:
    """Drop the reservation `new_version` made for `out` (once its artifact is in place, or given up)."""
    (out.parent / f"{RESERVED}{out.name}").unlink(missing_ok=True)
