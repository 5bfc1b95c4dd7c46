"""The classifier exported to ONNX and run by ONNX Runtime (the optional `onnx` extra), for CPU inference.

    runner = OnnxClassifier(model.network, threads=2, int8=False, graph=artifact.file(GRAPH))
    log_probs = runner.infer(ids, lengths)          # what SentimentClassifier.infer returns, to ~1e-5

The trainer exports the graph and writes it into the artifact (model.onnx, its weights beside it in
model.onnx.data, both in the manifest like every file), so a service loads it and never exports: an export holds
the GIL for about 100 ms in the TorchScript exporter's C++ passes, which in a live swap stops the event loop's
requests for up to 80 ms at a time (bench/swaps.py measures the p99 of requests during swaps). Loading checks that
the graph answers what the weights do; an artifact without a graph (written where the onnx package is missing) is
exported when it loads.
The weights sit outside the graph (ONNX's external data) because ONNX Runtime then maps their file into memory
instead of parsing and copying them: a session's build takes no more memory than the session keeps, where an
embedded graph's build peaks about 6 MB above it, every session, every live swap; and only the pages the texts
reach become resident (bench/swaps.py measures a swap's peak against one copy of the model). A graph with its
weights inside, from an older artifact, loads as before.
The packed recurrent encoder becomes ONNX LSTM/GRU/RNN nodes with `sequence_lens`, so padding stays out of the
cells as in torch. With `int8`, ONNX Runtime's dynamic quantization rewrites the recurrent and linear layers
(DynamicQuantizeLSTM, MatMulInteger). bench/runtime.py measures both against torch eager.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from model.artifacts import ArtifactError
from model.onnx_session import open_session

OPSET = 17
GRAPH = "model.onnx"  # the graph's file in a classifier artifact
GRAPH_DATA = "model.onnx.data"  # its weights (ONNX external data), named in the graph relative to it
AGREE = 1e-4  # how far a shipped graph's log-probabilities may be from the weights' own (float32 rounding)
EXAMPLE = (torch.tensor([[2, 3, 4], [5, 6, 0]]), torch.tensor([3, 2]))  # traced once; every axis is dynamic


class OnnxUnavailable(RuntimeError):
    """onnxruntime (or onnx, for int8) is not installed."""


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxUnavailable("ONNX Runtime is not installed: pip install 'rnn-nlp-service[onnx]'") from exc
    return onnxruntime


def available() -> bool:
    try:
        _import_ort()
    except OnnxUnavailable:
        return False
    return True


# what the TorchScript exporter prints straight to the process's stderr (not through Python) for every packed
# sequence, although the exported graph is right (tests/model/sentiment/test_onnx_runtime.py compares it with torch)
HARMLESS = re.compile(rb"shape inference of prim::(PackPadded|PadPacked) type is missing")


@contextlib.contextmanager
def _without_harmless_export_warnings() -> Iterator[None]:
    """Capture file descriptor 2 while exporting; afterwards pass on every line but the known-harmless ones."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().splitlines(keepends=True):
                if not HARMLESS.search(line):
                    os.write(2, line)


