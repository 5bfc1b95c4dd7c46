"""The classifier's configs: its network config (stored in the artifact) and its training config with named
presets (what `python -m model train sentiment` resolves from a preset plus command-line overrides)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from model.config import CELLS, Cell, apply_preset, at_least, check_training, network_config

Pooling = Literal["max", "mean", "maxmean", "last"]
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
        check_training(self)
        if self.tokenizer not in ("word", "wordpiece", "bpe"):
            raise ValueError(f"tokenizer must be word, wordpiece or bpe, got {self.tokenizer!r}")
        at_least(self, 1, "ensemble", "max_length", "embedding_dim", "hidden_size", "num_layers", "distill_epochs")
        at_least(self, 0, "pieces", "min_steps", "augment")
        at_least(self, 1, "bag_buckets")
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
        return network_config(ClassifierConfig, self, vocab_size=vocab_size, num_classes=num_classes)

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


def sentiment_preset(name: str) -> SentimentTrainConfig:
    return apply_preset(SentimentTrainConfig(), SENTIMENT_PRESETS, name)
