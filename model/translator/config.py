"""The translator's configs: its network config (stored in the artifact) and its training config with named
presets (what `python -m model train translator` resolves from a preset plus command-line overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from model.config import CELLS, Cell, apply_preset, at_least, check_training, network_config

Attention = Literal["additive", "multiplicative", "none"]
ATTENTIONS: tuple[str, ...] = ("additive", "multiplicative", "none")
Subwords = Literal["bpe", "unigram"]
SUBWORDS: tuple[str, ...] = ("bpe", "unigram")


@dataclass
class TranslatorTrainConfig:
    """How to train the translator (any pair of languages, line-aligned)."""

    cell: Cell = "gru"
    bidirectional: bool = True  # the encoder reads the source both ways
    attention: Attention = "multiplicative"
    embedding_dim: int = 256
    hidden_size: int = 384
    num_layers: int = 1
    dropout: float = 0.3
    tie_embeddings: bool = True  # the target embedding is the output layer's weight
    # Unigram (Kudo 2018) rather than BPE: +3.6 lower-cased BLEU at the quick size (docs/results.md, the translation
    # ablation's BPE row) and +2.6 at the default one (33.63 with BPE, 36.26: commits 5418ee7 and c73de3a)
    subwords: Subwords = "unigram"
    joint_vocabulary: bool = False  # one subword vocabulary for both sides, or one per side
    vocab_size: int = 5000  # per side (or joint)
    # subwords per side; longer pairs are an error, or skipped with skip_bad_rows. Multi30k's longest pair has 66
    # in a joint Unigram vocabulary of 4,000 pieces
    max_length: int = 128
    skip_bad_rows: bool = False
    label_smoothing: float = 0.1
    # six epochs of 64 pairs at 3e-3: seven took 672 s on these 2 cores, over the 10-minute target (this preset's
    # commit message); what six give: docs/results.md, translation table
    epochs: int = 6
    min_steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup_fraction: float = 0.05
    clip_norm: float = 1.0
    patience: int = 3
    seed: int = 0
    preset: str | None = None  # the preset these settings started from (None: built by hand), for /models
    threads: int = 0
    max_minutes: float | None = None  # a wall-clock cap a user can ask for (--max-minutes); the preset is epochs
    dev_sentences: int = 500  # dev BLEU (greedy) picks the best epoch on at most this many dev pairs
    beam: int = 4  # the beam the evaluation uses and the artifact serves by default
    length_penalty: float = 0.6  # GNMT's alpha (model/translator/decode.py)

    def __post_init__(self) -> None:
        check_training(self)
        at_least(self, 1, "embedding_dim", "hidden_size", "num_layers", "max_length", "dev_sentences")
        at_least(self, 100, "vocab_size")
        if not 1 <= self.beam <= 8:
            raise ValueError(f"beam must be between 1 and 8, got {self.beam}")
        at_least(self, 0, "min_steps")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.subwords not in SUBWORDS:
            raise ValueError(f"subwords must be one of {SUBWORDS}, got {self.subwords!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")

    def network(self, source_vocab_size: int, target_vocab_size: int) -> TranslatorConfig:
        return network_config(
            TranslatorConfig, self, source_vocab_size=source_vocab_size, target_vocab_size=target_vocab_size
        )


TRANSLATOR_PRESETS: dict[str, dict[str, Any]] = {
    # sized for make serve's first versions (issue 31: every route within 3 minutes, trained two at a time on one
    # thread each): GRU 192 and 3,000 pieces a side train in 81 s on one thread where 256 and 4,000 took 100 s, for
    # 21.06 lower-cased BLEU instead of 22.11 (this preset's commit message)
    "quick": {"epochs": 1, "min_steps": 0, "hidden_size": 192, "embedding_dim": 128, "vocab_size": 3000},
    "default": {},
}


def translator_preset(name: str) -> TranslatorTrainConfig:
    return apply_preset(TranslatorTrainConfig(), TRANSLATOR_PRESETS, name)


@dataclass
class TranslatorConfig:
    """Source embedding -> (bi)directional encoder -> bridge to the decoder's first state; target embedding ->
    decoder RNN -> attention over the encoder states (masked at padding) -> tanh(W [state; context]) -> output
    layer (tied to the target embedding when the sizes allow)."""

    source_vocab_size: int
    target_vocab_size: int
    cell: Cell = "gru"
    bidirectional: bool = True
    attention: Attention = "multiplicative"
    embedding_dim: int = 256
    hidden_size: int = 512  # the decoder's; each encoder direction has hidden_size // 2 when bidirectional
    num_layers: int = 1
    dropout: float = 0.3
    tie_embeddings: bool = True
    pad_id: int = 0
    bos_id: int = 2
    eos_id: int = 3

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {self.cell!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        at_least(self, 4, "source_vocab_size", "target_vocab_size")
        at_least(self, 1, "embedding_dim", "num_layers")
        at_least(self, 2, "hidden_size")
        if self.bidirectional and self.hidden_size % 2:
            raise ValueError(f"hidden_size must be even with a bidirectional encoder, got {self.hidden_size}")
