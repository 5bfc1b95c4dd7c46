"""Training configs: the settings that follow the size of the data."""

from __future__ import annotations

import dataclasses

import pytest

from model.config import SMALL_DATA_WORD_DROPOUT, SentimentTrainConfig, sentiment_preset


def test_small_data_gets_word_dropout_and_larger_data_none() -> None:
    cfg = sentiment_preset("default")
    assert cfg.word_dropout is None  # follows the data
    assert cfg.for_data(8_000).word_dropout == SMALL_DATA_WORD_DROPOUT  # MR-sized: min_steps adds epochs
    assert cfg.for_data(8_000).small_data(8_000)
    assert cfg.for_data(67_349).word_dropout == 0.0  # SST-2's phrases fill 3 epochs of min_steps on their own
    assert not cfg.small_data(67_349)


def test_the_boundary_is_where_min_steps_adds_an_epoch() -> None:
    cfg = SentimentTrainConfig(epochs=3, min_steps=1500, batch_size=128)
    assert cfg.small_data(499 * 128)  # 499 batches an epoch: 1,497 steps in 3 epochs, a fourth is added
    assert not cfg.small_data(500 * 128)  # 500 batches: 1,500 steps in 3 epochs


def test_an_explicit_word_dropout_is_kept_whatever_the_size() -> None:
    assert SentimentTrainConfig(word_dropout=0.3).for_data(100).word_dropout == 0.3
    assert SentimentTrainConfig(word_dropout=0.0).for_data(100).word_dropout == 0.0
    assert sentiment_preset("quick").for_data(100).word_dropout == 0.0  # no min_steps: never "small"


def test_resolving_changes_nothing_else() -> None:
    cfg = sentiment_preset("default")
    resolved = cfg.for_data(100)
    assert dataclasses.replace(resolved, word_dropout=None) == cfg
    assert resolved.for_data(10**6) == resolved  # resolved once: a refit on more data keeps the value


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_word_dropout_outside_0_1_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match=r"word_dropout must be in \[0, 1\)"):
        SentimentTrainConfig(word_dropout=value)
