"""The generator's configs: its network config (stored in the artifact) and its training config with named
presets (what `python -m model train generator` resolves from a preset plus command-line overrides)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from model.config import CELLS, Cell, apply_preset, at_least, check_training, network_config


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


@dataclass
class GeneratorTrainConfig:
    """How to train the character model."""

    # the default preset, chosen by bench/generator_quality.py --sections ablation (docs/results.md): a GRU, the design
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
        check_training(self)
        at_least(self, 1, "seq_len", "embedding_dim", "hidden_size", "num_layers")
        at_least(self, 0, "min_steps")
        if self.batching not in ("stateful", "random"):
            raise ValueError(f"batching must be stateful or random, got {self.batching!r}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")

    def network(self, vocab_size: int) -> CharLMConfig:
        return network_config(CharLMConfig, self, vocab_size=vocab_size)


GENERATOR_PRESETS: dict[str, dict[str, Any]] = {
    "quick": {"epochs": 1, "hidden_size": 256, "min_steps": 0},
    "default": {},
    # the default's recipe with an LSTM cell (PyTorch runs its CPU LSTM through oneDNN): its row in the ablation
    "lstm": {"cell": "lstm"},
}


def generator_preset(name: str) -> GeneratorTrainConfig:
    return apply_preset(GeneratorTrainConfig(), GENERATOR_PRESETS, name)
