"""The on-disk artifact format, and the only code that knows it.

    <dir>/model.safetensors   weights only (no pickle)
    <dir>/tokenizer.json      a `tokenizers` tokenizer
    <dir>/config.json         schema version, task, network config, labels, calibration, training config,
                              data set and its sha256, metrics, library versions, creation time
    <dir>/*.png, metrics.json the evaluation report (optional)
    <dir>/model.onnx          the classifier's graph for ONNX Runtime (optional: model/sentiment/onnx_runtime.py)
    <dir>/model.onnx.data     its weights, as ONNX external data (with model.onnx)
    <dir>/manifest.json       sha256 of every file above; loading verifies it

An artifact is written into a temporary sibling directory and renamed into place, so a crash never leaves a
loadable half-artifact. Loading needs nothing but the directory.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import safetensors
import safetensors.torch
import tokenizers
import torch
from tokenizers import Tokenizer

from model import __version__
from model.data import sha256_file
from model.tokenization import load_tokenizer

SCHEMA_VERSION = 1
WEIGHTS, TOKENIZER, CONFIG, MANIFEST = "model.safetensors", "tokenizer.json", "config.json", "manifest.json"
REQUIRED = (WEIGHTS, TOKENIZER, CONFIG)
C = TypeVar("C")


class ArtifactError(Exception):
    """An artifact is missing, corrupt or of an unknown format; the message names the file."""


@dataclass
class DataInfo:
    """The data set an artifact was trained on: its name and the sha256 of each file."""

    name: str
    sha256: dict[str, str]


@dataclass
class ArtifactConfig:
    """config.json, typed. This class is the only reader and writer of its keys."""

    task: str
    network: dict[str, Any]  # the task's network config dataclass as a dict: network_config() rebuilds it
    tokenizer: dict[str, Any]  # kind and settings; the tagger's character vocabulary
    training: dict[str, Any]  # the training config, its history
    data: DataInfo
    metrics: dict[str, Any]
    labels: list[str] | None = None  # classes or tags, in output order
    calibration: dict[str, float] | None = None  # {"temperature": T} fitted on dev
    max_length: int | None = None  # tokens a classifier reads per text
    parameters: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    created_at: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def temperature(self) -> float:
        return float((self.calibration or {}).get("temperature", 1.0))

    def network_config(self, cls: type[C]) -> C:
        """The network's config dataclass (ClassifierConfig, CharLMConfig, TaggerConfig …)."""
        try:
            return cls(**self.network)
        except (TypeError, ValueError) as exc:
            raise ArtifactError(f"config.json's network does not fit {cls.__name__}: {exc}") from exc

    def to_json(self) -> str:
        out = {"schema_version": self.schema_version, "task": self.task}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in out and value is not None:
                out[f.name] = dataclasses.asdict(value) if isinstance(value, DataInfo) else value
        return json.dumps(out, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: Path) -> ArtifactConfig:
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ArtifactError(f"{where} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ArtifactError(f"{where}: expected a JSON object")
        if raw.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{where}: schema_version {raw.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        missing = sorted(f.name for f in fields(cls) if f.default is dataclasses.MISSING
                         and f.default_factory is dataclasses.MISSING and f.name not in raw)  # fmt: skip
        if unknown or missing:
            raise ArtifactError(f"{where}: unknown keys {unknown}, missing keys {missing}")
        try:
            return cls(**{**raw, "data": DataInfo(**raw["data"])})
        except TypeError as exc:
            raise ArtifactError(f"{where}: {exc}") from exc


def library_versions() -> dict[str, str]:
    return {
        "rnn-nlp-service": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_artifact(
    out_dir: str | Path,
    config: ArtifactConfig,
    state_dict: Mapping[str, torch.Tensor],
    tokenizer: Tokenizer,
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write an artifact atomically; `config`'s parameters, versions and creation time are filled in here."""
    from model.tasks import TASKS  # the registry imports the kinds, whose predictors import this module

    known = sorted(task.artifact_task for task in TASKS.values())
    if config.task not in known:
        raise ValueError(f"task must be one of {known}, got {config.task!r}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        safetensors.torch.save_file(tensors, str(tmp / WEIGHTS), metadata={"task": config.task})
        tokenizer.save(str(tmp / TOKENIZER))
        config = dataclasses.replace(
            config,
            parameters=sum(t.numel() for t in tensors.values()),
            versions=library_versions(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        (tmp / CONFIG).write_text(config.to_json(), encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        files = sorted(p.name for p in tmp.iterdir() if p.is_file())
        manifest = {"schema_version": SCHEMA_VERSION, "files": {name: sha256_file(tmp / name) for name in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        # mkdtemp makes the directory 0700 and safetensors writes 0600, but an artifact is shared (served by another
        # user, copied into an image): give it the permissions of any file this process creates
        umask = _umask()
        os.chmod(tmp, 0o777 & ~umask)
        for p in tmp.iterdir():
            os.chmod(p, 0o666 & ~umask)
            with p.open("rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def copy_artifact(src: str | Path, out: str | Path) -> Path:
    """Copy a verified artifact to `out` the way `save_artifact` writes one: into a sibling, then swapped in."""
    verify(src)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's 0700, as save_artifact does
        _swap_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Put `tmp` at `out`. Over an existing artifact, Linux swaps the two directories in one atomic step
    (renameat2 RENAME_EXCHANGE), so `out` is always a whole artifact, old or new; elsewhere the old one is moved
    aside first, which leaves a moment with nothing at `out`. The old artifact is removed only afterwards."""
    if out.exists() and _exchange(tmp, out):
        _fsync_dir(out.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now the old artifact
        return
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    _fsync_dir(out.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with renameat2(RENAME_EXCHANGE); False where the system cannot."""
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):  # a libc without renameat2 (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    done = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return bool(done == 0)


@dataclass
class Artifact:
    path: Path
    config: ArtifactConfig
    tokenizer: Tokenizer
    state_dict: dict[str, torch.Tensor]
    sha256: str  # of the weights file
    files: dict[str, str] = field(default_factory=dict)  # the manifest: file name -> sha256, verified at load

    @property
    def task(self) -> str:
        return self.config.task

    def file(self, name: str) -> Path | None:
        """A file the manifest lists beside the required ones (the classifier's model.onnx), verified at load;
        None when the artifact has none."""
        return self.path / name if name in self.files else None

    def build(self, module: torch.nn.Module) -> None:
        """Load the weights into `module` (strictly) and put it in eval mode. The module's parameters become the
        loaded tensors themselves (`assign`): one copy of the weights in memory, not the artifact's and the
        module's (11 MB for the default classifier, held by every loaded model and twice during a live swap)."""
        try:
            module.load_state_dict(self.state_dict, strict=True, assign=True)
        except RuntimeError as exc:
            raise ArtifactError(f"{self.path / WEIGHTS} does not match its config.json: {exc}") from exc
        module.eval()


def verify(path: str | Path) -> dict[str, str]:
    """Check the manifest of an artifact directory; return {file: sha256}. Raises ArtifactError naming the file."""
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"artifact directory {root} does not exist (train one with `python -m model train`)")
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(f"{manifest_path} is missing: not an artifact, or an interrupted write")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files: dict[str, str] = dict(manifest["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{manifest_path} is corrupt: {exc}") from exc
    for name in REQUIRED:
        if name not in files:
            raise ArtifactError(f"{manifest_path} does not list required file {name}")
    for name, expected in files.items():
        file = root / name
        if not file.is_file():
            raise ArtifactError(f"{file} is missing")
        actual = sha256_file(file)
        if actual != expected:
            raise ArtifactError(f"{file} is corrupt: sha256 {actual[:12]}… does not match the manifest")
    return files


def load_artifact(path: str | Path, task: str | None = None) -> Artifact:
    """Verify and load an artifact directory (weights on CPU)."""
    root = Path(path)
    files = verify(root)
    config = read_config(root)
    if task is not None and config.task != task:
        raise ArtifactError(f"{root} holds a {config.task!r} model, expected {task!r}")
    try:
        tokenizer = load_tokenizer(root / TOKENIZER)
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ArtifactError(f"{root / TOKENIZER} cannot be loaded: {exc}") from exc
    try:
        state = safetensors.torch.load_file(str(root / WEIGHTS), device="cpu")
    except Exception as exc:
        raise ArtifactError(f"{root / WEIGHTS} cannot be loaded: {exc}") from exc
    return Artifact(root, config, tokenizer, state, files[WEIGHTS], files)


def read_config(path: str | Path) -> ArtifactConfig:
    """An artifact directory's config.json, typed (without verifying the rest: see load_artifact)."""
    where = Path(path) / CONFIG
    try:
        text = where.read_text(encoding="utf-8")
    except OSError as exc:
        raise ArtifactError(f"{where} cannot be read: {exc}") from exc
    return ArtifactConfig.from_json(text, where)
