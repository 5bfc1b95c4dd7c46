"""int8 dynamic quantization (`torch.ao.quantization.quantize_dynamic` of the recurrent and linear layers),
measured against float32 in one run: the classifier's SST-2 test accuracy and its time for a batch of 64 dev
sentences; the generator's validation loss and its time for one 512-character forward.

    python bench/quantization.py [--update-readme]

The service keeps float32 unless this shows int8 faster at no real accuracy cost. (The generator streams through
the NumPy `Stepper`, which int8 torch modules would not speed up; its row is for the record.)
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from model.generator.data import load_corpus  # noqa: E402
from model.generator.predictor import load_generator  # noqa: E402
from model.generator.train import evaluate_loss  # noqa: E402
from model.networks import quantize_int8  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402
from model.sentiment.predictor import load_sentiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def median_ms(fn: Callable[[], object], repeats: int = 15) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


@torch.inference_mode()
def classifier(artifact: Path) -> list[dict[str, Any]]:
    model = load_sentiment(artifact)
    data = load_sst2(None)
    assert data.test is not None
    ids, lengths = model.encode(data.dev.texts[:64])
    targets = torch.tensor([model.labels.index(y) for y in data.test.labels])
    original = model.network
    rows = []
    for name, net in (("float32", original), ("int8", quantize_int8(original))):
        model.network = net  # type: ignore[assignment]
        accuracy = (model.predict_proba(data.test.texts).argmax(-1) == targets).float().mean().item()
        ms = median_ms(functools.partial(net, ids, lengths))
        rows.append({"model": "classifier", "weights": name, "metric": "SST-2 test accuracy", "value": accuracy,
                     "ms": ms, "timed": "64 dev sentences"})  # fmt: skip
    model.network = original
    return rows


@torch.inference_mode()
def generator(artifact: Path) -> list[dict[str, Any]]:
    gen = load_generator(artifact)
    ids = torch.tensor(gen.tokenizer.encode(load_corpus(data="tinyshakespeare").val).ids, dtype=torch.long)
    window = ids[:512][None]
    rows = []
    for name, net in (("float32", gen.network), ("int8", quantize_int8(gen.network))):
        loss = evaluate_loss(net, ids)  # type: ignore[arg-type]  # a quantized copy of the CharRNN
        ms = median_ms(functools.partial(net, window))
        rows.append({"model": "generator", "weights": name, "metric": "val loss (nats/char)", "value": loss,
                     "ms": ms, "timed": "one 512-character forward"})  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentiment", type=Path, default=ROOT / "artifacts" / "sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts" / "generator")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the service runs
    rows = classifier(args.sentiment) + generator(args.generator)
    md = table(
        ["model", "weights", "metric", "value", "ms (median of 15)", "timed"],
        [[r["model"], r["weights"], r["metric"], f"{r['value']:.4f}", f"{r['ms']:.1f}", r["timed"]] for r in rows],
    )
    publish("quantization", {"rows": rows, "markdown": md}, args.update_readme)


if __name__ == "__main__":
    main()
