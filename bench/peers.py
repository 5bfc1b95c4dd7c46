"""This service against the serving frameworks people would pick instead, in one run on this machine, each serving
the same classifier artifact with the same runtime and threads:

    python bench/peers.py [--rounds 3] [--seconds 10] [--servers service,mosec,litserve,bentoml] [--update-readme]

  service   `python -m app` with the four default artifacts and default settings (bench/serve.py's environment):
            its own batcher (at most 64 texts, no wait), ONNX Runtime, single-text batches in its forward process;
  service-thread  the same with RNN_FORWARD_PROCESS=false: single-text batches in its model thread (not a peer);
  mosec     mosec 0.9: its Rust HTTP front and one Python worker process (bench/peer_servers.py), dynamic
            batching at most 64 texts with a 5 ms window, /sentiment and /sentiment/batch sharing the worker;
  litserve  LitServe 0.2: uvicorn API servers (its default: as many as inference workers) and one worker process
            per API: /sentiment batched (at most 64, batch_timeout 5 ms), /sentiment/batch one request at a time,
            /generate/stream (stream=True) over the default generator and the project's own sampling loop;
            its default multiprocessing queues (fast_queue's ZeroMQ measured slower here);
  bentoml   BentoML 1.4: `bentoml serve`, one worker (its default), /sentiment a batchable API (adaptive batching,
            at most 64, max_latency_ms 1000), /sentiment/batch not batchable; usage tracking off.
Every classifier is `load_sentiment` + `OnnxClassifier` on RNN_ONNX_THREADS (2, the service's default) threads and
answers what `SentimentModel.predict` does; before any timing, each server's answers to 8 single texts and to the
same 8 as one batch must equal the service's (label, and probabilities to 1e-5).
Load comes from one generator for all: wrk (bench/wrk/post.lua, SST-2 dev sentences, one thread) on POST /sentiment
at 1, 16 and 64 connections (req/s, p50, p99), POST /sentiment/batch with 64 texts at 4 connections
(sentences/s), each with the CPU time the server's processes spent per text answered (psutil: user and system
time of the server and its children during the run); and a raw-socket client for 32 concurrent streams of 1,000
characters (prompt "ROMEO:", temperature 0.8, seeds 0-31) from the service's /generate/stream (its SSE events) and
LitServe's (plain chunks), characters received per second, the median of 3 runs per round.
Rounds are interleaved (round r starts at the r-th server of the list), figures are medians over rounds. Each
server's CPU use while idle is measured first: one that burns CPU idle (polling loops) is started and stopped
around its own turn in every round, so it never slows another; the others stay up for the whole run.
Targets (ratios within this run): service req/s at 64 connections >= the fastest peer's (must >= 0.8 of it), its
p99 there <= that peer's, /sentiment/batch sentences/s >= the best peer's, 32-stream chars/s >= 2x LitServe's.
Writes bench/results/peers.json; `--update-readme` rewrites its table in docs/results.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from bench.serve import BATCH, base_env, one_stream, read_stream, write_bodies, wrk  # noqa: E402
from bench.service_accuracy import free_port  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "artifacts"
CONNECTIONS = (1, 16, 64)
BATCH_CONNECTIONS = 4
STREAMS, STREAM_TOKENS, STREAM_RUNS = 32, 1000, 3
PROMPT, TEMPERATURE = "ROMEO:", 0.8
TOLERANCE = 1e-5  # how far a peer's probabilities may be from the service's
CHECK_TEXTS = 8
IDLE_SECONDS, IDLE_BURN = 3.0, 0.02  # idle CPU above 2 % of a core counts as burning
PEERS = ("mosec", "litserve", "bentoml")
TARGETS = {"single_64_over_fastest": 1.0, "p99_over_fastest": 1.0, "batch_over_best": 1.0,
           "streams_over_litserve": 2.0}  # fmt: skip
FLOORS = {"single_64_over_fastest": 0.8}  # what the ratio must reach even where the target is missed
UPPER = {"p99_over_fastest"}  # targets that are ceilings


@dataclass(frozen=True)
class Server:
    """How to start one server and talk to it."""

    name: str
    argv: list[str]  # "{port}" stands for its port
    ready: tuple[str, str]  # (method, path) that answers 200 once it serves; a POST carries one /sentiment body
    listed: bool = False  # /sentiment's body carries a list of texts, and its answer a list of results
    streams: bool = False  # serves POST /generate/stream
    env: tuple[tuple[str, str], ...] = ()


SERVERS = {
    "service": Server("service", [sys.executable, "-m", "app"], ("GET", "/ready"), streams=True),
    # the service as it was before the forward process: single-text batches in its model thread
    "service-thread": Server("service-thread", [sys.executable, "-m", "app"], ("GET", "/ready"),
                             env=(("RNN_FORWARD_PROCESS", "false"),)),
    "mosec": Server("mosec", [sys.executable, "-m", "bench.peer_servers", "mosec", "--port", "{port}"],
                    ("POST", "/sentiment")),
    "litserve": Server("litserve", [sys.executable, "-m", "bench.peer_servers", "litserve", "--port", "{port}"],
                       ("GET", "/health"), streams=True),
    "bentoml": Server("bentoml", [sys.executable, "-m", "bentoml", "serve", "bench.peer_servers:BentoClassifier",
                                  "--host", "127.0.0.1", "--port", "{port}"],
                      ("GET", "/readyz"), listed=True, env=(("BENTOML_DO_NOT_TRACK", "true"),)),
}  # fmt: skip


@dataclass
class Running:
    server: Server
    port: int
    proc: subprocess.Popen[bytes]


LABELS = {"service": "this service", "service-thread": "this service, RNN_FORWARD_PROCESS=false"}


def single_body(server: Server, text: str) -> dict[str, Any]:
    return {"texts": [text]} if server.listed else {"text": text}


def launch(server: Server, workdir: Path) -> Running:
    """Start `server` in a session of its own on a free 127.0.0.1 port; wait until it serves (180 s at most)."""
    port = free_port()
    env = dict(base_env(ARTIFACTS / "sentiment", ARTIFACTS / "generator"), RNN_HOST="127.0.0.1", RNN_PORT=str(port),
               **dict(server.env))  # fmt: skip
    log = workdir / f"{server.name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([a.format(port=port) for a in server.argv], cwd=ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    running = Running(server, port, proc)
    method, path = server.ready
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            shut(running)  # what it started may outlive it
            raise SystemExit(f"{server.name} exited during start-up (status {proc.returncode}):\n"
                             f"{log.read_text(errors='replace')[-3000:]}")  # fmt: skip
        try:
            body = single_body(server, "warm up") if method == "POST" else None
            if httpx.request(method, f"http://127.0.0.1:{port}{path}", json=body, timeout=5).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    shut(running)
    raise SystemExit(f"{server.name} was not ready within 180 s; its log: {log}")


def shut(running: Running) -> None:
    """SIGTERM to the server's session, SIGKILL after 30 s; then any process it started that outlived it (BentoML's
    worker runs in a session of its own), by its id."""
    try:
        family = psutil.Process(running.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    with_signal(running.proc.pid, signal.SIGTERM)
    try:
        running.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with_signal(running.proc.pid, signal.SIGKILL)
        running.proc.wait()
    for child in family:
        if child.is_running():
            child.terminate()
    for child in psutil.wait_procs(family, timeout=10)[1]:
        child.kill()


def with_signal(pgid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def cpu_seconds(running: Running) -> dict[int, float]:
    """The CPU time (user and system, s) each of the server's processes has used, by pid."""
    root = psutil.Process(running.proc.pid)
    spent = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            spent[proc.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return spent


def cpu_since(running: Running, before: dict[int, float]) -> float:
    """The CPU seconds the server's processes used since `before` (cpu_seconds); a process started since, all of
    its own."""
    return sum(s - before.get(pid, 0.0) for pid, s in cpu_seconds(running).items())


def idle_cpu(running: Running) -> float:
    """Cores the server's processes use over IDLE_SECONDS with no request (1.0 = one core busy)."""
    time.sleep(1.0)  # start-up threads settle
    before = cpu_seconds(running)
    time.sleep(IDLE_SECONDS)
    return cpu_since(running, before) / IDLE_SECONDS


def loaded(running: Running, path: str, bodies: Path, connections: int, seconds: float, texts: int) -> dict[str, Any]:
    """bench/serve.py's wrk figures, and the CPU time the server's processes spent per text (`texts` a request)."""
    before = cpu_seconds(running)
    result = wrk(running.port, path, bodies, connections, seconds)
    done = result["requests_per_s"] * seconds * texts
    return {**result, "cpu_us_per_text": 1e6 * cpu_since(running, before) / done if done else float("nan")}


def sentiment(running: Running, texts: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The server's answers to each of `texts` alone (POST /sentiment) and to all of them at once (the batch)."""
    base = f"http://127.0.0.1:{running.port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        singles = []
        for text in texts:
            answer = client.post("/sentiment", json=single_body(running.server, text)).raise_for_status().json()
            singles.append(answer[0] if running.server.listed else answer)
        batch = client.post("/sentiment/batch", json={"texts": texts}).raise_for_status().json()["results"]
    return singles, batch


def check(running: Running, texts: list[str], expected: list[dict[str, Any]]) -> float:
    """Refuse to time a server whose answers differ from the service's; returns the largest probability gap."""
    singles, batch = sentiment(running, texts[:CHECK_TEXTS])
    gap = 0.0
    for i, (got, want) in enumerate(zip(singles + batch, expected + expected, strict=True)):
        gaps = [abs(got["probabilities"][k] - p) for k, p in want["probabilities"].items()]
        gap = max(gap, *gaps)
        if got["label"] != want["label"] or max(gaps) > TOLERANCE:
            route = "/sentiment" if i < len(singles) else "/sentiment/batch"
            raise SystemExit(f"{running.server.name} answers {got} on {route} for {texts[i % len(singles)]!r}, "
                             f"the service {want}: not the same classifier")  # fmt: skip
    return gap


async def lit_stream(port: int, tokens: int, seed: int) -> tuple[float, int, float, float]:
    """bench/serve.py's one_stream for LitServe's POST /generate/stream, plain text in chunks: (time to the first
    chunk s, characters, s to the last byte, perf_counter() at the last byte)."""
    body = {"prompt": PROMPT, "max_new_tokens": tokens, "temperature": TEMPERATURE, "seed": seed}
    first, text, wall, done = await read_stream(port, body, b"")
    return first, len(text.decode()), wall, done


Streamer = Callable[[int, int, int], Awaitable[tuple[float, int, float, float]]]


async def streams(client: Streamer, port: int) -> dict[str, float]:
    """STREAMS concurrent streams of STREAM_TOKENS, STREAM_RUNS times: the median run's characters/s (all
    characters received / time to the last byte of the last stream) and time to first byte p50."""
    await asyncio.gather(*(client(port, 100, seed) for seed in range(4)))  # warm-up
    rates, firsts = [], []
    for _ in range(STREAM_RUNS):
        started = time.perf_counter()
        many = await asyncio.gather(*(client(port, STREAM_TOKENS, seed) for seed in range(STREAMS)))
        rates.append(sum(chars for _, chars, _, _ in many) / (max(done for *_, done in many) - started))
        firsts += [first for first, *_ in many]
    return {"chars_per_s": statistics.median(rates), "first_p50_ms": 1000 * statistics.median(firsts)}


def sample_text(running: Running, tokens: int, seed: int) -> str:
    """One generation's text for the same-text check: the service's POST /generate, LitServe's whole stream."""
    body = {"prompt": PROMPT, "max_new_tokens": tokens, "temperature": TEMPERATURE, "seed": seed}
    url = f"http://127.0.0.1:{running.port}"
    if running.server.name == "service":
        return str(httpx.post(f"{url}/generate", json=body, timeout=60).raise_for_status().json()["generated_text"])
    return httpx.post(f"{url}/generate/stream", json=body, timeout=60).raise_for_status().text


def measure(running: Running, bodies: Path, batches: Path, seconds: float) -> dict[str, Any]:
    """One round of one server: /sentiment at each concurrency, the batch route, and the streams."""
    port, server = running.port, running.server
    wrk(port, "/sentiment", bodies, 64, 2)  # warm-up
    wrk(port, "/sentiment/batch", batches, BATCH_CONNECTIONS, 1)
    result: dict[str, Any] = {
        "sentiment": {c: loaded(running, "/sentiment", bodies, c, seconds, 1) for c in CONNECTIONS}
    }
    batch = loaded(running, "/sentiment/batch", batches, BATCH_CONNECTIONS, seconds, BATCH)
    result["batch"] = {**batch, "sentences_per_s": batch["requests_per_s"] * BATCH}
    if server.streams:
        result["streams"] = asyncio.run(streams(one_stream if server.name == "service" else lit_stream, port))
    return result


def run(names: list[str], rounds: int, seconds: float, workdir: Path) -> dict[str, Any]:
    texts = load_sst2(None).dev.texts
    bodies, batches = write_bodies(workdir, texts)
    listed = workdir / "sentiment-listed.jsonl"  # BentoML's batchable /sentiment takes a list of texts
    listed.write_text("".join(json.dumps({"texts": [t]}) + "\n" for t in texts), encoding="utf-8")
    up: dict[str, Running] = {}
    report: dict[str, Any] = {"idle_cpu": {}, "largest_probability_gap": {}, "restarted_per_round": []}
    try:
        up["service"] = launch(SERVERS["service"], workdir)
        expected = sentiment(up["service"], texts[:CHECK_TEXTS])[0]
        for name in names:  # idle CPU of each, alone with the others idle
            running = up.get(name) or launch(SERVERS[name], workdir)
            up[name] = running
            report["largest_probability_gap"][name] = check(running, texts, expected)
            report["idle_cpu"][name] = idle_cpu(running)
            if report["idle_cpu"][name] > IDLE_BURN:
                report["restarted_per_round"].append(name)
                shut(up.pop(name))
        if "litserve" in names and "service" in up:
            report["same_text"] = same_text(up, workdir)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
        for round_ in range(rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                if name not in up:
                    up[name] = launch(SERVERS[name], workdir)
                    check(up[name], texts, expected)
                files = (listed if SERVERS[name].listed else bodies, batches)
                runs[name].append(measure(up[name], *files, seconds))
                print(json.dumps({"round": round_, name: runs[name][-1]}), flush=True)
                if name in report["restarted_per_round"]:
                    shut(up.pop(name))
    finally:
        for running in up.values():
            shut(running)
    report["servers"] = {name: medians(rs) for name, rs in runs.items()}
    report["runs"] = runs
    return report


def same_text(up: dict[str, Running], workdir: Path) -> bool:
    """Whether LitServe's stream (model.generator.sampling.stream) gives the service's text for seed 0."""
    lit = up.get("litserve") or launch(SERVERS["litserve"], workdir)
    try:
        return sample_text(lit, 300, 0) == sample_text(up["service"], 300, 0)
    finally:
        if "litserve" not in up:
            shut(lit)


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-figure median over rounds of nested dicts of numbers; errors are summed, since any one counts."""
    out: dict[str, Any] = {}
    for k, v in runs[0].items():
        figures = [r[k] for r in runs]
        if isinstance(v, dict):
            out[k] = medians(figures)
        else:
            out[k] = sum(figures) if k == "errors" else statistics.median(figures)
    return out


def verdicts(servers: dict[str, Any]) -> dict[str, dict[str, Any]]:
    service = servers["service"]
    peers = {name: servers[name] for name in PEERS if name in servers}
    values: dict[str, float] = {}
    fastest = max(peers, key=lambda n: peers[n]["sentiment"][64]["requests_per_s"], default=None)
    if fastest is not None:
        theirs = peers[fastest]["sentiment"][64]
        values["single_64_over_fastest"] = service["sentiment"][64]["requests_per_s"] / theirs["requests_per_s"]
        values["p99_over_fastest"] = service["sentiment"][64]["p99_ms"] / theirs["p99_ms"]
        best = max(p["batch"]["sentences_per_s"] for p in peers.values())
        values["batch_over_best"] = service["batch"]["sentences_per_s"] / best
    if "litserve" in peers:
        lit = peers["litserve"]["streams"]["chars_per_s"]
        values["streams_over_litserve"] = service["streams"]["chars_per_s"] / lit
    out: dict[str, dict[str, Any]] = {}
    for k, v in values.items():
        met = v <= TARGETS[k] if k in UPPER else v >= TARGETS[k]
        out[k] = {"value": v, "target": TARGETS[k], "met": met}
        if k in FLOORS:
            out[k] |= {"floor": FLOORS[k], "floor_met": v >= FLOORS[k]}
    if fastest is not None:
        out["single_64_over_fastest"]["peer"] = out["p99_over_fastest"]["peer"] = fastest
    return out


def render(report: dict[str, Any]) -> str:
    rows: list[list[Any]] = []
    for name, s in report["servers"].items():
        label = LABELS.get(name, name)
        for c in CONNECTIONS:
            r = s["sentiment"][c]
            rows.append([label, "POST /sentiment", c, f"{r['requests_per_s']:,.0f}", f"{r['p50_ms']:.1f}",
                         f"{r['p99_ms']:.1f}", f"{r['cpu_us_per_text']:,.0f}", "", f"{r['errors']:.0f}"])  # fmt: skip
        b = s["batch"]
        rows.append([label, f"POST /sentiment/batch ({BATCH} texts)", BATCH_CONNECTIONS, f"{b['requests_per_s']:,.0f}",
                     f"{b['p50_ms']:.1f}", f"{b['p99_ms']:.1f}", f"{b['cpu_us_per_text']:,.0f}",
                     f"{b['sentences_per_s']:,.0f} sentences/s", f"{b['errors']:.0f}"])  # fmt: skip
    for name, s in report["servers"].items():
        if "streams" in s:
            g = s["streams"]
            label = LABELS.get(name, name)
            rows.append([label, "POST /generate/stream", STREAMS, "", f"first byte {g['first_p50_ms']:.0f}", "", "",
                         f"{g['chars_per_s']:,.0f} chars/s", ""])  # fmt: skip
    header = ["server", "route", "connections", "req/s", "p50 ms", "p99 ms", "server CPU µs per text",
              "sentences/s or chars/s", "errors"]  # fmt: skip
    md = table(header, rows)
    names = {
        "single_64_over_fastest": "/sentiment at 64: service req/s / {peer}'s",
        "p99_over_fastest": "/sentiment at 64: service p99 / {peer}'s",
        "batch_over_best": "/sentiment/batch: service sentences/s / the best peer's",
        "streams_over_litserve": f"{STREAMS} streams: service chars/s / LitServe's",
    }
    target_rows = []
    for k, v in report["verdicts"].items():
        sign = "≤" if k in UPPER else "≥"
        target = f"{sign} {v['target']:.2f}" + (f" (must ≥ {v['floor']:.2f})" if "floor" in v else "")
        state = "met" if v["met"] else "NOT met"
        if "floor" in v and not v["met"]:
            state += f"; must: {'met' if v['floor_met'] else 'NOT met'}"
        target_rows.append([names[k].format(peer=v.get("peer", "")), f"{v['value']:.2f}", target, state])
    md += "\n\n" + table(["target", "measured", "target", ""], target_rows)
    return md + "\n\n" + notes(report)


def notes(report: dict[str, Any]) -> str:
    idle = ", ".join(f"{name} {100 * v:.1f} %" for name, v in report["idle_cpu"].items())
    restarted = ", ".join(report["restarted_per_round"]) or "none"
    gap = max(report["largest_probability_gap"].values(), default=0.0)
    parts = [f"Medians of {report['rounds']} rounds of {report['seconds']:g} s per wrk run (round r starts at the "
             f"r-th server), {report['cpus']} CPUs, wrk -t1 with bench/wrk/post.lua, SST-2 dev sentences. Server "
             "CPU: the user and system time of the server's processes (its workers and children included) during "
             "the wrk run, per text answered.",
             f"Idle CPU, share of one core: {idle}; started and stopped around their own turn each round: "
             f"{restarted}.", f"Every server's probabilities equal the service's to {gap:.1e}."]  # fmt: skip
    if "bentoml" in report["servers"]:
        parts.append("BentoML's /sentiment is a batchable API, whose body carries a list (`{\"texts\": [text]}`) and "
                     "whose answer is a list of one result.")  # fmt: skip
    if "litserve" in report["servers"]:
        parts.append("LitServe's streams are plain-text chunks, one per generated piece (the service sends an SSE "
                     "event per character, JSON-encoded).")  # fmt: skip
    if "same_text" in report:
        parts.append(f"For seed 0, LitServe's text is {'the same as' if report['same_text'] else 'NOT'} the "
                     "service's.")  # fmt: skip
    parts.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".")
    return " ".join(parts)


def versions() -> dict[str, str]:
    out = {p: importlib.metadata.version(p) for p in ("mosec", "litserve", "bentoml", "fastapi", "uvicorn",
                                                      "onnxruntime")}  # fmt: skip
    out["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split()[1]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk run")
    parser.add_argument("--servers", default=",".join(SERVERS), help="a comma-separated subset, service first")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("bench/peers.py needs wrk: apt-get install wrk")
    names = args.servers.split(",")
    if names[0] != "service" or not set(names) <= set(SERVERS):
        raise SystemExit(f"--servers: service first, then any of {', '.join(list(SERVERS)[1:])}")
    with tempfile.TemporaryDirectory() as tmp:
        report = run(names, args.rounds, args.seconds, Path(tmp))
    report |= {"rounds": args.rounds, "seconds": args.seconds, "cpus": os.cpu_count(), "versions": versions(),
               "wrk": {"threads": 1, "timeout_s": 30, "script": "bench/wrk/post.lua", "seconds": args.seconds,
                       "connections": list(CONNECTIONS), "batch_connections": BATCH_CONNECTIONS}}  # fmt: skip
    report["verdicts"] = verdicts(report["servers"])
    report["markdown"] = render(report)
    publish("peers", report, args.update_readme)


if __name__ == "__main__":
    main()
