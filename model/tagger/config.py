"""The tagger's configs: its network config (stored in the artifact) and its training config with named presets
(what `python -m model train tagger` resolves from a preset plus command-line overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from model.config import CELLS, Cell, apply_preset, at_least, check_training, network_config


@dataclass
class TaggerTrainConfig:
    """How to train the sequence tagger (part of speech, BIO entities, any token labels)."""

    cell: Cell = "lstm"
    bidirectional: bool = True
    embedding_dim: int = 128
    chars: bool = True  # a character BiLSTM per word: unseen words get tags from their spelling
    char_dim: int = 32
    char_hidden: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.33
    crf: bool = False
    min_frequency: int = 1
    word_dropout: float = 0.25  # a word seen once in training is read as [UNK] with this probability
    max_chars_per_word: int = 20
    # ten epochs of 64 sentences at 4e-3: the best of the recipes tried that fits the ten-minute target held to
    # AVX2 with a fifth to spare (tagger table in docs/results.md; commit message for the others)
    epochs: int = 10
    # on small data, more epochs: at least this many steps (UD English EWT's 10 epochs are 1,960, unchanged);
    # dev accuracy still stops the run early (patience)
    min_steps: int = 1500
    batch_size: int = 64
    lr: float = 4e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    clip_norm: float = 5.0
    patience: int = 4
    seed: int = 0
    preset: str | None = None  # the preset these settings started from (None: built by hand), for /models
    threads: int = 0
    max_minutes: float | None = None  # a wall-clock cap a user can ask for (--max-minutes); the preset is epochs
    dev_fraction: float = 0.1

    def __post_init__(self) -> None:
        check_training(self)
        at_least(self, 1, "embedding_dim", "char_dim", "char_hidden", "hidden_size", "num_layers", "min_frequency")
        at_least(self, 1, "max_chars_per_word")
        at_least(self, 0, "min_steps")
        for name in ("word_dropout", "dev_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def network(self, vocab_size: int, num_tags: int, char_vocab_size: int) -> TaggerConfig:
        chars = char_vocab_size if self.chars else 0
        return network_config(TaggerConfig, self, vocab_size=vocab_size, num_tags=num_tags, char_vocab_size=chars)


TAGGER_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "epochs": 3,
        "min_steps": 0,
        "num_layers": 1,
        "hidden_size": 128,
        "embedding_dim": 100,
        "char_hidden": 32,
        "batch_size": 64,
        "lr": 4e-3,
    },
    "default": {},
}


def tagger_preset(name: str) -> TaggerTrainConfig:
    return apply_preset(TaggerTrainConfig(), TAGGER_PRESETS, name)


@dataclass
class TaggerConfig:
    """Word embedding [+ character BiLSTM per word] -> recurrent encoder -> dropout -> linear per token [-> CRF]."""

    vocab_size: int
    num_tags: int
    char_vocab_size: int  # 0: no character representation (ids 0 pad, 1 unknown, 2.. the characters)
    cell: Cell = "lstm"
    bidirectional: bool = True
    embedding_dim: int = 100
    char_dim: int = 32
    char_hidden: int = 32  # per direction: a word's character features are 2 * char_hidden
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.33
    crf: bool = False  # a linear-chain CRF over the per-token scores (model/tagger/crf.py)
    padding_idx: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        at_least(self, 1, "vocab_size", "num_tags", "embedding_dim", "char_dim", "char_hidden", "hidden_size")
        at_least(self, 1, "num_layers")
        at_least(self, 0, "char_vocab_size")
