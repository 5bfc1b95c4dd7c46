"""The classifier exported to ONNX and run by ONNX Runtime (the optional `onnx` extra), for CPU inference.

    runner = OnnxClassifier(model.network, threads=2, int8=False)
    log_probs = runner.infer(ids, lengths)          # what SentimentClassifier.infer returns, to ~1e-5

The export is made from the loaded weights when a model is loaded, so an artifact holds one copy of its weights
(model.safetensors) and the ONNX graph can never be stale. The packed recurrent encoder becomes ONNX LSTM/GRU/RNN
nodes with `sequence_lens`, so padding stays out of the cells as in torch. With `int8`, ONNX Runtime's dynamic
quantization rewrites the recurrent and linear layers (DynamicQuantizeLSTM, MatMulInteger). bench/runtime.py
measures both against torch eager.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch
from torch import nn

OPSET = 17
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
# sequence, although the exported graph is right (tests/model/test_onnx_runtime.py compares it with torch)
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


def quantize(model: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantization of the recurrent and linear layers."""
    _import_ort()
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxUnavailable("int8 ONNX needs the onnx package: pip install 'rnn-nlp-service[onnx]'") from exc
    with tempfile.TemporaryDirectory() as tmp:  # quantize_dynamic works on files
        src, dst = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        src.write_bytes(model)
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

    def __init__(self, session: Any) -> None:
        self.session = session

    def infer(self, ids: torch.Tensor, lengths: torch.Tensor, pool: Executor | None = None) -> torch.Tensor:
        """The ensemble's log-probabilities (B, C). `pool` is ignored: ONNX Runtime runs its own threads."""
        feed = {"ids": ids.numpy(), "lengths": lengths.numpy()}
        [out] = self.session.run(None, feed)
        return torch.from_numpy(out)


class OnnxClassifier(OnnxRunner):
    """The network exported and served on `threads` intra-op threads. With more than one, `one_thread` is a
    second session of the same graph on one thread: the service runs a batch of single-text requests there, so
    the other core stays with the event loop that parses and answers them (app/serving/classifier.py)."""

    def __init__(self, network: nn.Module, threads: int = 1, int8: bool = False) -> None:
        ort = _import_ort()
        model = export(network, EXAMPLE)
        if int8:
            model = quantize(model)
        super().__init__(_session(ort, model, threads))
        self.one_thread: OnnxRunner = self if threads == 1 else OnnxRunner(_session(ort, model, 1))


def _session(ort: Any, model: bytes, threads: int) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    # idle pool threads sleep instead of spinning: spinning took the core the event loop and the generator need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
