"""The on-disk artifact format, and the only code that knows it.

    <dir>/model.safetensors   weights only (no pickle)
    <dir>/tokenizer.json      a `tokenizers` tokenizer
    <dir>/config.json         schema version, task, network config, labels, calibration, training config,
                              data set and its sha256, metrics, library versions, creation time
    <dir>/*.png, metrics.json the evaluation report (optional)
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
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import safetensors
import safetensors.torch
import tokenizers
import torch
from tokenizers import Tokenizer

from model import __version__
from model.config import CharLMConfig, ClassifierConfig
from model.data import sha256_file
from model.networks import CharRNN, SentimentClassifier, count_parameters
from model.tokenization import PAD_ID, encode_batch, load_tokenizer

SCHEMA_VERSION = 1
WEIGHTS, TOKENIZER, CONFIG, MANIFEST = "model.safetensors", "tokenizer.json", "config.json", "manifest.json"
REQUIRED = (WEIGHTS, TOKENIZER, CONFIG)
TASKS = ("sentiment", "generation")


class ArtifactError(Exception):
    """An artifact is missing, corrupt or of an unknown format; the message names the file."""


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
    *,
    task: str,
    network: ClassifierConfig | CharLMConfig,
    state_dict: Mapping[str, torch.Tensor],
    tokenizer: Tokenizer,
    info: Mapping[str, Any],
    extra_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Write an artifact atomically. `info` is merged into config.json (labels, metrics, training, data …)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}")
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
        safetensors.torch.save_file(tensors, str(tmp / WEIGHTS), metadata={"task": task})
        tokenizer.save(str(tmp / TOKENIZER))
        config = {
            "schema_version": SCHEMA_VERSION,
            "task": task,
            "network": dataclasses.asdict(network),
            **info,
            "parameters": sum(t.numel() for t in tensors.values()),
            "versions": library_versions(),
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n", encoding="utf-8")
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
    config: dict[str, Any]
    tokenizer: Tokenizer
    state_dict: dict[str, torch.Tensor]
    sha256: str  # of the weights file

    @property
    def task(self) -> str:
        return str(self.config["task"])


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
    try:
        config = json.loads((root / CONFIG).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactError(f"{root / CONFIG} is not valid JSON: {exc}") from exc
    if config.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{root / CONFIG}: schema_version {config.get('schema_version')!r}, this code reads {SCHEMA_VERSION}"
        )
    if task is not None and config.get("task") != task:
        raise ArtifactError(f"{root} holds a {config.get('task')!r} model, expected {task!r}")
    try:
        tokenizer = load_tokenizer(root / TOKENIZER)
    except Exception as exc:  # tokenizers raises plain Exceptions
        raise ArtifactError(f"{root / TOKENIZER} cannot be loaded: {exc}") from exc
    try:
        state = safetensors.torch.load_file(str(root / WEIGHTS), device="cpu")
    except Exception as exc:
        raise ArtifactError(f"{root / WEIGHTS} cannot be loaded: {exc}") from exc
    return Artifact(root, config, tokenizer, state, files[WEIGHTS])


def _build(module: torch.nn.Module, artifact: Artifact) -> None:
    try:
        module.load_state_dict(artifact.state_dict, strict=True)
    except RuntimeError as exc:
        raise ArtifactError(f"{artifact.path / WEIGHTS} does not match its config.json: {exc}") from exc
    module.eval()


Chunk = tuple[list[int], torch.Tensor, torch.Tensor]  # a batch of texts: their indices, padded ids (B, T), lengths


class Runner(Protocol):
    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, pool: Executor | None = None) -> torch.Tensor: ...


class SentimentModel:
    """A loaded classifier artifact: tokenizer + network + labels + calibration temperature."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = ClassifierConfig(**artifact.config["network"])
        self.network = SentimentClassifier(self.config)
        _build(self.network, artifact)
        # what logits() runs: the network itself, or a faster stand-in for it (an int8 copy, an ONNX Runtime
        # session: model/onnx_runtime.py) with the same infer(ids, lengths, pool)
        self.runner: Runner = self.network
        self.tokenizer = artifact.tokenizer
        self.labels: list[str] = list(artifact.config["labels"])
        self.temperature = float(artifact.config.get("calibration", {}).get("temperature", 1.0))
        self.max_length = int(artifact.config.get("max_length", 256))

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and lengths (B,)."""
        seqs = encode_batch(self.tokenizer, texts, self.max_length)
        return pad(seqs)

    def logits(self, texts: Sequence[str], batch_size: int = 256, pool: Executor | None = None) -> torch.Tensor:
        """Uncalibrated logits (N, C), computed in length-sorted batches, returned in input order. With `pool`,
        the ensemble's members run side by side on its threads."""
        chunks = self.chunks(texts, batch_size)
        return self.ordered(chunks, self.infer(chunks, pool))

    def chunks(self, texts: Sequence[str], batch_size: int = 256) -> list[Chunk]:
        """The texts in length-sorted batches of at most `batch_size`: (their indices, padded ids, lengths)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out.append((idx, *self.encode([texts[i] for i in idx])))
        return out

    @torch.inference_mode()
    def infer(
        self, chunks: Sequence[Chunk], pool: Executor | None = None, runner: Runner | None = None
    ) -> list[torch.Tensor]:
        """The network's output per chunk, on `runner` if given (another runner of the same network), else on
        self.runner. Only the forwards: the service runs this in its model thread."""
        run = (runner or self.runner).infer
        return [run(ids, lengths, pool) for _, ids, lengths in chunks]

    def ordered(self, chunks: Sequence[Chunk], outputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """infer()'s outputs as logits (N, C) in the texts' order."""
        out = torch.empty(sum(len(idx) for idx, _, _ in chunks), len(self.labels))
        for (idx, _, _), rows in zip(chunks, outputs, strict=True):
            out[idx] = rows.float()
        return out

    def predict_proba(self, texts: Sequence[str], batch_size: int = 256, pool: Executor | None = None) -> torch.Tensor:
        """Calibrated class probabilities (N, C)."""
        return self.calibrated(self.logits(texts, batch_size, pool))

    def calibrated(self, logits: torch.Tensor) -> torch.Tensor:
        """Uncalibrated logits (N, C) as probabilities, temperature-scaled."""
        return torch.softmax(logits / self.temperature, dim=-1)

    def predict(self, texts: Sequence[str], pool: Executor | None = None) -> list[dict[str, Any]]:
        return self.results(self.logits(texts, pool=pool))

    def results(self, logits: torch.Tensor) -> list[dict[str, Any]]:
        """Label, score and probabilities per row of uncalibrated logits (N, C), as predict() answers."""
        results = []
        for row in self.calibrated(logits).tolist():
            best = max(range(len(row)), key=row.__getitem__)
            results.append(
                {
                    "label": self.labels[best],
                    "score": row[best],
                    "probabilities": dict(zip(self.labels, row, strict=True)),
                }
            )
        return results


def pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded ids (B, T) and lengths (B,), int64. Filled in NumPy: a torch op per row would also release and
    retake the GIL per row, and in the service every retake can wait on the event loop's thread."""
    lengths = np.fromiter(map(len, seqs), np.int64, len(seqs))
    ids = np.full((len(seqs), int(lengths.max()) if len(seqs) else 0), PAD_ID, np.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def load_sentiment(path: str | Path) -> SentimentModel:
    return SentimentModel(load_artifact(path, "sentiment"))


class GeneratorModel:
    """A loaded character-model artifact: tokenizer + network."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = CharLMConfig(**artifact.config["network"])
        self.network = CharRNN(self.config)
        _build(self.network, artifact)
        self.tokenizer = artifact.tokenizer

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)


def load_generator(path: str | Path) -> GeneratorModel:
    return GeneratorModel(load_artifact(path, "generation"))
