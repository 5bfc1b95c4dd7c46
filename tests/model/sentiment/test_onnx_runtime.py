"""model/sentiment/onnx_runtime.py: the ONNX Runtime classifier answers what torch answers, for every cell and pooling,
at any batch and length (the graph's axes are dynamic), padding never reaching the cells; a graph shipped in the
artifact is served without an export, and refused when it is not the weights' own."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from model.artifacts import ArtifactError
from model.config import CELLS
from model.sentiment import onnx_runtime
from model.sentiment.config import POOLINGS
from model.sentiment.network import SentimentClassifier
from model.sentiment.predictor import load_sentiment
from tests.conftest import Trained
from tests.model.sentiment.test_network import OTHERS, SENTENCE, classifier, padded

ort = pytest.importorskip("onnxruntime", reason="the optional onnx extra")

from model.sentiment.onnx_runtime import (  # noqa: E402
    EXAMPLE,
    GRAPH,
    GRAPH_DATA,
    OnnxClassifier,
    OnnxRunner,
    export,
    graph_files,
    quantize,
)

BATCHES = [[SENTENCE], [OTHERS[0], SENTENCE, OTHERS[1]], [[4], [3, 2], list(range(1, 20)) * 3]]


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("cell", CELLS)
def test_onnx_equals_torch(cell: str, pooling: str) -> None:
    net = classifier(cell, pooling, bidirectional=True, ensemble=2)
    runner = OnnxClassifier(net, threads=1)
    for seqs in BATCHES:  # other batch sizes and lengths than the export's example
        ids, lengths = padded(seqs)
        torch.testing.assert_close(runner.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", CELLS)
def test_onnx_equals_torch_with_the_bag_and_weighted_parts(cell: str) -> None:
    net = classifier(cell, "maxmean", bidirectional=True, bag=True, weighted=True)
    runner = OnnxClassifier(net, threads=1)
    for seqs in [*BATCHES, [[9]]]:  # a one-word text has no word pairs
        ids, lengths = padded(seqs)
        torch.testing.assert_close(runner.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)


def test_the_one_thread_session_answers_what_the_others_do() -> None:
    net = classifier("lstm", "maxmean", bidirectional=True)
    runner = OnnxClassifier(net, threads=2)
    for seqs in BATCHES:
        ids, lengths = padded(seqs)
        torch.testing.assert_close(runner.one_thread.infer(ids, lengths), runner.infer(ids, lengths), atol=1e-6, rtol=0)
    assert runner.one_thread is not runner
    single = OnnxClassifier(net, threads=1)
    assert single.one_thread is single  # no second session when there is one thread anyway


def test_padding_never_reaches_the_onnx_cells() -> None:
    runner = OnnxClassifier(classifier("lstm", "maxmean", bidirectional=True), threads=2)
    alone = runner.infer(*padded([SENTENCE]))
    odd_padding = runner.infer(*padded([OTHERS[0], SENTENCE, OTHERS[1]], pad_value=17))
    torch.testing.assert_close(odd_padding[1], alone[0], atol=1e-5, rtol=0)


def test_int8_onnx_stays_close_to_float32() -> None:
    pytest.importorskip("onnx")
    net = classifier("lstm", "maxmean", bidirectional=True, num_layers=2)
    runner = OnnxClassifier(net, threads=1, int8=True)
    ids, lengths = padded(BATCHES[1])
    quantized = runner.infer(ids, lengths).exp()
    assert quantized.shape == (3, 3)
    torch.testing.assert_close(quantized.sum(-1), torch.ones(3), atol=1e-5, rtol=0)  # still probabilities
    torch.testing.assert_close(quantized, net.infer(ids, lengths).exp(), atol=0.05, rtol=0)
    served = quantize(export(net, EXAMPLE))  # what OnnxClassifier(int8=True) builds its session from
    ops = {node.op_type for node in __import__("onnx").load_from_string(served).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "MatMulInteger" in ops  # the layers really are int8


def test_export_drops_only_the_known_harmless_warnings(capfd: pytest.CaptureFixture[str]) -> None:
    import os

    from model.sentiment.onnx_runtime import _without_harmless_export_warnings, export

    export(classifier("lstm", "maxmean", bidirectional=True), padded([SENTENCE]))
    assert "PackPadded" not in capfd.readouterr().err  # what the exporter prints for every packed sequence
    with _without_harmless_export_warnings():
        os.write(2, b"[W] shape inference of prim::PackPadded type is missing\nanything else\n")
    assert capfd.readouterr().err == "anything else\n"  # other output on stderr still gets through


def _no_export(*args: object) -> bytes:
    raise AssertionError("exported although the artifact has its graph")


def test_a_shipped_graph_is_served_without_an_export(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    net = classifier("gru", "maxmean", bidirectional=True, ensemble=2)
    files = graph_files(net)  # what the trainer writes into the artifact
    assert list(files) == [GRAPH, GRAPH_DATA]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.setattr(onnx_runtime, "export", _no_export)
    runner = OnnxClassifier(net, threads=2, graph=tmp_path / GRAPH)  # as the service passes it: the file
    for seqs in BATCHES:
        ids, lengths = padded(seqs)
        torch.testing.assert_close(runner.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)
        torch.testing.assert_close(runner.one_thread.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)


def test_a_shipped_graphs_weights_are_mapped_from_their_file_not_parsed_into_it(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    small = classifier("lstm", "maxmean", bidirectional=True, bag=True, weighted=True)
    net = SentimentClassifier(dataclasses.replace(small.config, vocab_size=4000, embedding_dim=32)).eval()
    files = graph_files(net)
    weights = sum(p.numel() * p.element_size() for p in net.parameters())  # 0.5 MB, most in the embedding
    assert len(files[GRAPH]) < weights / 10 and len(files[GRAPH_DATA]) > weights * 0.9  # the weights: the data file
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    runner = OnnxClassifier(net, threads=2, graph=tmp_path / GRAPH)
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: both sessions read the weights through a mapping of the file, not a copy of it
        mapped = [line for line in maps.read_text().splitlines() if line.endswith(str(tmp_path / GRAPH_DATA))]
        assert mapped, "the sessions read the weights into memory of their own"
    ids, lengths = padded(BATCHES[1])
    torch.testing.assert_close(runner.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)
    int8 = OnnxClassifier(net, threads=1, int8=True, graph=tmp_path / GRAPH)  # quantized with the file's weights
    torch.testing.assert_close(int8.infer(ids, lengths).exp(), net.infer(ids, lengths).exp(), atol=0.05, rtol=0)


def test_a_graph_with_its_weights_inside_still_loads(tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    net = classifier("gru", "maxmean", bidirectional=True)
    (tmp_path / GRAPH).write_bytes(export(net, EXAMPLE))  # an artifact written before the weights moved out
    runner = OnnxClassifier(net, threads=2, graph=tmp_path / GRAPH)
    ids, lengths = padded(BATCHES[1])
    torch.testing.assert_close(runner.infer(ids, lengths), net.infer(ids, lengths), atol=1e-5, rtol=0)


def test_a_graph_that_is_not_the_weights_own_is_refused() -> None:
    pytest.importorskip("onnx")
    net = classifier("lstm", "maxmean", bidirectional=True)
    other = classifier("lstm", "maxmean", bidirectional=True)
    with torch.no_grad():
        for param in other.parameters():
            param.add_(0.05)
    with pytest.raises(ArtifactError, match=r"model.onnx does not answer what the weights do: .* differ by"):
        OnnxClassifier(net, graph=export(other, EXAMPLE))
    with pytest.raises(ArtifactError, match="model.onnx does not fit this classifier's weights"):
        two_labels = SentimentClassifier(dataclasses.replace(net.config, num_classes=2)).eval()
        OnnxClassifier(net, graph=export(two_labels, EXAMPLE))  # log-probabilities of another shape
    with pytest.raises(ArtifactError, match="model.onnx cannot be loaded by ONNX Runtime"):
        OnnxClassifier(net, graph=b"not an onnx model")


def test_without_the_onnx_package_the_trainer_writes_no_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = onnx_runtime.importlib.util.find_spec
    monkeypatch.setattr(
        onnx_runtime.importlib.util, "find_spec", lambda name: None if name == "onnx" else find_spec(name)
    )
    assert graph_files(classifier("lstm", "maxmean", bidirectional=True)) == {}


def _modelled(lengths: list[int], sizes: list[int]) -> float:
    cost, start = 0.0, 0
    for size in sizes:
        cost += OnnxRunner.RUN_COST + lengths[start + size - 1] * (OnnxRunner.STEP_COST + size)
        start += size
    return cost


def _compositions(n: int) -> list[list[int]]:
    if n == 0:
        return [[]]
    return [[first, *rest] for first in range(1, n + 1) for rest in _compositions(n - first)]


def test_split_finds_the_cheapest_sizes_the_cost_model_knows() -> None:
    runner = OnnxRunner(session=None)
    rng = random.Random(0)
    for n in range(1, 9):
        lengths = sorted(rng.randint(1, 60) for _ in range(n))
        sizes = runner.split(lengths)
        assert sum(sizes) == n and all(size >= 1 for size in sizes)
        best = min(_modelled(lengths, c) for c in _compositions(n))
        assert _modelled(lengths, sizes) == pytest.approx(best)  # the exhaustive optimum
    assert all(size <= runner.most for size in runner.split([5] * 500))
    assert runner.split([2, 2, 2, 2, 90]) == [4, 1]  # a long text is not padded onto the short ones
    assert runner.split([]) == []


def test_texts_are_batched_by_token_length_and_answered_in_their_order(trained: Trained) -> None:
    model = load_sentiment(trained.path)
    model.runner = runner = OnnxClassifier(model.network, threads=1, graph=model.artifact.file(GRAPH))
    texts = ["good", "a long and winding review " * 12, "bad film", "dull " * 30, "fine", "ok then", "great"]
    chunks = model.chunks(texts)
    lengths = [int(lens.max()) for _, _, lens in chunks]
    assert lengths == sorted(lengths) and len(chunks) > 1  # neighbouring lengths together, the long ones apart
    every = sorted(int(n) for _, _, lens in chunks for n in lens)
    assert [len(idx) for idx, _, _ in chunks] == runner.split(every)  # the sizes the cost model picks
    assert sorted(i for idx, _, _ in chunks for i in idx) == list(range(len(texts)))
    alone = torch.cat([model.predict_proba([t]) for t in texts])
    torch.testing.assert_close(model.predict_proba(texts), alone, atol=1e-5, rtol=0)  # in the texts' order
    assert [len(idx) for idx, _, _ in model.chunks(texts, batch_size=3)] == [3, 3, 1]  # a caller's fixed size
