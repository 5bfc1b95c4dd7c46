"""Live versions under load, in one run on this machine: `python -m app` serving the default artifacts, its
sentiment model a directory of versions, with wrk (bench/wrk/post.lua, SST-2 dev sentences) on POST /sentiment at
16 connections:

    python bench/swaps.py [--sentiment artifacts/sentiment] [--seconds 6] [--update-readme]

  idle       no swap, nothing else running: the reference p99;
  swap N     a run during which version N is written into the directory (a copy of the serving version, so that
             every swap loads, warms, switches and drains the same model) and the poller swaps it in: failed
             requests, p99, and the service's peak resident memory (the kernel's high-water mark, reset before
             the swap; sampled every 20 ms where it cannot be reset);
  training   a run while `nice -n 10 python -m model train generator --threads 1` trains beside the service (as
             make serve's background trainer does).
Generation and batches are measured idle and beside the same trainer too (POST /generate/stream as bench/serve.py
measures it: 1,000 characters, one stream alone, then 32 at once; POST /sentiment/batch, 64 sentences a request, wrk
at 4 connections), since the generator's steps and ONNX Runtime's threads share the cores with the trainer.
One copy of the model is measured apart: the resident memory a fresh process (with its children: the engine's
forward process) gains by loading it as the service's engine and serving the same sentences with it, 16 at a time
(as it loads, it is smaller: the weights' pages are mapped as texts reach them, and ONNX Runtime's buffers grow with
the batches; the steady state holds the serving version at its full size, so a swap's bound is that size; both
figures are reported). The steady state is the resident memory after the idle run. Every resident figure is the
service's and its children's, summed (bench/serve.py's rss_mb). Targets (issue 31): no failed request; p99 during
a swap and while training <= 3x idle; peak memory during a swap <= the steady state + one copy of the model.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402
from bench.serve import BATCH, base_env, generation, rss_mb, start, write_bodies, wrk  # noqa: E402
from bench.service_accuracy import free_port, stop  # noqa: E402
from model.artifacts import copy_artifact  # noqa: E402
from model.versions import resolve  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS, POLL_SECONDS, P99_RATIO = 16, "0.5", 3.0
COPY_SCRIPT = """
import sys
import torch
from app.config import load_settings
from app.loading import load_engine, tune_heap
from app.serving.metrics import Metrics
from app.serving.sentiment import feeds
from model.sentiment.data import load_sst2
import psutil
def rss():  # this process and its children (an engine's forward process), as bench/serve.py's rss_mb
    me = psutil.Process()
    return sum(p.memory_info().rss for p in [me, *me.children(recursive=True)]) / 2**20
settings, metrics = load_settings(_env_file=None), Metrics()
texts = load_sst2(None).dev.texts
def load(name):
    tune_heap(loading=True)  # as the service loads a version (app/versions.py)
    try:
        return load_engine(name, sys.argv[1], settings, metrics)
    finally:
        tune_heap(loading=False)
def serve(engine):
    # the benchmark's load: its sentences as single-text requests, 16 at a time, each batch's forward where the
    # service runs it (app/serving/sentiment.py): in the engine's forward process, or else in its model thread
    # on the runner it picks for single texts
    model = engine.model
    group = int(sys.argv[2])
    for start in range(0, len(texts), group):
        chunks = model.chunks(texts[start:start + group])
        if engine.process is not None:
            outputs = [torch.from_numpy(out) for out in engine.process.run_now(feeds(chunks))]
        else:
            outputs = engine.executor.submit(model.infer, chunks, None, engine.singles_runner).result()
        model.results(model.ordered(chunks, outputs))
