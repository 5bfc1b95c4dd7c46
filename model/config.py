"""What every kind's configs share (each kind's own are in model/<kind>/config.py): the recurrent cells, the
checks every training config makes, presets and overrides.

Network configs hold only architecture values; the artifact stores them beside the weights, so serving never
needs them from anywhere else. Training configs are what `python -m model train` resolves from a preset plus
command-line overrides.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

Cell = Literal["lstm", "gru", "rnn"]
CELLS: tuple[str, ...] = ("lstm", "gru", "rnn")
N = TypeVar("N", bound="DataclassInstance")  # a kind's network config dataclass


def network_config(cls: type[N], train: Any, **data_sizes: Any) -> N:
    """The network config: every architecture field the training config shares with it, plus the data's sizes."""
    shared = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(train)} - set(data_sizes)
    return cls(**data_sizes, **{name: getattr(train, name) for name in shared})


def at_least(cfg: Any, low: int, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < low:
            raise ValueError(f"{name} must be >= {low}, got {getattr(cfg, name)}")


def check_training(cfg: Any) -> None:
    """Checks shared by both training configs; the messages name the setting."""
    at_least(cfg, 1, "epochs", "batch_size", "patience")
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


T = TypeVar("T")


def merge(base: T, overrides: dict[str, Any]) -> T:
    """A copy of dataclass `base` with the non-None `overrides` applied; unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(base)}  # type: ignore[arg-type]
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})  # type: ignore[type-var]


def apply_preset(base: T, presets: dict[str, dict[str, Any]], name: str) -> T:
    if name not in presets:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(presets)}")
    return merge(base, {**presets[name], "preset": name})
