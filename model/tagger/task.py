"""The tagger's entry in the registry of kinds (model/tasks.py)."""

from __future__ import annotations

from model.kind import Task
from model.tagger.config import TaggerConfig
from model.tagger.network import SequenceTagger
from model.tagger.predictor import TaggerModel

TASK = Task(
    name="tagger",
    artifact_task="tagging",
    network_config=TaggerConfig,
    network=SequenceTagger,
    predictor=TaggerModel,
    trainer="model.tagger.train",
    cli="model.tagger.cli",
    default_artifact="artifacts/tagger",
    builtin_data="ud_english_ewt",
)
