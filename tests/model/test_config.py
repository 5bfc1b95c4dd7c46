"""model/config.py and each kind's config.py: the presets say what is trained (cell, sizes, steps or epochs),
never how long a machine takes, so the same preset and seed give the same model on any machine."""

from __future__ import annotations

from dataclasses import asdict, replace

import pytest

from model.generator.config import GENERATOR_PRESETS, GeneratorTrainConfig, generator_preset
from model.sentiment.config import SENTIMENT_PRESETS, sentiment_preset
from model.tagger.config import TAGGER_PRESETS, TaggerTrainConfig, tagger_preset

PRESETS = [
    *((sentiment_preset, name) for name in SENTIMENT_PRESETS),
    *((generator_preset, name) for name in GENERATOR_PRESETS),
    *((tagger_preset, name) for name in TAGGER_PRESETS),
]


@pytest.mark.parametrize(("preset", "name"), PRESETS)
def test_no_preset_stops_on_the_clock(preset: object, name: str) -> None:
    cfg = preset(name)  # type: ignore[operator]
    assert cfg.max_minutes is None
    assert cfg.epochs >= 1


def test_the_default_generator_is_a_gru_and_the_lstm_preset_differs_only_in_its_cell() -> None:
    default, lstm = generator_preset("default"), generator_preset("lstm")
    assert default.cell == "gru" and default.network(67).cell == "gru"
    assert lstm.cell == "lstm"
    assert asdict(replace(lstm, cell="gru", preset="default")) == asdict(default)
    assert (default.preset, lstm.preset) == ("default", "lstm")  # recorded in the artifact, shown by /models
    assert generator_preset("quick").cell == "gru"


def test_the_generator_default_gives_a_short_text_its_minimum_steps_and_the_quick_preset_none() -> None:
    assert generator_preset("default").min_steps > 0 and generator_preset("lstm").min_steps > 0
    assert generator_preset("quick").min_steps == 0
    with pytest.raises(ValueError, match="min_steps"):
        GeneratorTrainConfig(min_steps=-1)


def test_the_tagger_default_gives_small_data_its_minimum_steps_and_the_quick_preset_none() -> None:
    assert TaggerTrainConfig().min_steps > 0
    assert tagger_preset("quick").min_steps == 0
    with pytest.raises(ValueError, match="min_steps"):
        TaggerTrainConfig(min_steps=-1)


def test_an_unknown_generator_preset_is_refused() -> None:
    with pytest.raises(ValueError, match="preset"):
        generator_preset("huge")
    assert isinstance(generator_preset("default"), GeneratorTrainConfig)
