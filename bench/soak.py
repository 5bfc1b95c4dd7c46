"""Soak: an hour of mixed load against `python -m app` on 127.0.0.1, with bad inputs, clients that leave
mid-stream and a hot reload every 10 minutes; nothing may be lost or wrong.

    python bench/soak.py [--minutes 60] [--intervals 12] [--reload-every 10] [--update-readme]

The server runs the default artifacts and settings, with an API key (RNN_API_KEY) and an admin key
(RNN_ADMIN_API_KEY). 8 clients in one asyncio process loop over the model routes: POST /sentiment,
/sentiment/batch (16 sentences), /generate and /generate/stream (100 characters, seeded) and /tag, on SST-2 dev
sentences. Every good request is checked against the answer the server gave the same input before the load
began (label and score within 1e-3, the same generated text, the same tags): a different answer is a wrong
answer. About 1 request in 20 is a bad input (empty, too long, not JSON, out of range, wrong type), which must
get a 4xx; about 1 stream in 20 is left after 3 events. Every --reload-every minutes (the first half way
through the first stretch: 6 in 60 minutes), POST /admin/reload swaps the models in again. Reported per
interval: requests, p99 latency, RSS; and errors by kind: 5xx, dropped connection, wrong answer, a 4xx to a good
request, a bad input not refused. After the load, the server must hold no stream and no request in flight.
Targets: 0 errors; RSS drift after the first interval (warm-up) < 5 %.
Writes bench/results/soak.json; `--update-readme` rewrites its table in docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from bench.serve import base_env, rss_mb, start  # noqa: E402
from bench.service_accuracy import free_port, stop  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 8
RSS_EVERY_S = 2.0
INPUTS = 64  # distinct good inputs per route, each with its reference answer
KEY, ADMIN_KEY = "soak-inference-key", "soak-admin-key"
KINDS = ("sentiment", "batch", "generate", "stream", "tag")
# (method path, body, or raw bytes): each must be refused with a 4xx
BAD: list[tuple[str, Any]] = [
    ("/sentiment", {"text": ""}),
    ("/sentiment", {"text": "x" * 5000}),
    ("/sentiment", b"{not json"),
    ("/sentiment/batch", {"texts": ["fine"] * 100}),
    ("/generate", {"prompt": "a", "max_new_tokens": 10**6}),
    ("/generate/stream", {"prompt": "a", "temperature": -1}),
    ("/tag", {"text": 5}),
]


def request_for(kind: str, i: int, texts: list[str]) -> tuple[str, dict[str, Any]]:
    if kind == "sentiment":
        return "/sentiment", {"text": texts[i]}
    if kind == "batch":
        return "/sentiment/batch", {"texts": [texts[(i + k) % INPUTS] for k in range(16)]}
    if kind in ("generate", "stream"):
        path = "/generate" if kind == "generate" else "/generate/stream"
        return path, {"prompt": "ROMEO:", "max_new_tokens": 100, "temperature": 0.8, "seed": i}
    return "/tag", {"text": texts[i]}


def answer_of(kind: str, body: Any) -> Any:
    """What must not change between calls: labels and scores, generated text, tags."""
    if kind == "sentiment":
        return [(body["label"], body["score"])]
    if kind == "batch":
        return [(r["label"], r["score"]) for r in body["results"]]
    if kind in ("generate", "stream"):
        return body["generated_text"]
    return [(t["text"], t["tag"]) for t in body["tokens"]]


def same(kind: str, got: Any, want: Any) -> bool:
    if kind in ("sentiment", "batch"):
        return len(got) == len(want) and all(
            a[0] == b[0] and abs(a[1] - b[1]) <= 1e-3 for a, b in zip(got, want, strict=True)
        )
    return bool(got == want)


def last_event(raw: bytes) -> Any:
    return json.loads(raw.decode().rstrip().rsplit("\n\n", 1)[-1].removeprefix("data:"))


async def call(http: httpx.AsyncClient, kind: str, path: str, body: Any, leave: bool = False) -> tuple[int, Any]:
    """(status, answer) of one request; for a stream, answer None when `leave`: 3 events read, then gone."""
    if kind != "stream":
        r = await http.post(path, json=body)
        return r.status_code, answer_of(kind, r.json()) if r.status_code == 200 else None
    async with http.stream("POST", path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, None
        parts, events = [], 0
        async for chunk in r.aiter_bytes():
            parts.append(chunk)
            events += chunk.count(b"data:")
            if leave and events >= 3:
                return 200, None  # leaving the block closes the connection mid-stream
    return 200, answer_of(kind, last_event(b"".join(parts)))


class Soak:
    def __init__(self, url: str, pid: int, texts: list[str], seconds: float, interval: float, reload_s: float) -> None:
        self.url, self.pid, self.texts = url, pid, texts
        self.seconds, self.interval, self.reload_s = seconds, interval, reload_s
        self.reference: dict[tuple[str, int], Any] = {}
        self.samples: list[tuple[float, float]] = []  # (time, latency) of each good, answered request
        self.errors: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []
        self.rss: list[tuple[float, float]] = []
        self.reloads: list[tuple[float, int, float]] = []  # (time, status, seconds)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")

    async def references(self, http: httpx.AsyncClient) -> None:
        for kind in KINDS:
            for i in range(INPUTS):
                path, body = request_for(kind, i, self.texts)
                status, answer = await call(http, kind, path, body)
                if status != 200:
                    raise SystemExit(f"reference {kind} {i}: status {status}")
                self.reference[(kind, i)] = answer

    async def client(self, n: int, http: httpx.AsyncClient, deadline: float, started: float) -> None:
        rng = random.Random(n)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            if rng.random() < 0.05:
                await self.bad(http, rng)
                continue
            kind, i = rng.choice(KINDS), rng.randrange(INPUTS)
            path, body = request_for(kind, i, self.texts)
            leave = kind == "stream" and rng.random() < 0.05
            try:
                status, answer = await call(http, kind, path, body, leave)
            except httpx.HTTPError as exc:
                self.error("dropped", f"{path}: {exc!r}")
                continue
            self.counts["leave" if leave else kind] += 1
            if status >= 500:
                self.error("5xx", f"{path}: {status}")
            elif status != 200:
                self.error("4xx to a good request", f"{path}: {status}")
            elif not leave and not same(kind, answer, self.reference[(kind, i)]):
                self.error("wrong answer", f"{path} #{i}: {answer!r:.120} != {self.reference[(kind, i)]!r:.120}")
            else:
                self.samples.append((t0 - started, time.monotonic() - t0))

    async def bad(self, http: httpx.AsyncClient, rng: random.Random) -> None:
        path, body = rng.choice(BAD)
        self.counts["bad input"] += 1
        try:
            if isinstance(body, bytes):
                r = await http.post(path, content=body, headers={"content-type": "application/json"})
            else:
                r = await http.post(path, json=body)
        except httpx.HTTPError as exc:
            self.error("dropped", f"bad {path}: {exc!r}")
            return
        if r.status_code >= 500:
            self.error("5xx", f"bad {path}: {r.status_code}")
        elif not 400 <= r.status_code < 500:
            self.error("bad input not refused", f"{path}: {r.status_code}")

    async def reloader(self, deadline: float, started: float) -> None:
        headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
        async with httpx.AsyncClient(base_url=self.url, timeout=120, headers=headers) as admin:
            wait = self.reload_s / 2  # half way through each stretch: 6 reloads in 60 minutes at one every 10
            while (wait := min(wait, deadline - time.monotonic())) > 0:
                await asyncio.sleep(wait)
                wait = self.reload_s
                if time.monotonic() >= deadline:
                    break
                t0 = time.monotonic()
                r = await admin.post("/admin/reload")
                self.reloads.append((t0 - started, r.status_code, time.monotonic() - t0))
                if r.status_code != 200:
                    self.error("5xx" if r.status_code >= 500 else "reload refused", f"/admin/reload: {r.text}")

    async def memory(self, deadline: float, started: float) -> None:
        while time.monotonic() < deadline:
            self.rss.append((time.monotonic() - started, rss_mb(self.pid)))
            await asyncio.sleep(min(RSS_EVERY_S, self.interval / 10))

    async def run(self) -> None:
        headers = {"Authorization": f"Bearer {KEY}"}
        limits = httpx.Limits(max_connections=CLIENTS + 2)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits, headers=headers) as http:
            await self.references(http)
            started = time.monotonic()
            self.rss.append((0.0, rss_mb(self.pid)))
            deadline = started + self.seconds
            await asyncio.gather(*(self.client(n, http, deadline, started) for n in range(CLIENTS)),
                                 self.reloader(deadline, started), self.memory(deadline, started))  # fmt: skip
            self.rss.append((time.monotonic() - started, rss_mb(self.pid)))
            await asyncio.sleep(2.0)  # streams left mid-way are dropped within a second
            metrics = (await http.get("/metrics")).text
        for name in ("rnn_requests_in_flight", "rnn_generation_active_streams"):
            held = sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith(name))
            if held:
                self.error("held after the load", f"{name} = {held:g}")

    def summary(self) -> dict[str, Any]:
        rows = []
        for k in range(round(self.seconds / self.interval)):
            a, b = k * self.interval, (k + 1) * self.interval
            window = sorted(lat for t, lat in self.samples if a <= t < b)
            memory = [m for t, m in self.rss if a <= t < b] or [self.rss[-1][1]]
            rows.append({"from_min": a / 60, "requests": len(window),
                         "p99_ms": 1000 * window[int(0.99 * (len(window) - 1))] if window else float("nan"),
                         "rss_mb": statistics.median(memory), "rss_max_mb": max(memory),
                         "reloads": sum(1 for t, *_ in self.reloads if a <= t < b)})  # fmt: skip
        # RSS is sampled every 2 s; an interval's figure is its median, which a reload's second of two model sets
        # side by side does not move (its max does: reported). Drift: the highest later median against the first
        # interval's, whose first requests grow the heap once (allocator arenas, the batch shapes' buffers)
        warm = rows[0]["rss_mb"]
        later = max((r["rss_mb"] for r in rows[1:]), default=warm)
        return {"minutes": self.seconds / 60, "requests": sum(self.counts.values()), "by_kind": dict(self.counts),
                "errors": dict(self.errors), "error_total": sum(self.errors.values()), "examples": self.examples,
                "reloads": self.reloads, "rss_start_mb": self.rss[0][1], "rss_warm_mb": warm,
                "rss_later_mb": later, "rss_peak_mb": max(m for _, m in self.rss), "rss_drift": (later - warm) / warm,
                "rss_series": self.rss, "intervals": rows}  # fmt: skip


def render(report: dict[str, Any]) -> str:
    rows = [[f"{r['from_min']:.0f}", f"{r['requests']:,}", f"{r['p99_ms']:.0f}", f"{r['rss_mb']:.0f}",
             f"{r['rss_max_mb']:.0f}", r["reloads"]] for r in report["intervals"]]  # fmt: skip
    md = table(["from min", "good requests", "p99 ms", "RSS MB (median)", "RSS MB (max)", "reloads"], rows)
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(report["by_kind"].items()))
    errors = ", ".join(f"{k} {v}" for k, v in report["errors"].items()) or "none"
    ok = "met" if report["error_total"] == 0 and report["rss_drift"] < 0.05 else "NOT met"
    reloads = [r for r in report["reloads"] if r[1] == 200]
    return md + (
        f"\n\n{report['minutes']:g} minutes, {report['requests']:,} requests ({kinds}); "
        f"{len(reloads)} of {len(report['reloads'])} reloads answered 200 (longest "
        f"{max((r[2] for r in report['reloads']), default=0):.1f} s). Errors: {errors}. RSS "
        f"{report['rss_start_mb']:.0f} MB before the load, {report['rss_warm_mb']:.0f} MB in the first interval, "
        f"{report['rss_later_mb']:.0f} MB in the highest later one (medians): drift {100 * report['rss_drift']:.1f} %; "
        f"peak {report['rss_peak_mb']:.0f} MB (during a reload, both model sets are held). Targets: "
        f"0 errors (5xx, dropped connections, wrong answers, a good request refused, a bad input accepted), drift "
        f"under 5 % ({ok})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--intervals", type=int, default=12, help="reported intervals")
    parser.add_argument("--reload-every", type=float, default=10.0, help="minutes between hot reloads")
    parser.add_argument("--sentiment", type=Path, default=ROOT / "artifacts" / "sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts" / "generator")
    parser.add_argument("--tagger", type=Path, default=ROOT / "artifacts" / "tagger")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    texts = load_sst2(None).dev.texts[:INPUTS]
    port = free_port()
    env = dict(base_env(args.sentiment, args.generator, args.tagger), RNN_HOST="127.0.0.1", RNN_PORT=str(port),
               RNN_API_KEY=KEY, RNN_ADMIN_API_KEY=ADMIN_KEY)  # fmt: skip
    seconds = 60 * args.minutes
    with tempfile.TemporaryDirectory() as tmp:
        proc = start([sys.executable, "-m", "app"], env, port, Path(tmp) / "soak.log")
        soak = Soak(f"http://127.0.0.1:{port}", proc.pid, texts, seconds, seconds / args.intervals,
                    60 * args.reload_every)  # fmt: skip
        try:
            asyncio.run(soak.run())
        finally:
            stop(proc)
            if proc.returncode not in (0, None):
                soak.error("server exit", f"status {proc.returncode}")
    report = soak.summary()
    report["markdown"] = render(report)
    print(json.dumps({k: v for k, v in report.items() if k not in ("intervals", "markdown")}, indent=2))
    publish("soak", report, args.update_readme)


if __name__ == "__main__":
    main()
