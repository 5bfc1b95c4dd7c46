"""The generator's entry in the registry of kinds (model/tasks.py)."""

from __future__ import annotations

from model.generator.config import CharLMConfig
from model.generator.network import CharRNN
from model.generator.predictor import GeneratorModel
from model.kind import Task

TASK = Task(
    name="generator",
    artifact_task="generation",
    network_config=CharLMConfig,
    network=CharRNN,
    predictor=GeneratorModel,
    trainer="model.generator.train",
    cli="model.generator.cli",
    default_artifact="artifacts/generator",
    builtin_data="tinyshakespeare",
)
