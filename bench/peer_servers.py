"""The serving frameworks bench/peers.py measures this service against, each serving the default classifier artifact
through the project's own loading code, on the service's runtime and threads (ONNX Runtime, RNN_ONNX_THREADS and
RNN_TORCH_THREADS at the service's defaults), with the framework's own dynamic batching (at most 64 texts, a 5 ms
window where the framework has one):

    python -m bench.peer_servers mosec --port P       # mosec's Rust front, one Python worker process
    python -m bench.peer_servers litserve --port P    # LitServe: uvicorn API servers, a worker process per API
                                                      # (--fast-queue: ZeroMQ queues instead of multiprocessing's)
    BENTOML_DO_NOT_TRACK=true python -m bentoml serve bench.peer_servers:BentoClassifier --host 127.0.0.1 --port P

Every one listens on 127.0.0.1 only and answers POST /sentiment `{"text": ...}` with what the service answers
(label, score, probabilities) and POST /sentiment/batch `{"texts": [...]}` with `{"results": [...]}`; BentoML's
/sentiment is a batchable API, whose body carries a list (`{"texts": [one text]}`, answered by a list of one
result). LitServe also streams POST /generate/stream `{"prompt", "max_new_tokens", "temperature", "seed"}` from
the default generator, one chunk of plain text per generated piece.
Readiness: mosec answers its first POST /sentiment; LitServe GET /health; BentoML GET /readyz. Access logs are
off in each, as they are in the service under bench/serve.py's settings (RNN_LOG_LEVEL=warning).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import litserve
import mosec
import torch
from mosec import Worker

from app.config import Settings, load_settings
from model.generator.predictor import GeneratorModel, load_generator
from model.generator.sampling import SamplingParams, stream
from model.sentiment.onnx_runtime import GRAPH, OnnxClassifier
from model.sentiment.predictor import SentimentModel, load_sentiment
from model.versions import resolve

ROOT = Path(__file__).resolve().parent.parent
MAX_BATCH = 64  # the service's RNN_BATCH_MAX_SIZE
WINDOW_MS = 5  # how long a framework's batcher waits for a batch to fill
# BentoML has no window: its dispatcher waits as long as its model of the batch's cost says pays, and cancels a
# request (503) that has waited this long; its documentation's examples use a second
BENTO_MAX_LATENCY_MS = 1000


def artifact(kind: str) -> Path:
    """The artifact the service would serve for `kind` (its RNN_<KIND>_ARTIFACT, else artifacts/<kind>)."""
    return Path(os.environ.get(f"RNN_{kind.upper()}_ARTIFACT") or ROOT / "artifacts" / kind)


def service_threads() -> Settings:
    """The service's default settings, with its torch threads applied (torch computes the classifier's softmax and
    the generator's sigmoids, as in the service)."""
    settings = load_settings()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    return settings


def load_classifier() -> SentimentModel:
    """The classifier as the service loads it (app/serving/registry.py): the newest version, on ONNX Runtime with
    the artifact's own graph and the service's default threads."""
    settings = service_threads()
    model = load_sentiment(resolve(artifact("sentiment"), "sentiment"))
    model.runner = OnnxClassifier(model.network, settings.onnx_threads, graph=model.artifact.file(GRAPH))
    model.predict(["warm up"])
    return model