warm = load('warm')  # libraries and their first allocations, not counted; kept, and so is its forward process
serve(warm)
before = rss()
engine = load('sentiment')
at_load = rss() - before
serve(engine)
print(at_load, rss() - before)
"""


def one_copy_mb(artifact: Path, runs: int = 3) -> tuple[float, float]:
    """The resident memory one more copy of the model takes once the service's libraries are loaded, as it
    loads and once it has served the benchmark's requests (its weights' pages are mapped from the artifact as
    the texts reach them, and ONNX Runtime's buffers grow to the batches it runs; the steady state holds the
    serving version at that size): medians of `runs` fresh processes (one alone moves by several MB)."""
    found = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", COPY_SCRIPT, str(artifact), str(CONNECTIONS)], cwd=ROOT,
                             env={**base_env(artifact, artifact), **data_dir()}, capture_output=True, text=True,
                             check=True)  # fmt: skip
        at_load, serving = map(float, out.stdout.split()[-2:])
        found.append((at_load, serving))
    return statistics.median(a for a, _ in found), statistics.median(s for _, s in found)


def reset_peak(pid: int) -> bool:
    """Reset the process's resident high-water mark (VmHWM), so that it holds the peak of what follows; False
    where the kernel does not allow it (then the peak is sampled every 20 ms only)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def beside(port: int, batches: Path, seconds: float) -> dict[str, float]:
    """Generation as bench/serve.py measures it (chars/s of one stream and of 32 at once, medians) and
    /sentiment/batch's sentences/s."""
    batch = wrk(port, "/sentiment/batch", batches, 4, seconds)
    return {**asyncio.run(generation(port)), "batch_sentences_per_s": BATCH * batch["requests_per_s"]}


def data_dir() -> dict[str, str]:
    """RNN_DATA_DIR for the trainer (base_env leaves out the caller's RNN_ variables)."""
    return {"RNN_DATA_DIR": os.environ.get("RNN_DATA_DIR", str(ROOT.parent / "shared" / "data"))}


def serving_version(port: int) -> int | None:
    card = httpx.get(f"http://127.0.0.1:{port}/models/sentiment", timeout=10).json()
    version: int | None = card["version"]
    return version


def run_with(port: int, bodies: Path, seconds: float, during: Any = None) -> dict[str, Any]:
    """wrk for `seconds`; `during()` runs in a thread beside it from one second in."""
    result: dict[str, Any] = {}

    def side() -> None:
        time.sleep(1.0)
        result["side"] = during()

    thread = threading.Thread(target=side) if during else None
    if thread:
        thread.start()
    result.update(wrk(port, "/sentiment", bodies, CONNECTIONS, seconds))
    if thread:
        thread.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentiment", type=Path, default=ROOT / "artifacts" / "sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts" / "generator")
    parser.add_argument("--tagger", type=Path, default=ROOT / "artifacts" / "tagger")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    args.sentiment = resolve(args.sentiment, "sentiment")  # a directory of versions: its newest
    copy_at_load_mb, copy_mb = one_copy_mb(args.sentiment)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        shelf = work / "sentiment"
        copy_artifact(args.sentiment, shelf / "1")
        bodies, batches = write_bodies(work)
        port = free_port()
        env = {**base_env(shelf, args.generator, args.tagger), "RNN_PORT": str(port),
               "RNN_MODEL_POLL_SECONDS": POLL_SECONDS}  # fmt: skip
        proc = start([sys.executable, "-m", "app"], env, port, work / "server.log")
        runs: list[dict[str, Any]] = []
        try:
            wrk(port, "/sentiment", bodies, CONNECTIONS, 2)  # warm-up
            runs.append({"run": "idle", **run_with(port, bodies, args.seconds), "rss_mb": rss_mb(proc.pid)})
            steady = runs[-1]["rss_mb"]  # after the same load has run for a while: the serving version's size
            for number in (2, 3, 4):

                def swap(n: int = number) -> dict[str, float]:
                    exact = reset_peak(proc.pid)
                    peak, started = rss_mb(proc.pid), time.monotonic()
                    copy_artifact(shelf / "1", shelf / str(n))
                    while serving_version(port) != n:
                        peak = max(peak, rss_mb(proc.pid))
                        time.sleep(0.02)
                    swapped = time.monotonic() - started
                    for _ in range(50):  # the old engine drains and is freed after the switch
                        peak = max(peak, rss_mb(proc.pid))
                        time.sleep(0.02)
                    if exact:  # the kernel's high-water mark since the reset: no peak between two samples missed
                        peak = max(peak, peak_rss_mb(proc.pid))
                    return {"peak_rss_mb": peak, "swapped_after_s": swapped}

                runs.append({"run": f"swap to version {number}", **run_with(port, bodies, args.seconds, swap)})
            generating = {"idle": beside(port, batches, args.seconds)}  # after the swaps: they leave buffers behind
            trainer = subprocess.Popen(
                ["nice", "-n", "10", sys.executable, "-m", "model", "train", "generator", "--threads", "1", "--out",
                 str(work / "background")], cwd=ROOT, env={**base_env(shelf, args.generator), **data_dir()},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                time.sleep(15)  # past its data loading, into its training steps
                runs.append({"run": "a default preset training beside it", **run_with(port, bodies, args.seconds)})
                generating["a default preset training beside it"] = beside(port, batches, args.seconds)
            finally:
                trainer.kill()
                trainer.wait()
            final_rss = rss_mb(proc.pid)
        finally:
            stop(proc)
    report = {"runs": runs, "steady_rss_mb": steady, "final_rss_mb": final_rss, "one_copy_mb": copy_mb,
              "one_copy_at_load_mb": copy_at_load_mb, "generation": generating,
              "markdown": render(runs, steady, copy_mb, copy_at_load_mb, generating)}  # fmt: skip
    print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=1))
    publish("swaps", report, args.update_readme)


