"""Overload against a real server: past RNN_MAX_CONCURRENT_REQUESTS, requests are refused at once with 503 and
Retry-After, while the accepted ones keep a bounded latency (they finish well inside RNN_REQUEST_TIMEOUT_S)."""

from __future__ import annotations

import asyncio
import statistics
import time
from pathlib import Path

import httpx

from tests.app.conftest import Artifacts, running_server

LIMIT = 4
TIMEOUT_S = 20


def test_ten_times_overload(artifacts: Artifacts, tmp_path: Path) -> None:
    env = {"RNN_MAX_CONCURRENT_REQUESTS": str(LIMIT), "RNN_REQUEST_TIMEOUT_S": str(TIMEOUT_S),
           "RNN_MAX_NEW_TOKENS": "100000"}  # fmt: skip
    with running_server(artifacts, tmp_path, log_level="warning", env=env) as server:

        async def one(client: httpx.AsyncClient, i: int) -> tuple[int, float, str | None]:
            started = time.perf_counter()
            r = await client.post("/generate", json={"max_new_tokens": 3000, "seed": i})
            return r.status_code, time.perf_counter() - started, r.headers.get("retry-after")

        async def main() -> list[tuple[int, float, str | None]]:
            limits = httpx.Limits(max_connections=10 * LIMIT)
            async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
                await one(client, -1)  # warm
                return await asyncio.gather(*(one(client, i) for i in range(10 * LIMIT)))

        results = asyncio.run(main())
        accepted = [t for status, t, _ in results if status == 200]
        refused = [(t, retry) for status, t, retry in results if status == 503]
        assert len(accepted) + len(refused) == len(results), sorted({s for s, _, _ in results})
        assert 1 <= len(accepted) and len(refused) >= 5 * LIMIT
        assert all(retry == "1" for _, retry in refused)
        # refusals come at once: no queueing behind the accepted work
        assert statistics.median(t for t, _ in refused) < 0.25
        assert max(t for t, _ in refused) < min(1.0, max(accepted))
        # the accepted ones are bounded: well inside the request timeout
        assert max(accepted) < TIMEOUT_S / 2
        assert httpx.get(f"{server.url}/ready").status_code == 200
