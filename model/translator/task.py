"""The translator's entry in the registry of kinds (model/tasks.py)."""

from __future__ import annotations

from model.kind import Task
from model.translator.config import TranslatorConfig
from model.translator.network import Translator
from model.translator.predictor import TranslatorModel

TASK = Task(
    name="translator",
    artifact_task="translation",
    network_config=TranslatorConfig,
    network=Translator,
    predictor=TranslatorModel,
    trainer="model.translator.train",
    cli="model.translator.cli",
    default_artifact="artifacts/translator",
    builtin_data="multi30k",
)