def render(
    runs: list[dict[str, Any]], steady: float, copy_mb: float, copy_at_load_mb: float,
    generating: dict[str, dict[str, float]],
) -> str:  # fmt: skip
    idle = runs[0]["p99_ms"]
    rows = []
    for r in runs:
        side = r.get("side") or {}
        peak = side.get("peak_rss_mb")
        p99_ok = r["p99_ms"] <= P99_RATIO * idle
        rss_ok = peak is None or peak <= steady + copy_mb
        met = r["errors"] == 0 and p99_ok and rss_ok
        rows.append([r["run"], f"{r['requests_per_s']:,.0f}", int(r["errors"]), f"{r['p50_ms']:.1f}",
                     f"{r['p99_ms']:.1f}", f"{r['p99_ms'] / idle:.2f}",
                     "" if peak is None else f"{peak:.0f}", "met" if met else "NOT met"])  # fmt: skip
    md = table(["/sentiment, 16 connections", "req/s", "failed", "p50 ms", "p99 ms", "p99 / idle",
                "peak RSS MB", ""], rows)  # fmt: skip
    idle_gen = generating["idle"]
    keys = ("one_stream_chars_per_s", "streams_32_chars_per_s", "batch_sentences_per_s")
    gen_rows = [[name, *(f"{g[k]:,.0f} ({g[k] / idle_gen[k]:.2f})" for k in keys)] for name, g in generating.items()]
    gen_md = table(["the service", "generation, 1 stream, chars/s (of idle)", "32 streams, chars/s (of idle)",
                    "/sentiment/batch, sentences/s (of idle)"], gen_rows)  # fmt: skip
    return md + (
        f"\n\nSteady RSS {steady:.0f} MB (after the idle run); one more copy of the classifier takes {copy_mb:.0f} MB "
        f"once it has served these requests ({copy_at_load_mb:.0f} MB as it loads), so a swap may peak at "
        f"{steady + copy_mb:.0f} MB. Targets: no failed request, p99 ≤ {P99_RATIO:.0f}× idle. Each swap writes a "
        "copy of the serving version as the next number (`python bench/swaps.py --update-readme`).\n\n" + gen_md
    )


if __name__ == "__main__":
    main()
