"""The registry of model kinds, and the only list of them: each kind declares its entry in its own package
(model/<kind>/task.py: network config, network, predictor, trainer, command line), and everything else (the CLI's
subcommands, the artifact writer's tasks, the service's engines) is derived from this dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model.artifacts import ArtifactError, load_artifact
from model.generator.task import TASK as GENERATOR
from model.kind import Task
from model.sentiment.task import TASK as SENTIMENT
from model.tagger.task import TASK as TAGGER
from model.translator.task import TASK as TRANSLATOR

TASKS: dict[str, Task] = {task.name: task for task in (SENTIMENT, GENERATOR, TAGGER, TRANSLATOR)}


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
