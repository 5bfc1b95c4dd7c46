"""The classifier's request path in-process, each stage's options side by side in one run:

    python bench/runtime.py [--sentiment artifacts/sentiment --sentiment artifacts/sentiment-ensemble]
                            [--sections runtime,batching] [--update-readme]

  - runtime: torch eager (members one after another, and side by side on 2 threads), torch int8, and the network
    exported to ONNX and run by ONNX Runtime (float32 and int8, 1 and 2 intra-op threads): milliseconds for a
    batch of 64 SST-2 dev sentences (median over 40 batches), sentences/s, SST-2 test accuracy, and the largest
    difference from torch eager's probabilities;
  - batching: ONNX Runtime float32 on one thread (the service's runner for single-text requests), the forwards
    alone for batches of 16, 32, 64 and 256 random SST-2 dev sentences, sorted by length: in fixed batches of 16
    texts against the sizes the runner's cost model picks (`OnnxRunner.split`), microseconds per text;
  - tokenization of those 64 sentences: the `tokenizers` batch call (Rust, parallel) against one call per text;
  - the JSON answer to a 64-text /sentiment/batch: FastAPI's own path (pydantic validates and serializes the
    response model in Rust) against orjson.dumps of the same dict (no validation).

Writes bench/results/runtime.json and runtime_batching.json (the batching section, on the first artifact);
`--update-readme` rewrites their tables in docs/results.md.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from model.networks import quantize_int8  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402
from model.sentiment.predictor import SentimentModel, load_sentiment  # noqa: E402
from model.tokenization import UNK_ID  # noqa: E402
from model.versions import resolve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64


def median_ms(fn: Callable[[list[str]], object], batches: list[list[str]]) -> float:
    fn(batches[0])  # warm-up: first-call allocations
    times = []
    for batch in batches:
        started = time.perf_counter()
        fn(batch)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def runtimes(
    model: SentimentModel, batches: list[list[str]], test: tuple[list[str], list[str]]
) -> list[dict[str, Any]]:
    from model.sentiment.onnx_runtime import OnnxClassifier

    texts, labels = test
    targets = torch.tensor([model.labels.index(y) for y in labels])
    reference = model.predict_proba(texts)
    pool = ThreadPoolExecutor(2)
    variants: list[tuple[str, Any, ThreadPoolExecutor | None]] = [
        ("torch eager, members one after another", model.network, None),
        ("torch eager, members side by side (2 threads)", model.network, pool),
        ("torch int8 (quantize_dynamic)", quantize_int8(model.network), None),
        ("ONNX Runtime float32, 1 thread", OnnxClassifier(model.network, threads=1), None),
        ("ONNX Runtime float32, 2 threads", OnnxClassifier(model.network, threads=2), None),
        ("ONNX Runtime int8, 1 thread", OnnxClassifier(model.network, threads=1, int8=True), None),
        ("ONNX Runtime int8, 2 threads", OnnxClassifier(model.network, threads=2, int8=True), None),
    ]
    if model.config.ensemble == 1:
        variants.pop(1)  # one member: nothing to run side by side
    rows = []
    for name, runner, executor in variants:
        model.runner = runner
        ms = median_ms(lambda b: model.predict_proba(b, pool=executor), batches)  # noqa: B023
        probs = model.predict_proba(texts, pool=executor)
        rows.append({
            "runtime": name,
            "ms_per_64": ms,
            "sentences_per_s": BATCH / ms * 1000,
            "test_accuracy": (probs.argmax(-1) == targets).float().mean().item(),
            "max_prob_diff": (probs - reference).abs().max().item(),
        })  # fmt: skip
        print(rows[-1], flush=True)
    model.runner = model.network
    pool.shutdown()
    return rows


def batching(model: SentimentModel, texts: list[str]) -> list[dict[str, Any]]:
    from model.sentiment.onnx_runtime import OnnxClassifier

    runner = OnnxClassifier(model.network, threads=1)
    model.runner = runner
    rng = random.Random(1)
    rows = []
    for size in (16, 32, 64, 256):
        batches = [rng.sample(texts, size) for _ in range(150)]
        ways = {"fixed batches of 16": [model.chunks(b, 16) for b in batches],
                "the cost model's sizes": [model.chunks(b) for b in batches]}  # fmt: skip
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(5):  # interleaved rounds, medians
            for way, chunked in ways.items():
                started = time.perf_counter()
                for chunks in chunked:
                    model.infer(chunks, None, runner)
                times[way].append(1e6 * (time.perf_counter() - started) / (size * len(batches)))
        rows += [{"texts": size, "way": way, "us_per_text": statistics.median(t)} for way, t in times.items()]
        print(rows[-2:], flush=True)
    model.runner = model.network
    return rows


def tokenization(model: SentimentModel, batches: list[list[str]]) -> list[dict[str, Any]]:
    tok = model.tokenizer

    def one_by_one(texts: list[str]) -> list[list[int]]:
        return [tok.encode(t, add_special_tokens=False).ids[: model.max_length] or [UNK_ID] for t in texts]

    def batched(texts: list[str]) -> list[list[int]]:
        return [e.ids[: model.max_length] or [UNK_ID] for e in tok.encode_batch(texts, add_special_tokens=False)]

    assert one_by_one(batches[0]) == batched(batches[0])
    return [
        {"tokenization": "tokenizers encode_batch (what the service calls)", "ms_per_64": median_ms(batched, batches)},
        {"tokenization": "one encode() per text", "ms_per_64": median_ms(one_by_one, batches)},
    ]


def serialization(model: SentimentModel, batches: list[list[str]]) -> list[dict[str, Any]]:
    import orjson
    from pydantic import TypeAdapter

    from app.schemas import SentimentBatchResponse

    payload = {"results": model.predict(batches[0])}
    adapter = TypeAdapter(SentimentBatchResponse)  # what FastAPI's response field wraps

    def fastapi_path(_: list[str]) -> bytes:  # a route with response_model: validate, then dump in Rust
        return adapter.dump_json(adapter.validate_python(payload), exclude_none=True)

    def orjson_path(_: list[str]) -> bytes:
        return orjson.dumps(payload)

    assert orjson.loads(fastapi_path([])) == orjson.loads(orjson_path([]))
    return [
        {"json": "FastAPI response_model (pydantic, validated; what the service does)",
         "us_per_response": 1000 * median_ms(fastapi_path, batches * 5)},
        {"json": "orjson.dumps, not validated", "us_per_response": 1000 * median_ms(orjson_path, batches * 5)},
    ]  # fmt: skip


def render(report: dict[str, Any]) -> str:
    rows = [[name, r["runtime"], f"{r['ms_per_64']:.1f}", f"{r['sentences_per_s']:,.0f}", f"{r['test_accuracy']:.4f}",
             f"{r['max_prob_diff']:.1e}"]
            for name, one in report["classifiers"].items() for r in one["runtimes"]]  # fmt: skip
    md = table(["classifier", "runtime", "ms per 64 sentences", "sentences/s", "SST-2 test accuracy",
                "largest probability change"], rows)  # fmt: skip
    md += "\n\n" + table(
        ["tokenizing 64 sentences", "ms"], [[r["tokenization"], f"{r['ms_per_64']:.2f}"] for r in report["tokens"]]
    )
    md += "\n\n" + table(
        ["JSON for a 64-result /sentiment/batch answer", "µs"],
        [[r["json"], f"{r['us_per_response']:.0f}"] for r in report["json"]],
    )
    return md


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--sentiment", type=Path, action="append", help="a classifier artifact (repeatable; artifacts/sentiment)"
    )
    parser.add_argument("--sections", default="runtime,batching", help="runtime, batching or both (comma-separated)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the service runs (RNN_TORCH_THREADS=1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    data = load_sst2(None)
    assert data.test is not None
    paths = [resolve(p, "sentiment") for p in args.sentiment or [ROOT / "artifacts" / "sentiment"]]
    if "batching" in args.sections:
        rows = batching(load_sentiment(paths[0]), data.dev.texts)
        md = table(["texts a batch", "forwards", "µs per text"],
                   [[r["texts"], r["way"], f"{r['us_per_text']:.0f}"] for r in rows])  # fmt: skip
        publish("runtime_batching", {"artifact": str(paths[0]), "rows": rows, "markdown": md}, args.update_readme)
    if "runtime" not in args.sections:
        return
    rng = random.Random(0)
    batches = [rng.sample(data.dev.texts, BATCH) for _ in range(40)]
    report: dict[str, Any] = {"classifiers": {}}
    model = None
    for path in paths:
        model = load_sentiment(path)
        name = f"{path.name} ({model.config.ensemble} BiLSTM{'s' if model.config.ensemble > 1 else ''})"
        report["classifiers"][name] = {
            "artifact": str(path),
            "runtimes": runtimes(model, batches, (data.test.texts, data.test.labels)),
        }
    assert model is not None
    report["tokens"] = tokenization(model, batches)
    report["json"] = serialization(model, batches)
    report["markdown"] = render(report)
    publish("runtime", report, args.update_readme)


if __name__ == "__main__":
    main()
