"""The classifier's batching knobs, measured over HTTP: requests/s and latency of POST /sentiment at a given
concurrency for several RNN_BATCH_MAX_WAIT_MS x RNN_BATCH_MAX_SIZE settings, each against a fresh
`python -m app` on 127.0.0.1, all in one run. Prints JSON; `--update-readme` rewrites the README table.

    python bench/batching.py [--seconds 8] [--concurrency 64] [--waits 0,2,5] [--sizes 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import save_json, table, update_section  # noqa: E402
from bench.service_accuracy import free_port, serve  # noqa: E402
from model.data import load_sst2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


async def load(base: str, texts: list[str], concurrency: int, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        nonlocal errors
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            n = i
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.post("/sentiment", json={"text": texts[n % len(texts)]})
                latencies.append(time.perf_counter() - started)
                errors += r.status_code != 200
                n += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": len(latencies) / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--waits", default="0,2,5")
    parser.add_argument("--sizes", default="64")
    parser.add_argument("--artifact", type=Path, default=ROOT / "artifacts/sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts/generator")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    texts = load_sst2().dev.texts
    runs: list[dict[str, Any]] = []
    for size in (int(x) for x in args.sizes.split(",")):
        for wait in (float(x) for x in args.waits.split(",")):
            port = free_port()
            env = {"RNN_BATCH_MAX_WAIT_MS": str(wait), "RNN_BATCH_MAX_SIZE": str(size)}
            proc = serve(args.artifact, args.generator, port, env)
            try:
                result = asyncio.run(load(f"http://127.0.0.1:{port}", texts, args.concurrency, args.seconds))
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            runs.append({"batch_max_size": size, "batch_max_wait_ms": wait, **result})
            print(json.dumps(runs[-1]), flush=True)
    best = max(runs, key=lambda r: r["requests_per_s"])
    rows = [[r["batch_max_size"], f"{r['batch_max_wait_ms']:g}", f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
             f"{r['p99_ms']:.1f}", r["errors"]] for r in runs]  # fmt: skip
    md = table(["RNN_BATCH_MAX_SIZE", "RNN_BATCH_MAX_WAIT_MS", "req/s", "p50 ms", "p99 ms", "errors"], rows)
    md += (
        f"\n\nPOST /sentiment, {args.concurrency} concurrent clients for {args.seconds:g} s per setting, SST-2 dev "
        f"sentences, one run. Most requests/s: size {best['batch_max_size']}, wait {best['batch_max_wait_ms']:g} ms."
    )
    save_json("batching", {"concurrency": args.concurrency, "seconds": args.seconds, "runs": runs})
    if args.update_readme:
        update_section("batching", md)


if __name__ == "__main__":
    main()
