"""The classifier's forward process (app/serving/forward_process.py): the same answers as the model thread, no torch
in the child, a child that dies leaves the engine answering from the model thread, and no child outlives its
engine."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from app.serving import forward_process
from app.serving.forward_process import Forked, ForwardProcess, ForwardProcessExited
from app.serving.metrics import Metrics
from app.serving.sentiment import ClassifierEngine, feeds
from model.sentiment.predictor import SentimentModel, load_sentiment
from tests.app.conftest import REPO, Artifacts, ClientFactory
from tests.app.test_serving import assert_same, texts

pytest.importorskip("onnxruntime", reason="the optional onnx extra")
from model.sentiment.onnx_runtime import EXAMPLE, GRAPH, OnnxClassifier, export  # noqa: E402


def onnx_model(artifacts: Artifacts) -> SentimentModel:
    model = load_sentiment(artifacts.sentiment)
    model.runner = OnnxClassifier(model.network, threads=2, graph=model.artifact.file(GRAPH))
    return model


def test_the_process_answers_what_the_model_thread_does_from_a_file_or_bytes(artifacts: Artifacts) -> None:
    model = onnx_model(artifacts)
    forwards = feeds(model.chunks(texts(40)))
    runner = model.runner
    assert isinstance(runner, OnnxClassifier)
    expected = [out.numpy() for out in model.infer(model.chunks(texts(40)), None, runner.one_thread)]
    # the artifact's file (its weights in the data file beside it), and a serialized graph (the form int8 serves in)
    for source in (artifacts.sentiment / GRAPH, export(model.network, EXAMPLE)):
        process = ForwardProcess(source)
        try:
            got = process.run_now(forwards)
        finally:
            process.close()
        assert process.proc.returncode == 0  # it ended when its socket closed
        assert len(got) == len(expected) >= 2
        for a, b in zip(got, expected, strict=True):
            np.testing.assert_array_equal(a, b)  # the same graph on the same options: the same bits


def test_the_child_imports_neither_torch_nor_the_service() -> None:
    """What keeps the process small: ONNX Runtime alone, not the service's torch and FastAPI."""
    heavy = ("torch", "fastapi", "app.main", "model.sentiment.predictor")
    code = (f"import sys, app.serving.forward_process, model.onnx_session; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_graph_that_does_not_open_fails_the_start_naming_why(tmp_path: Path) -> None:
    bad = tmp_path / GRAPH
    bad.write_bytes(b"not a graph")
    with pytest.raises(ForwardProcessExited, match="could not open the graph"):
        ForwardProcess(bad)


def test_the_engine_serves_single_texts_from_the_process_and_batches_from_its_thread(artifacts: Artifacts) -> None:
    reference = load_sentiment(artifacts.sentiment)
    model = onnx_model(artifacts)
    used: list[str] = []
    infer = model.infer

    def counted(*args: Any) -> Any:
        used.append("thread")
        return infer(*args)

    model.infer = counted  # type: ignore[method-assign,assignment]
    batch = texts(12)

    async def main() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str], int]:
        engine = ClassifierEngine(model, max_batch=64, max_wait_ms=20, metrics=Metrics(), forward_process=True)
        engine.warmup()
        assert engine.process is not None and engine.serving["forwards"] == "process"
        used.clear()  # the warm-up's own forwards
        await engine.start()
        try:
            singles = [a for [a] in await asyncio.gather(*(engine.classify([t]) for t in batch))]
            in_thread = list(used)
            together = await engine.classify(batch)
            used.clear()
            await engine.classify(batch[:1])  # one text alone: the loop has nothing to hold the GIL for
            assert used == ["thread"]
        finally:
            await engine.stop()
        return singles, together, in_thread, engine.process.proc.returncode

    singles, together, in_thread, code = asyncio.run(main())
    assert in_thread == []  # the single texts never reached the model thread
    for text, a, b in zip(batch, singles, together, strict=True):
        assert_same(a, reference.predict([text])[0], tol=1e-5)
        assert_same(b, a, tol=1e-5)
    assert code == 0  # stop() ended the child