def answer(model: SentimentModel, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One forward over every text of `bodies` (single-text `{"text"}` and batch `{"texts"}` bodies mixed), then
    each body's answer in the service's shape."""
    texts: list[str] = []
    for body in bodies:
        texts += body["texts"] if "texts" in body else [body["text"]]
    results = model.predict(texts)
    out: list[dict[str, Any]] = []
    start = 0
    for body in bodies:
        if "texts" in body:
            out.append({"results": results[start : start + len(body["texts"])]})
            start += len(body["texts"])
        else:
            out.append(results[start])
            start += 1
    return out


class MosecClassifier(Worker):
    """mosec's worker: forward() gets a batch of decoded JSON bodies and returns one answer per body."""

    example = [{"text": "warm up"}]  # a batch that mosec runs through forward() before the worker takes requests

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # mosec's own methods are not annotated
        self.model = load_classifier()

    def forward(self, data: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return answer(self.model, data)


def run_mosec(port: int) -> None:
    """One worker process behind mosec's Rust HTTP front, serving both routes: mosec lets several routes share a
    worker, so the batch route's requests join the same dynamic batches (as the service's batcher takes both)."""
    # mosec parses sys.argv itself (this CLI's arguments would be unknown to it) and reads MOSEC_* first
    os.environ.update(MOSEC_ADDRESS="127.0.0.1", MOSEC_PORT=str(port), MOSEC_LOG_LEVEL="warning")
    sys.argv = sys.argv[:1]
    server = mosec.Server()  # type: ignore[no-untyped-call]
    server.append_worker(MosecClassifier, num=1, max_batch_size=MAX_BATCH, max_wait_time=WINDOW_MS,
                         route=["/sentiment", "/sentiment/batch"])  # fmt: skip
    server.run()  # type: ignore[no-untyped-call]


class LitSingle(litserve.LitAPI):  # type: ignore[misc]  # litserve ships no type information
    """/sentiment: one text a request, batched by LitServe (decode each, batch, predict, unbatch, encode each)."""

    def setup(self, device: str) -> None:
        self.model = load_classifier()

    # decode_request and encode_response stay unannotated: LitServe makes their annotations the FastAPI endpoint's
    # request and response types, and with none it hands over the parsed JSON body and answers the returned JSON
    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return inputs

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return self.model.predict(texts)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return output


class LitBatch(litserve.LitAPI):  # type: ignore[misc]
    """/sentiment/batch: a request is already a batch (64 texts), so LitServe runs one at a time."""

    def setup(self, device: str) -> None:
        self.model = load_classifier()

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        return list(request["texts"])

    def predict(self, texts: list[str]) -> dict[str, Any]:
        return {"results": self.model.predict(texts)}

    def encode_response(self, output):  # type: ignore[no-untyped-def]
        return output


class LitGenerate(litserve.LitAPI):  # type: ignore[misc]
    """/generate/stream: the project's own sampling loop (model.generator.sampling.stream), one chunk per piece."""

    def setup(self, device: str) -> None:
        service_threads()
        self.model: GeneratorModel = load_generator(resolve(artifact("generator"), "generation"))

    def decode_request(self, request):  # type: ignore[no-untyped-def]
        params = SamplingParams(
            max_new_tokens=int(request.get("max_new_tokens", 200)),
            temperature=float(request.get("temperature", 1.0)),
            seed=request.get("seed"),
        )
        return str(request.get("prompt", "")), params

    def predict(self, request: tuple[str, SamplingParams]) -> Iterator[str]:
        prompt, params = request
        for piece, _ in stream(self.model.network, self.model.tokenizer, prompt, params):
            if piece:
                yield piece

    def encode_response(self, pieces):  # type: ignore[no-untyped-def]
        yield from pieces  # LitServe sends each yielded string as one chunk


def run_litserve(port: int, fast_queue: bool) -> None:
    """The three LitAPIs in one LitServer, each with its own worker process (LitServe gives every API its own)."""
    apis = [
        LitSingle(max_batch_size=MAX_BATCH, batch_timeout=WINDOW_MS / 1000, api_path="/sentiment"),
        LitBatch(api_path="/sentiment/batch"),
        LitGenerate(stream=True, api_path="/generate/stream"),
    ]
    # fast_queue (ZeroMQ between the API servers and the workers), which LitServe's documentation recommends for
    # throughput, served fewer /sentiment requests at 64 connections here than its default multiprocessing queues,
    # and no more characters per stream: off unless --fast-queue. num_api_servers stays LitServe's default (one per
    # worker, three), which served more than one API server did.
    server = litserve.LitServer(apis, accelerator="cpu", workers_per_device=1, fast_queue=fast_queue)
    server.run(host="127.0.0.1", port=port, generate_client_file=False, log_level="warning")


def bento_service() -> Any:
    """The BentoML service: /sentiment with BentoML's adaptive batching, /sentiment/batch without. One worker
    (BentoML's default, named here: `workers="cpu_count"` would give each core a process with its own models)."""
    import bentoml

    @bentoml.service(workers=1, logging={"access": {"enabled": False}})
    class BentoClassifier:
        def __init__(self) -> None:
            self.model = load_classifier()

        @bentoml.api(  # type: ignore[untyped-decorator]  # the decorated method's signature is BentoML's schema
            route="/sentiment", batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=BENTO_MAX_LATENCY_MS
        )
        def sentiment(self, texts: list[str]) -> list[dict[str, Any]]:
            return self.model.predict(texts)

        @bentoml.api(route="/sentiment/batch")  # type: ignore[untyped-decorator]
        def batch(self, texts: list[str]) -> dict[str, Any]:
            return {"results": self.model.predict(texts)}

    return BentoClassifier


def __getattr__(name: str) -> Any:
    """`bench.peer_servers:BentoClassifier` for `bentoml serve`, built when BentoML asks for it, so that the other
    frameworks' processes (and their spawned workers, which import this module again) never import BentoML."""
    if name == "BentoClassifier":
        return bento_service()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("framework", choices=["mosec", "litserve"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fast-queue", action="store_true", help="litserve: ZeroMQ queues (measured slower here)")
    args = parser.parse_args()
    if args.framework == "mosec":
        run_mosec(args.port)
    else:
        run_litserve(args.port, fast_queue=args.fast_queue)


if __name__ == "__main__":
    main()
