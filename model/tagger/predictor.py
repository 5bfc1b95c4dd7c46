"""A loaded tagger: an artifact (model/artifacts.py) turned into the network in eval mode plus its word
tokenizer, character vocabulary, tags and calibration. The service and the CLI use it; model/tagger/task.py names
it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model.artifacts import Artifact, load_artifact
from model.networks import count_parameters
from model.tagger.config import TaggerConfig
from model.tagger.network import SequenceTagger
from model.tagger.tagging import TagEncoder, tokenize_with_offsets

Tagged = list[dict[str, Any]]  # one sentence: {"text", "tag", "score"} per token, "start"/"end" for raw text


class TaggerModel:
    """A loaded tagger artifact: word tokenizer + character vocabulary + network + tags + calibration."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = artifact.config.network_config(TaggerConfig)
        self.network = SequenceTagger(self.config)
        artifact.build(self.network)
        tok = artifact.config.tokenizer
        self.encoder = TagEncoder.from_parts(
            artifact.tokenizer, tok.get("chars", ""), tok.get("max_chars_per_word", 20)
        )
        self.tokenizer = artifact.tokenizer
        self.labels: list[str] = list(artifact.config.labels or [])
        self.temperature = artifact.config.temperature

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)

    @torch.inference_mode()
    def infer(self, batch: Sequence[Sequence[str]]) -> tuple[list[list[int]], list[list[float]]]:
        """Tag ids and their calibrated probabilities for pre-tokenized sentences (each non-empty)."""
        words, chars, lengths = self.encoder.encode(batch)
        emissions = self.network(words, chars if self.config.char_vocab_size else None, lengths)
        return self.network.decode(emissions, lengths, self.temperature)

    def tag_tokens(self, batch: Sequence[Sequence[str]], batch_size: int = 256) -> list[Tagged]:
        """{"text", "tag", "score"} per token, in length-sorted batches; an empty sentence gets []."""
        out: list[Tagged] = [[] for _ in batch]
        order = sorted((i for i in range(len(batch)) if batch[i]), key=lambda i: len(batch[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            tags, scores = self.infer([batch[i] for i in idx])
            for i, row, probs in zip(idx, tags, scores, strict=True):
                out[i] = [{"text": t, "tag": self.labels[k], "score": p}
                          for t, k, p in zip(batch[i], row, probs, strict=True)]  # fmt: skip
        return out

    def tag_texts(self, texts: Sequence[str], batch_size: int = 256) -> list[Tagged]:
        """Raw texts: tokenized (model/tagger/tagging.py) with character offsets into each text, then tagged."""
        spans = [tokenize_with_offsets(text) for text in texts]
        tagged = self.tag_tokens([[t for t, _, _ in s] for s in spans], batch_size)
        for sentence, offsets in zip(tagged, spans, strict=True):
            for token, (_, start, end) in zip(sentence, offsets, strict=True):
                token["start"], token["end"] = start, end
        return tagged


def load_tagger(path: str | Path) -> TaggerModel:
    return TaggerModel(load_artifact(path, "tagging"))
