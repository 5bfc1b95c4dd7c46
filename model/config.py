"""Typed configuration: network configs (stored in artifacts) and training configs with named presets.

Network configs hold only architecture values; the artifact stores them beside the weights, so serving never
needs them from anywhere else. Training configs are what `python -m model train` resolves from a preset plus
command-line overrides.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Cell = Literal["lstm", "gru", "rnn"]
Pooling = Literal["max", "mean", "maxmean", "last"]
CELLS: tuple[str, ...] = ("lstm", "gru", "rnn")
POOLINGS: tuple[str, ...] = ("max", "mean", "maxmean", "last")


@dataclass
class ClassifierConfig:
    """Embedding -> recurrent encoder -> pooling -> dropout -> linear."""

    vocab_size: int
    num_classes: int
    cell: Cell = "lstm"
    bidirectional: bool = True
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.5
    pooling: Pooling = "maxmean"
    ensemble: int = 1  # independent members whose probabilities are averaged
    padding_idx: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble must be >= 1, got {self.ensemble}")


@dataclass
class CharLMConfig:
    """Embedding -> recurrent stack -> dropout -> linear over the character vocabulary."""

    vocab_size: int
    cell: Cell = "gru"
    embedding_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")


N = TypeVar("N", ClassifierConfig, CharLMConfig)


def _network(cls: type[N], train: Any, **data_sizes: Any) -> N:
    """The network config: every architecture field the training config shares with it, plus the data's sizes."""
    shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(train)} - set(data_sizes)
    return cls(**data_sizes, **{name: getattr(train, name) for name in shared})


def _at_least(cfg: Any, low: int, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")


def _check_training(cfg: Any) -> None:
    """Checks shared by both training configs; the messages name the setting."""
    _at_least(cfg, 1, "epochs", "batch_size", "patience")
    if cfg.cell not in CELLS:
        raise ValueError(f"cell must be one of {CELLS}, got {cfg.cell!r}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ValueError(f"lr must be a finite number > 0, got {cfg.lr}")
    if cfg.weight_decay < 0 or cfg.clip_norm < 0:
        raise ValueError("weight_decay and clip_norm must be >= 0")
    if not 0.0 <= cfg.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 <= cfg.warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {cfg.warmup_fraction}")
    if cfg.threads < 0:
        raise ValueError(f"threads must be >= 0, got {cfg.threads}")
    if cfg.max_minutes is not None and not cfg.max_minutes > 0:
        raise ValueError(f"max_minutes must be > 0, got {cfg.max_minutes}")


@dataclass
class SentimentTrainConfig:
    """How to train the classifier. Presets below; every field can be overridden from the CLI."""

    # network (vocab_size/num_classes come from the data)
    cell: Cell = "lstm"
    bidirectional: bool = True
    embedding_dim: int = 128
    hidden_size: int = 128
    num_layers: int = 1
    dropout: float = 0.5
    pooling: Pooling = "maxmean"
    ensemble: int = 4
    # tokenizer
    tokenizer: Literal["word", "wordpiece", "bpe"] = "word"
    vocab_size: int = 30000
    min_frequency: int = 1
    lowercase: bool = True
    # optimisation
    epochs: int = 3
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    clip_norm: float = 1.0
    word_dropout: float = 0.0
    label_smoothing: float = 0.0
    patience: int = 3
    # distillation: after the ensemble (the teacher) is trained, fit ONE encoder, started from the teacher's best
    # member, to the teacher's probabilities on the training set; the artifact holds that single encoder (about
    # 1/ensemble of the serving cost) and records the teacher's scores beside its own
    distill: bool = False
    distill_epochs: int = 3
    distill_lr: float = 2e-3
    distill_temperature: float = 1.0
    # evaluation / run control
    seed: int = 0
    threads: int = 0  # 0 = torch default
    max_minutes: float | None = None
    dev_fraction: float = 0.1
    max_length: int = 256

    def __post_init__(self) -> None:
        _check_training(self)
        if self.tokenizer not in ("word", "wordpiece", "bpe"):
            raise ValueError(f"tokenizer must be word, wordpiece or bpe, got {self.tokenizer!r}")
        _at_least(self, 1, "ensemble", "max_length", "embedding_dim", "hidden_size", "num_layers", "distill_epochs")
        if not (self.distill_lr > 0 and math.isfinite(self.distill_lr)):
            raise ValueError(f"distill_lr must be a finite number > 0, got {self.distill_lr}")
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            raise ValueError(f"distill_temperature must be a finite number > 0, got {self.distill_temperature}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (two specials and a word), got {self.vocab_size}")
        for name in ("word_dropout", "label_smoothing", "dev_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def network(self, vocab_size: int, num_classes: int) -> ClassifierConfig:
        return _network(ClassifierConfig, self, vocab_size=vocab_size, num_classes=num_classes)


SENTIMENT_PRESETS: dict[str, dict[str, Any]] = {
    # what tests and the quick benchmark use: about a minute on 2 cores for SST-2
    "quick": {"epochs": 1, "ensemble": 1},
    # the shipped model
    "default": {},
    # the default ensemble distilled into one BiLSTM: a little less accurate, about 4x cheaper to serve
    "fast": {"distill": True},
}


@dataclass
class GeneratorTrainConfig:
    """How to train the character model."""

    cell: Cell = "gru"
    embedding_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.15
    # optimisation
    batching: Literal["stateful", "random"] = "stateful"  # truncated BPTT over contiguous streams, or random windows
    epochs: int = 6
    batch_size: int = 64
    seq_len: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.02
    clip_norm: float = 1.0
    patience: int = 2
    # run control
    seed: int = 0
    threads: int = 0
    max_minutes: float | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        _check_training(self)
        _at_least(self, 1, "seq_len", "embedding_dim", "hidden_size", "num_layers")
        if self.batching not in ("stateful", "random"):
            raise ValueError(f"batching must be stateful or random, got {self.batching!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def network(self, vocab_size: int) -> CharLMConfig:
        return _network(CharLMConfig, self, vocab_size=vocab_size)


GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1, "hidden_size": 256},
    "default": {},
}


T = TypeVar("T")


def merge(base: T, overrides: dict[str, Any]) -> T:
    """A copy of dataclass `base` with the non-None `overrides` applied; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]


def _preset(base: T, presets: dict[str, dict[str, Any]], name: str) -> T:
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return merge(base, presets[name])


def sentiment_preset(name: str) -> SentimentTrainConfig:
    return _preset(SentimentTrainConfig(), SENTIMENT_PRESETS, name)


def generator_preset(name: str) -> GeneratorTrainConfig:
    return _preset(GeneratorTrainConfig(), GENERATOR_PRESETS, name)


__all__ = [
    "CELLS",
    "GENERATOR_PRESETS",
    "GeneratorTrainConfig",
    "generator_preset",
    "CharLMConfig",
    "ClassifierConfig",
    "SentimentTrainConfig",
    "SENTIMENT_PRESETS",
    "merge",
    "sentiment_preset",
]