def export(network: nn.Module, example: tuple[torch.Tensor, torch.Tensor]) -> bytes:
    """The network's eval-mode forward(ids, lengths) as an ONNX model with dynamic batch and length axes."""
    buffer = io.BytesIO()
    was_training = network.training
    network.eval()
    try:
        with warnings.catch_warnings(), _without_harmless_export_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(
                network,
                example,
                buffer,  # type: ignore[arg-type]  # a file-like object is accepted (and documented)
                input_names=["ids", "lengths"],
                output_names=["log_probs"],
                dynamic_axes={"ids": {0: "batch", 1: "length"}, "lengths": {0: "batch"}, "log_probs": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,  # the TorchScript exporter knows packed sequences (sequence_lens); dynamo does not
            )
    finally:
        network.train(was_training)
    return buffer.getvalue()


def graph_files(network: nn.Module) -> dict[str, bytes]:
    """The trainer's copy of the network's graph for its artifact: {GRAPH: the graph, GRAPH_DATA: its weights};
    nothing where the onnx package is missing (torch's exporter needs it), and the service then exports when it
    loads."""
    if importlib.util.find_spec("onnx") is None:
        return {}
    import onnx

    graph = onnx.load_from_string(export(network, EXAMPLE))
    with tempfile.TemporaryDirectory() as tmp:  # onnx writes external data only beside a file
        where = Path(tmp) / GRAPH
        # every initializer of 1 KB and more goes to the data file; ONNX Runtime maps it at its offsets
        onnx.save_model(graph, where, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=GRAPH_DATA, size_threshold=1024)  # fmt: skip
        return {GRAPH: where.read_bytes(), GRAPH_DATA: (Path(tmp) / GRAPH_DATA).read_bytes()}


def quantize(model: bytes | Path) -> bytes:
    """ONNX Runtime's dynamic int8 quantization of the recurrent and linear layers, of a serialized model or of
    a graph's file (with its external data beside it)."""
    _import_ort()
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxUnavailable("int8 ONNX needs the onnx package: pip install 'rnn-nlp-service[onnx]'") from exc
    # a file's weights are read in from its data file
    whole = model if isinstance(model, bytes) else onnx.load(model).SerializeToString()
    with tempfile.TemporaryDirectory() as tmp:  # quantize_dynamic works on files
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(whole)
        quantizer_log = logging.getLogger()  # the quantizer advises pre-processing on the root logger
        level = quantizer_log.level
        quantizer_log.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
        finally:
            quantizer_log.setLevel(level)
        onnx.checker.check_model(str(dst))
        return dst.read_bytes()


class OnnxRunner:
    """SentimentClassifier.infer() served by one ONNX Runtime session."""

    # How SentimentModel.chunks sizes the forwards. The graph's LSTMs step every row to its batch's longest text,
    # so a batch of mixed lengths pays for padding, and each forward and each of its steps pays a fixed cost. A
    # forward of B texts padded to T tokens takes about RUN_COST + T * (STEP_COST + B) times one text's step.
    # ONNX Runtime's LSTM times over B = 1..32, T = 5..40 on one thread fit STEP_COST 1.1 and RUN_COST 11; in
    # the service each forward also costs the model thread a GIL hand-off with the busy event loop, and there
    # RUN_COST 40 served /sentiment about 3 % more requests at 16 and 64 connections than fixed batches of 16,
    # and 80 no more (side-by-side wrk runs; bench/runtime.py's batching rows compare the forwards alone, and
    # bench/serve.py's /sentiment rows the service). Torch's packed LSTMs skip the padding: the network takes
    # fixed batches of 256.
    RUN_COST, STEP_COST = 40.0, 1.1
    most = 64  # texts per forward at most

    def __init__(self, session: Any) -> None:
        self.session = session

    def split(self, lengths: Sequence[int]) -> list[int]:
        """Sizes of consecutive batches of texts of these ascending token lengths, with the least modelled
        time: an exact dynamic programme over where each batch ends."""
        n, run, step, most = len(lengths), self.RUN_COST, self.STEP_COST, self.most
        best, cut = [0.0] * (n + 1), [0] * (n + 1)
        for end in range(1, n + 1):
            longest = lengths[end - 1]  # ascending: a batch's last text is its longest
            # cost(start) = best[start] + run + longest * (step + end - start)
            start = max(0, end - most)
            cost = best[start] - longest * start
            for i in range(start + 1, end):  # a plain loop: min() over a generator of pairs took twice as long
                if (c := best[i] - longest * i) < cost:
                    cost, start = c, i
            best[end], cut[end] = cost + run + longest * (step + end), start
        sizes = []
        while n:
            sizes.append(n - cut[n])
            n = cut[n]
        return sizes[::-1]

    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, pool: Executor | None = None) -> torch.Tensor:
        """The ensemble's log-probabilities (B, C). `pool` is ignored: ONNX Runtime runs its own threads."""
        feed = {"ids": ids.numpy(), "lengths": lengths.numpy()}
        [out] = self.session.run(None, feed)
        return torch.from_numpy(out)


class OnnxClassifier(OnnxRunner):
    """The network's graph (`graph`, the artifact's, or else exported now) served on `threads` intra-op threads.
    With more than one, `one_thread` is a second session of the same graph on one thread: the service runs a
    batch of single-text requests there, so the other core stays with the event loop that parses and answers them
    (app/serving/sentiment.py). A `graph` that does not answer what `network` does raises ArtifactError."""

    def __init__(
        self, network: nn.Module, threads: int = 1, int8: bool = False, graph: bytes | Path | None = None
    ) -> None:
        _import_ort()
        model: bytes | Path
        if graph is None:
            model = export(network, EXAMPLE)
            session = open_session(model, threads)
        else:
            model = graph  # a file's path: ONNX Runtime reads it without a copy of its bytes in Python
            try:
                session = open_session(model, threads)
            except Exception as exc:  # ONNX Runtime raises its own classes (InvalidProtobuf, Fail …)
                raise ArtifactError(f"{GRAPH} cannot be loaded by ONNX Runtime: {exc}") from exc
            _check_agrees(OnnxRunner(session), network)
        if int8:
            model = quantize(model)
            session = open_session(model, threads)
        super().__init__(session)
        self.source = model  # the graph its sessions run: the artifact's file, or the serialized (int8) graph
        self.one_thread: OnnxRunner = self if threads == 1 else OnnxRunner(open_session(model, 1))


def _check_agrees(runner: OnnxRunner, network: nn.Module) -> None:
    """A shipped graph must be the weights' own: the same log-probabilities on the export's example batch."""
    with torch.inference_mode():
        expected = network.infer(*EXAMPLE)  # type: ignore[operator]
    try:
        gap = float((runner.infer(*EXAMPLE) - expected).abs().max())
    except Exception as exc:  # ONNX Runtime's own errors: inputs or outputs of another shape
        raise ArtifactError(f"{GRAPH} does not fit this classifier's weights: {exc}") from exc
    if not gap <= AGREE:  # also NaN
        raise ArtifactError(
            f"{GRAPH} does not answer what the weights do: log-probabilities differ by {gap:.3g} "
            f"(at most {AGREE} allowed): the artifact is inconsistent, train it again"
        )
