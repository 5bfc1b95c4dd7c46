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
    bag: bool = False  # an n-gram bag (a linear model over words and word pairs) beside the members
    bag_buckets: int = 1 << 18  # rows the bag's word pairs are hashed into
    weighted: bool = False  # parts combined by fitted weights on their log-probabilities, not averaged
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
        if self.bag_buckets < 1:
            raise ValueError(f"bag_buckets must be >= 1, got {self.bag_buckets}")


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


N = TypeVar("N", "ClassifierConfig", "CharLMConfig", "TaggerConfig")


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
    ensemble: int = 3
    bag: bool = True  # an n-gram bag (a linear model over words and hashed word pairs) beside the encoders
    bag_buckets: int = 1 << 18
    weighted: bool = True  # the parts' log-probabilities summed with weights fitted on dev, not averaged
    # tokenizer
    tokenizer: Literal["word", "wordpiece", "bpe"] = "word"
    vocab_size: int = 30000
    min_frequency: int = 1
    lowercase: bool = True
    pieces: int = 4000  # the word tokenizer's WordPiece pieces for words never seen in training (0: [UNK])
    char_ngrams: bool = True  # train word vectors (and the bag's word weights) as sums of character n-grams
    # word vectors start at N(0, embedding_std). PyTorch's N(0, 1) gives vectors of norm ~11, which AdamW's steps of
    # about lr barely move in a few thousand steps: the words kept their random start, and SST-2 dev accuracy
    # moved by 5 points with the seed (the ablation table)
    embedding_std: float = 0.1
    # optimisation
    epochs: int = 3
    min_steps: int = 1500  # on small data, more epochs: at least this many steps (each part still stops early)
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    clip_norm: float = 1.0
    word_dropout: float = 0.0
    label_smoothing: float = 0.0
    patience: int = 3
    # distillation: after the ensemble (the teacher) is trained, fit ONE encoder, started from the teacher's best
    # member, to the teacher's probabilities on a transfer set: the training texts and `augment` variants of each
    # (words masked with probability augment_mask, and with probability augment_ngram a random n-gram of the
    # text instead of all of it; Tang et al. 2019). The artifact holds that encoder and the teacher's bag (the
    # serving cost of one network) and records the teacher's scores beside its own
    distill: bool = True
    augment: int = 4
    augment_mask: float = 0.1
    augment_ngram: float = 0.25
    distill_epochs: int = 1
    distill_lr: float = 3e-3
    distill_temperature: float = 1.0
    # when dev is carved out of the training file (no --dev), train once more on all of it, dev included, repeating
    # what dev chose (each part's epochs, the mixture, the temperature), as scikit-learn refits after
    # cross-validation: on a few thousand sentences, a tenth more data is worth more than the last dev check
    refit: bool = True
    # evaluation / run control
    seed: int = 0
    preset: str | None = None  # the preset these settings started from (None: built by hand), for /models
    threads: int = 0  # 0 = torch default
    max_minutes: float | None = None
    dev_fraction: float = 0.1
    max_length: int = 256

    def __post_init__(self) -> None:
        _check_training(self)
        if self.tokenizer not in ("word", "wordpiece", "bpe"):
            raise ValueError(f"tokenizer must be word, wordpiece or bpe, got {self.tokenizer!r}")
        _at_least(self, 1, "ensemble", "max_length", "embedding_dim", "hidden_size", "num_layers", "distill_epochs")
        _at_least(self, 0, "pieces", "min_steps", "augment")
        _at_least(self, 1, "bag_buckets")
        if not (self.embedding_std > 0 and math.isfinite(self.embedding_std)):
            raise ValueError(f"embedding_std must be a finite number > 0, got {self.embedding_std}")
        if not (self.distill_lr > 0 and math.isfinite(self.distill_lr)):
            raise ValueError(f"distill_lr must be a finite number > 0, got {self.distill_lr}")
        if not (self.distill_temperature > 0 and math.isfinite(self.distill_temperature)):
            raise ValueError(f"distill_temperature must be a finite number > 0, got {self.distill_temperature}")
        if self.vocab_size < 3:
            raise ValueError(f"vocab_size must be >= 3 (two specials and a word), got {self.vocab_size}")
        for name in ("word_dropout", "label_smoothing", "dev_fraction", "augment_mask", "augment_ngram"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def network(self, vocab_size: int, num_classes: int) -> ClassifierConfig:
        return _network(ClassifierConfig, self, vocab_size=vocab_size, num_classes=num_classes)

    @property
    def word_pieces(self) -> int:
        """The pieces the tokenizer gets: WordPiece and BPE spell every word with pieces of their own already."""
        return self.pieces if self.tokenizer == "word" else 0


SENTIMENT_PRESETS: dict[str, dict[str, Any]] = {
    # what tests and the quick benchmark use: about a minute on 2 cores for SST-2
    "quick": {"epochs": 1, "min_steps": 0, "ensemble": 1, "distill": False, "refit": False},
    # the shipped model: three encoders and a bag, distilled into one encoder beside the bag
    "default": {},
    # the teacher itself, served whole: four encoders and a bag (four forwards per sentence)
    "ensemble": {"ensemble": 4, "distill": False},
}


@dataclass
class GeneratorTrainConfig:
    """How to train the character model."""

    # the default preset, chosen by bench/generator_quality.py --sections ablation (README): a GRU, the design
    # card's cell, defined by epochs so that every machine trains the same model; the lstm preset sits beside it
    cell: Cell = "gru"
    embedding_dim: int = 64
    hidden_size: int = 512
    num_layers: int = 1
    dropout: float = 0.2
    # optimisation
    batching: Literal["stateful", "random"] = "stateful"  # truncated BPTT over contiguous streams, or random windows
    epochs: int = 7
    batch_size: int = 64
    seq_len: int = 64
    lr: float = 5e-3
    weight_decay: float = 0.1
    warmup_fraction: float = 0.02
    clip_norm: float = 1.0
    patience: int = 2  # a few-kilobyte text stops early on validation loss
    # on small data, more epochs: at least this many steps (tiny-shakespeare's seven epochs are 1,722), and early
    # stopping ends them once validation loss turns
    min_steps: int = 1500
    # run control
    seed: int = 0
    preset: str | None = None  # the preset these settings started from (None: built by hand), for /models
    threads: int = 0
    # a wall-clock cap a user can ask for (--max-minutes), for a corpus far larger than tiny-shakespeare; the
    # schedule then follows time, so a run the cap ends still finishes its decay
    max_minutes: float | None = None
    val_fraction: float = 0.1

    def __post_init__(self) -> None:
        _check_training(self)
        _at_least(self, 1, "seq_len", "embedding_dim", "hidden_size", "num_layers")
        _at_least(self, 0, "min_steps")
        if self.batching not in ("stateful", "random"):
            raise ValueError(f"batching must be stateful or random, got {self.batching!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def network(self, vocab_size: int) -> CharLMConfig:
        return _network(CharLMConfig, self, vocab_size=vocab_size)


GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1, "hidden_size": 256, "min_steps": 0},
    "default": {},
    # the default's recipe with an LSTM cell (PyTorch runs its CPU LSTM through oneDNN): its row in the ablation
    "lstm": {"cell": "lstm"},
}


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
    # AVX2 with a fifth to spare (tagger table in the README; commit message for the others)
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
        _check_training(self)
        _at_least(self, 1, "embedding_dim", "char_dim", "char_hidden", "hidden_size", "num_layers", "min_frequency")
        _at_least(self, 1, "max_chars_per_word")
        _at_least(self, 0, "min_steps")
        for name in ("word_dropout", "dev_fraction"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    def network(self, vocab_size: int, num_tags: int, char_vocab_size: int) -> TaggerConfig:
        chars = char_vocab_size if self.chars else 0
        return _network(TaggerConfig, self, vocab_size=vocab_size, num_tags=num_tags, char_vocab_size=chars)


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
    return merge(base, {**presets[name], "preset": name})


def sentiment_preset(name: str) -> SentimentTrainConfig:
    return _preset(SentimentTrainConfig(), SENTIMENT_PRESETS, name)


def generator_preset(name: str) -> GeneratorTrainConfig:
    return _preset(GeneratorTrainConfig(), GENERATOR_PRESETS, name)


def tagger_preset(name: str) -> TaggerTrainConfig:
    return _preset(TaggerTrainConfig(), TAGGER_PRESETS, name)


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
    crf: bool = False  # a linear-chain CRF over the per-token scores (model/crf.py)
    padding_idx: int = 0

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        _at_least(self, 1, "vocab_size", "num_tags", "embedding_dim", "char_dim", "char_hidden", "hidden_size")
        _at_least(self, 1, "num_layers")
        _at_least(self, 0, "char_vocab_size")


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
    "TaggerConfig",
    "TaggerTrainConfig",
    "TAGGER_PRESETS",
    "tagger_preset",
]
