"""What a kind of model declares about itself, in its package's `task.py`: the entry model/tasks.py lists.

Training code is named by module path and imported only when used, so the service can read the registry (which
task an artifact holds, which class loads it) without importing the trainers.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from torch import nn


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
