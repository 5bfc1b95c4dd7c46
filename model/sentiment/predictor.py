"""A loaded classifier: an artifact (model/artifacts.py) turned into the network in eval mode plus what it needs
to answer (tokenizer, labels, calibration). The service and the CLI use it; model/sentiment/task.py names it."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from model.artifacts import Artifact, load_artifact
from model.networks import count_parameters
from model.sentiment.config import ClassifierConfig
from model.sentiment.network import SentimentClassifier
from model.tokenization import PAD_ID, encode_batch

Chunk = tuple[list[int], torch.Tensor, torch.Tensor]  # a batch of texts: their indices, padded ids (B, T), lengths


class Runner(Protocol):
    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, pool: Executor | None = None) -> torch.Tensor: ...


class SentimentModel:
    """A loaded classifier artifact: tokenizer + network + labels + calibration temperature."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = artifact.config.network_config(ClassifierConfig)
        self.network = SentimentClassifier(self.config)
        artifact.build(self.network)
        # what logits() runs: the network itself, or a faster stand-in for it (an int8 copy, an ONNX Runtime
        # session: model/sentiment/onnx_runtime.py) with the same infer(ids, lengths, pool)
        self.runner: Runner = self.network
        self.tokenizer = artifact.tokenizer
        self.labels: list[str] = list(artifact.config.labels or [])
        self.temperature = artifact.config.temperature
        self.max_length = artifact.config.max_length or 256

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    def encode(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded ids (B, T) and lengths (B,)."""
        seqs = encode_batch(self.tokenizer, texts, self.max_length)
        return pad(seqs)

    def logits(self, texts: Sequence[str], batch_size: int | None = None, pool: Executor | None = None) -> torch.Tensor:
        """Uncalibrated logits (N, C), computed in length-sorted batches (chunks()), returned in input order. With
        `pool`, the ensemble's members run side by side on its threads."""
        chunks = self.chunks(texts, batch_size)
        return self.ordered(chunks, self.infer(chunks, pool))

    def chunks(self, texts: Sequence[str], batch_size: int | None = None) -> list[Chunk]:
        """The texts in batches of neighbouring token lengths: (their indices, padded ids, lengths). The texts are
        tokenized in one call and sorted by length; a runner with a cost model (`split`: ONNX Runtime's, whose
        LSTMs step every row to its batch's longest text) sizes the batches by it, any other takes batches of
        `batch_size` (by default the runner's `batch_size`, else 256), as does a caller that gives one."""
        seqs = encode_batch(self.tokenizer, texts, self.max_length)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        split = getattr(self.runner, "split", None)
        if batch_size is None and split is not None:
            sizes: list[int] = split([len(seqs[i]) for i in order])
        else:
            size = batch_size if batch_size is not None else int(getattr(self.runner, "batch_size", 256))
            sizes = [min(size, len(order) - start) for start in range(0, len(order), size)]
        out, start = [], 0
        for size in sizes:
            idx = order[start : start + size]
            out.append((idx, *pad([seqs[i] for i in idx])))
            start += size
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
        out = np.empty((sum(len(idx) for idx, _, _ in chunks), len(self.labels)), np.float32)
        for (idx, _, _), rows in zip(chunks, outputs, strict=True):  # NumPy's indexing: a torch op costs more
            out[idx] = rows.float().numpy()
        return torch.from_numpy(out)

    def predict_proba(
        self, texts: Sequence[str], batch_size: int | None = None, pool: Executor | None = None
    ) -> torch.Tensor:
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