def test_when_the_process_dies_the_model_thread_answers(artifacts: Artifacts) -> None:
    reference = load_sentiment(artifacts.sentiment)
    batch = texts(12)

    async def main() -> tuple[list[list[dict[str, Any]]], str]:
        engine = ClassifierEngine(onnx_model(artifacts), max_batch=64, max_wait_ms=20, metrics=Metrics(),
                                  forward_process=True)  # fmt: skip
        engine.warmup()
        await engine.start()
        rounds = []
        try:
            assert engine.process is not None
            rounds.append([a for [a] in await asyncio.gather(*(engine.classify([t]) for t in batch))])
            os.kill(engine.process.pid, signal.SIGKILL)
            engine.process.proc.wait()
            for _ in range(2):  # the first may find the child gone before the loop hears of it
                rounds.append([a for [a] in await asyncio.gather(*(engine.classify([t]) for t in batch))])
        finally:
            await engine.stop()
        return rounds, engine.serving["forwards"]

    rounds, forwards = asyncio.run(main())
    for answers in rounds:
        for text, got in zip(batch, answers, strict=True):
            assert_same(got, reference.predict([text])[0], tol=1e-5)
    assert forwards == "thread"  # what /models reports


def test_off_or_on_torch_there_is_no_process(make_client: ClientFactory) -> None:
    for settings in ({"runtime": "onnx", "forward_process": False}, {"runtime": "torch"}):
        client = make_client(**settings)
        assert client.get("/models").json()[0]["serving"]["forwards"] == "thread"
        assert client.app.state.engines["sentiment"].process is None  # type: ignore[attr-defined]
        assert client.post("/sentiment", json={"text": "dull"}).status_code == 200


def test_a_process_that_answers_otherwise_is_not_used(artifacts: Artifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    """The warm-up compares the child's answers with the model thread's one-thread session: any difference (another
    ONNX Runtime, say) and the engine serves from its thread, ending the child."""
    run_now = ForwardProcess.run_now
    started: list[ForwardProcess] = []

    def off_by_a_bit(self: ForwardProcess, forwards: list[Any]) -> list[Any]:
        started.append(self)
        return [out + 1e-3 for out in run_now(self, forwards)]

    monkeypatch.setattr(ForwardProcess, "run_now", off_by_a_bit)
    engine = ClassifierEngine(onnx_model(artifacts), max_batch=64, max_wait_ms=0, metrics=Metrics(),
                              forward_process=True)  # fmt: skip
    engine.warmup()
    assert engine.process is None and engine.serving["forwards"] == "thread"
    assert [p.proc.returncode for p in started] == [0]  # started, then ended


def test_an_int8_graph_runs_in_the_process_too(artifacts: Artifacts) -> None:
    """RNN_QUANTIZE=int8: the quantized graph exists only in memory, so the child is sent its bytes; the warm-up
    finds the child's answers equal to the one-thread int8 session's, or the engine would not use it."""
    pytest.importorskip("onnx", reason="int8 quantization needs the onnx package")
    model = load_sentiment(artifacts.sentiment)
    model.runner = OnnxClassifier(model.network, threads=2, int8=True, graph=model.artifact.file(GRAPH))
    engine = ClassifierEngine(model, max_batch=64, max_wait_ms=0, metrics=Metrics(), forward_process=True)
    engine.warmup()
    try:
        assert engine.process is not None and engine.serving["forwards"] == "process"
        assert isinstance(model.runner.source, bytes)
    finally:
        asyncio.run(engine.stop())


def test_processes_fork_from_one_zygote_which_is_replaced_when_it_dies(artifacts: Artifacts) -> None:
    model = onnx_model(artifacts)
    forwards = feeds(model.chunks(texts(12)))
    graph = artifacts.sentiment / GRAPH
    started = [ForwardProcess(graph), ForwardProcess(graph)]
    parent = forward_process.zygote()
    try:
        assert parent is not None
        for process in started:  # forked, not a new interpreter each: the zygote's children
            assert isinstance(process.proc, Forked) and psutil.Process(process.pid).ppid() == parent.proc.pid
        first, second = (p.run_now(forwards) for p in started)
        for a, b in zip(first, second, strict=True):
            np.testing.assert_array_equal(a, b)
    finally:
        for process in started:
            process.close()
    assert [p.proc.returncode for p in started] == [0, 0]  # each ended when its socket closed
    os.kill(parent.proc.pid, signal.SIGKILL)
    parent.proc.wait()
    again = ForwardProcess(graph)  # a new zygote forks it
    try:
        assert isinstance(again.proc, Forked) and forward_process.zygote() is not parent
        np.testing.assert_array_equal(again.run_now(forwards)[0], first[0])
    finally:
        again.close()
    alone = ForwardProcess(graph, fork=False)  # and without one, a new interpreter
    try:
        assert isinstance(alone.proc, subprocess.Popen) and psutil.Process(alone.pid).ppid() == os.getpid()
        np.testing.assert_array_equal(alone.run_now(forwards)[0], first[0])
    finally:
        alone.close()
    assert alone.proc.returncode == 0
