"""The registry of model kinds: for each task, its network config, network, loaded predictor, trainer and
command line. Adding a kind is its own files plus one entry here (and one in app/serving/registry.py).

Training code is named by module path and imported only when used, so the service can read this registry
(which task an artifact holds, which class loads it) without importing the trainers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from model import predictors
from model.artifacts import ArtifactError, load_artifact
from model.config import CharLMConfig, ClassifierConfig, TaggerConfig
from model.networks import CharRNN, SentimentClassifier, SequenceTagger


@dataclass(frozen=True)
class Task:
    name: str  # the CLI's and the service's name: train NAME, RNN_<NAME>_ARTIFACT
    artifact_task: str  # what config.json calls it
    network_config: type  # the architecture dataclass stored in the artifact
    network: type[nn.Module]
    predictor: type  # built from a loaded Artifact
    trainer: str  # module with the training step, evaluation and fit entry point
    cli: str  # module with add_train(sub), train(args), evaluate(args), show(report) [, predict(args)]
    default_artifact: str
    builtin_data: str  # the data set `train NAME` and `evaluate` use without --train/--test

    def cli_module(self) -> ModuleType:
        return importlib.import_module(self.cli)


TASKS: dict[str, Task] = {
    "sentiment": Task(
        "sentiment", "sentiment", ClassifierConfig, SentimentClassifier, predictors.SentimentModel,
        "model.train_sentiment", "model.cli_sentiment", "artifacts/sentiment", "sst2",
    ),
    "generator": Task(
        "generator", "generation", CharLMConfig, CharRNN, predictors.GeneratorModel,
        "model.train_generator", "model.cli_generator", "artifacts/generator", "tinyshakespeare",
    ),
    "tagger": Task(
        "tagger", "tagging", TaggerConfig, SequenceTagger, predictors.TaggerModel,
        "model.train_tagger", "model.cli_tagger", "artifacts/tagger", "ud_english_ewt",
    ),
}  # fmt: skip


def by_artifact_task(artifact_task: str) -> Task:
    for task in TASKS.values():
        if task.artifact_task == artifact_task:
            return task
    raise ArtifactError(f"no model kind reads artifacts of task {artifact_task!r}; known: {sorted(TASKS)}")


def load_model(path: str | Path, name: str | None = None) -> Any:
    """Load and verify an artifact directory as the predictor of its task; with `name`, insist on that task."""
    artifact = load_artifact(path)
    task = by_artifact_task(artifact.task)
    if name is not None and task.name != name:
        raise ArtifactError(f"{path} holds a {task.name} model, expected a {name} model")
    return task.predictor(artifact)
