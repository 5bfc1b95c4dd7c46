"""Soak: steady mixed load against `python -m app` on 127.0.0.1 for a while, reporting errors (must be 0), p99
latency per interval and resident-memory drift (must stay under 5 %).

    python bench/soak.py [--minutes 10] [--interval 30] [--update-readme]

The load: 8 clients in one asyncio process, each looping over POST /sentiment (SST-2 dev sentences),
POST /sentiment/batch (16 sentences), POST /generate (100 characters) and POST /generate/stream (100 characters).
Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from bench.serve import base_env, rss_mb, start  # noqa: E402
from bench.service_accuracy import free_port, stop  # noqa: E402
from model.data import load_sst2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 8


async def soak(url: str, pid: int, seconds: float, interval: float, texts: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    samples: list[tuple[float, str, float, int]] = []  # (time, kind, latency, status)
    started = time.monotonic()

    async def client(i: int, http: httpx.AsyncClient) -> None:
        n = i
        while time.monotonic() < deadline:
            kind = ("sentiment", "batch", "generate", "stream")[n % 4]
            text = texts[n % len(texts)]
            t0 = time.monotonic()
            try:
                if kind == "sentiment":
                    status = (await http.post("/sentiment", json={"text": text})).status_code
                elif kind == "batch":
                    batch = [texts[(n + k) % len(texts)] for k in range(16)]
                    status = (await http.post("/sentiment/batch", json={"texts": batch})).status_code
                elif kind == "generate":
                    body = {"prompt": "ROMEO:", "max_new_tokens": 100, "seed": n}
                    status = (await http.post("/generate", json=body)).status_code
                else:
                    body = {"prompt": "JULIET:", "max_new_tokens": 100, "seed": n}
                    async with http.stream("POST", "/generate/stream", json=body) as r:
                        async for _ in r.aiter_raw():
                            pass
                        status = r.status_code
            except httpx.HTTPError:
                status = 0
            samples.append((t0 - started, kind, time.monotonic() - t0, status))
            n += CLIENTS

    async def memory() -> list[tuple[float, float]]:
        points = []
        while time.monotonic() < deadline:
            points.append((time.monotonic() - started, rss_mb(pid)))
            await asyncio.sleep(interval)
        points.append((time.monotonic() - started, rss_mb(pid)))
        return points

    limits = httpx.Limits(max_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        *_, rss = await asyncio.gather(*(client(i, http) for i in range(CLIENTS)), memory())
    return {"samples": samples, "rss": rss}


def summarise(raw: dict[str, Any], interval: float) -> dict[str, Any]:
    samples, rss = raw["samples"], raw["rss"]
    errors = sum(1 for _, _, _, status in samples if status != 200)
    rows = []
    end = max(t for t, _, _, _ in samples)
    k = 0
    while k * interval <= end:
        window = sorted(lat for t, _, lat, _ in samples if k * interval <= t < (k + 1) * interval)
        if window:
            memory = [m for t, m in rss if t <= (k + 1) * interval]
            rows.append({"from_s": k * interval, "requests": len(window),
                         "p99_ms": 1000 * window[int(0.99 * (len(window) - 1))],
                         "rss_mb": memory[-1] if memory else rss[0][1]})  # fmt: skip
        k += 1
    # drift from the end of the first interval: the first requests grow the heap once (allocator arenas, the
    # batch shapes' buffers); what matters is growth under steady load after that
    warm = rss[1][1] if len(rss) > 1 else rss[0][1]
    peak = max(m for _, m in rss[1:] or rss)
    return {"requests": len(samples), "errors": errors, "rss_start_mb": rss[0][1], "rss_warm_mb": warm,
            "rss_peak_mb": peak, "rss_drift": (peak - warm) / warm, "intervals": rows}  # fmt: skip


def render(report: dict[str, Any], minutes: float) -> str:
    rows = [[f"{r['from_s']:.0f}", r["requests"], f"{r['p99_ms']:.0f}", f"{r['rss_mb']:.0f}"]
            for r in report["intervals"]]  # fmt: skip
    md = table(["from s", "requests", "p99 ms", "RSS MB"], rows)
    verdict = "met" if report["errors"] == 0 and report["rss_drift"] < 0.05 else "NOT met"
    return md + (
        f"\n\n{minutes:g} minutes, {report['requests']:,} requests, {report['errors']} errors. RSS "
        f"{report['rss_start_mb']:.0f} MB before any request, {report['rss_warm_mb']:.0f} MB after the first "
        f"interval (warm-up), {report['rss_peak_mb']:.0f} MB at the peak: drift {100 * report['rss_drift']:.1f} % "
        f"after warm-up. Targets: 0 errors, drift under 5 % ({verdict})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per reported interval")
    parser.add_argument("--sentiment", type=Path, default=ROOT / "artifacts" / "sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts" / "generator")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    texts = load_sst2(None).dev.texts
    port = free_port()
    env = dict(base_env(args.sentiment, args.generator), RNN_HOST="127.0.0.1", RNN_PORT=str(port))
    with tempfile.TemporaryDirectory() as tmp:
        proc = start([sys.executable, "-m", "app"], env, port, Path(tmp) / "soak.log")
        try:
            raw = asyncio.run(soak(f"http://127.0.0.1:{port}", proc.pid, 60 * args.minutes, args.interval, texts))
        finally:
            stop(proc)
    report = summarise(raw, args.interval)
    report["markdown"] = render(report, args.minutes)
    print(json.dumps({k: v for k, v in report.items() if k not in ("intervals", "markdown")}, indent=2))
    publish("soak", report, args.update_readme)


if __name__ == "__main__":
    main()
