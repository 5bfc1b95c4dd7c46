"""The classifier's entry in the registry of kinds (model/tasks.py)."""

from __future__ import annotations

from model.kind import Task
from model.sentiment.config import ClassifierConfig
from model.sentiment.network import SentimentClassifier
from model.sentiment.predictor import SentimentModel

TASK = Task(
    name="sentiment",
    artifact_task="sentiment",
    network_config=ClassifierConfig,
    network=SentimentClassifier,
    predictor=SentimentModel,
    trainer="model.sentiment.train",
    cli="model.sentiment.cli",
    default_artifact="artifacts/sentiment",
    builtin_data="sst2",
)
