"""A loaded generator: an artifact (model/artifacts.py) turned into the network in eval mode and its tokenizer.
The service and the CLI use it; model/generator/task.py names it."""

from __future__ import annotations

from pathlib import Path

from model.artifacts import Artifact, load_artifact
from model.generator.config import CharLMConfig
from model.generator.network import CharRNN
from model.networks import count_parameters


class GeneratorModel:
    """A loaded character-model artifact: tokenizer + network."""

    def __init__(self, artifact: Artifact) -> None:
        self.artifact = artifact
        self.config = artifact.config.network_config(CharLMConfig)
        self.network = CharRNN(self.config)
        artifact.build(self.network)
        self.tokenizer = artifact.tokenizer

    @property
    def parameters(self) -> int:
        return count_parameters(self.network)


def load_generator(path: str | Path) -> GeneratorModel:
    return GeneratorModel(load_artifact(path, "generation"))
