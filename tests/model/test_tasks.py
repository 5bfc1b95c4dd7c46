"""model/tasks.py: one registry of model kinds; the CLI, the artifact's task and the predictors all go through it."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from model.artifacts import ArtifactError
from model.tagger.config import TaggerTrainConfig
from model.tagger.conll import TaggedCorpus, TaggedSentence
from model.tagger.predictor import TaggerModel
from model.tasks import TASKS, by_artifact_task, load_model
from tests.conftest import Trained
from tests.helpers import tagged_sentences


def test_every_kind_names_its_parts() -> None:
    assert list(TASKS) == ["sentiment", "generator", "tagger", "translator"]
    for name, task in TASKS.items():
        assert task.name == name and dataclasses.is_dataclass(task.network_config)
        cli = task.cli_module()
        assert all(callable(getattr(cli, f)) for f in ("add_train", "train", "evaluate", "show"))
        assert callable(getattr(importlib.import_module(task.trainer), f"train_{name}"))
        assert by_artifact_task(task.artifact_task) is task


def test_an_unknown_task_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(ArtifactError, match="no model kind reads artifacts of task 'parsing'"):
        by_artifact_task("parsing")


def test_load_model_builds_the_artifacts_predictor(tmp_path: Path, trained: Trained) -> None:
    from model.tagger.train import train_tagger

    rows = [TaggedSentence(t, g) for t, g in tagged_sentences(24)]
    cfg = TaggerTrainConfig(
        epochs=1, min_steps=0, batch_size=8, embedding_dim=8, char_hidden=4, hidden_size=8, threads=1
    )
    train_tagger(cfg, TaggedCorpus("tiny", rows[:16], rows[16:], None, {}), tmp_path / "tagger")
    assert isinstance(load_model(tmp_path / "tagger"), TaggerModel)
    assert isinstance(load_model(tmp_path / "tagger", "tagger"), TaggerModel)
    with pytest.raises(ArtifactError, match="holds a sentiment model, expected a tagger model"):
        load_model(trained.path, "tagger")
