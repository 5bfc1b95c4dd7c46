"""The engines by model kind: the service's half of the registry in model/tasks.py, under the same keys.

A kind's entry builds its engine around a loaded predictor (model/tasks.py's `Task.predictor`). Adding a kind
is its engine module, its routes, its `<kind>_artifact` setting and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from app.config import Settings
from app.serving.generator import GeneratorEngine
from app.serving.metrics import Metrics
from app.serving.sentiment import ClassifierEngine
from app.serving.tagger import TaggerEngine
from app.serving.translator import TranslatorEngine
from model.artifacts import Artifact
from model.generator.predictor import GeneratorModel
from model.networks import quantize_int8
from model.sentiment import onnx_runtime
from model.sentiment.predictor import SentimentModel
from model.tagger.predictor import TaggerModel
from model.translator.predictor import TranslatorModel


class Predictor(Protocol):
    @property
    def artifact(self) -> Artifact: ...


class Engine(Protocol):
    """What the app does with every engine: load and warm it up (in a worker thread), start it on the loop,
    list it in /models, drain it on a reload and stop it at shut-down."""

    name: str  # what requests call it by
    kind: str  # its key in ENGINES (and in model/tasks.py's TASKS)

    @property
    def serving(self) -> dict[str, Any]: ...  # how this process runs it, for /models

    version: int | None  # the version serving, when its path is a directory of versions

    @property
    def model(self) -> Predictor: ...

    def warmup(self) -> None: ...

    async def start(self) -> None: ...

    async def drain(self, timeout: float) -> None: ...

    async def stop(self) -> None: ...


def runtime(settings: Settings) -> str:
    """The classifier runtime RNN_RUNTIME asks for; `auto` picks ONNX Runtime when it is installed."""
    if settings.runtime == "auto":
        return "onnx" if onnx_runtime.available() else "torch"
    return settings.runtime


def classifier(name: str, model: SentimentModel, settings: Settings, metrics: Metrics) -> ClassifierEngine:
    int8, kind = settings.quantize == "int8", runtime(settings)
    if kind == "onnx":
        graph = model.artifact.file(onnx_runtime.GRAPH)  # the trainer's export: loading does not export again
        model.runner = onnx_runtime.OnnxClassifier(model.network, settings.onnx_threads, int8=int8, graph=graph)
    elif int8:
        model.runner = quantize_int8(model.network)  # type: ignore[assignment]  # an int8 copy
    serving = {"runtime": kind, "quantize": settings.quantize}
    return ClassifierEngine(model, settings.batch_max_size, settings.batch_max_wait_ms, metrics,
                            settings.ensemble_threads, serving, name=name,
                            forward_process=settings.forward_process)  # fmt: skip


def generator(name: str, model: GeneratorModel, settings: Settings, metrics: Metrics) -> GeneratorEngine:
    return GeneratorEngine(model, settings.max_streams, metrics, name=name)


def tagger(name: str, model: TaggerModel, settings: Settings, metrics: Metrics) -> TaggerEngine:
    if runtime(settings) != "torch":
        # torch serves only the tagger then (the classifier runs on ONNX Runtime, the generator on NumPy): without
        # oneDNN its LSTMs tag single sentences faster, and memory stops growing with every new batch shape, for
        # which oneDNN would build and cache kernels. The switch is process-wide, and the classifier's eager LSTM
        # is faster with oneDNN, so with RNN_RUNTIME=torch it stays on.
        torch.backends.mkldnn.set_flags(False)  # type: ignore[no-untyped-call]
    return TaggerEngine(model, settings.batch_max_size, settings.batch_max_wait_ms, metrics, name=name)


def translator(name: str, model: TranslatorModel, settings: Settings, metrics: Metrics) -> TranslatorEngine:
    return TranslatorEngine(model, settings.batch_max_size, settings.batch_max_wait_ms, metrics, name=name)


# the predictor each builder takes is the one model/tasks.py loads for that key
ENGINES: dict[str, Callable[[str, Any, Settings, Metrics], Engine]] = {
    "sentiment": classifier,
    "generator": generator,
    "tagger": tagger,
    "translator": translator,
}
