"""An ONNX Runtime session of a graph (the classifier's: model/sentiment/onnx_runtime.py), on the options the
service runs it with. Imports nothing of torch or of a kind, so the service's forward process
(app/serving/forward_process.py) loads only this module and ONNX Runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def open_session(model: bytes | str | Path, threads: int) -> Any:
    """A CPU session of `model` (a serialized graph, or a graph's file with its external data beside it) on
    `threads` intra-op threads, run in order, logging errors only."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only
    # idle pool threads sleep instead of spinning: spinning took the core the event loop and the generator need
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
