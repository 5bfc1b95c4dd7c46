"""How long a classifier forward in the service's model thread waits for the GIL: `python -m app` with the default
artifacts and RNN_FORWARD_PROCESS=false (single-text batches in the model thread), wrk on POST /sentiment at 64
connections, and per forward of the ONNX runner its wall time against its thread's CPU time.

    python bench/forward_wait.py [--seconds 10] [--update-readme]

The difference is the time the thread was not running: after ONNX Runtime returns, it waits to take the GIL back
from the event loop (CPython hands it over when the loop blocks, or after its switch interval, 5 ms). This is why
single-text batches run in a process of their own by default (app/serving/forward_process.py); the peers table
(bench/peers.py) serves /sentiment both ways. Writes bench/results/forward_wait.json; `--update-readme` rewrites its
table in docs/results.md.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.peers import Server, launch, shut  # noqa: E402
from bench.readme import publish, table  # noqa: E402
from bench.serve import write_bodies, wrk  # noqa: E402

CONNECTIONS = 64
RECORDS = "RNN_BENCH_FORWARD_RECORDS"  # where the instrumented server writes its records


def serve_instrumented() -> int:
    """`python -m app` whose ONNX runner records (start, wall s, thread CPU s, texts) per forward, written at exit."""
    from app.__main__ import main as app_main
    from model.sentiment.onnx_runtime import OnnxRunner

    records: list[tuple[float, float, float, int]] = []
    infer = OnnxRunner.infer

    def timed(self: OnnxRunner, ids: Any, lengths: Any, pool: Any = None) -> Any:
        wall, cpu = time.monotonic(), time.thread_time()
        out = infer(self, ids, lengths, pool)
        records.append((wall, time.monotonic() - wall, time.thread_time() - cpu, len(ids)))
        return out

    OnnxRunner.infer = timed  # type: ignore[method-assign]
    atexit.register(lambda: Path(os.environ[RECORDS]).write_text(json.dumps(records)))
    return app_main()


def measure(seconds: float, workdir: Path) -> dict[str, Any]:
    bodies, _ = write_bodies(workdir)
    out = workdir / "records.json"
    server = Server("service-thread", [sys.executable, str(Path(__file__).resolve()), "--serve"], ("GET", "/ready"),
                    env=(("RNN_FORWARD_PROCESS", "false"), (RECORDS, str(out))))  # fmt: skip
    running = launch(server, workdir)
    try:
        wrk(running.port, "/sentiment", bodies, CONNECTIONS, 2)  # warm-up
        start = time.monotonic()
        load = wrk(running.port, "/sentiment", bodies, CONNECTIONS, seconds)
        end = time.monotonic()
    finally:
        shut(running)
    records = [r for r in json.loads(out.read_text()) if start <= r[0] and r[0] + r[1] <= end]
    walls = [r[1] * 1e6 for r in records]
    waits = sorted(max(0.0, (r[1] - r[2]) * 1e6) for r in records)
    n = len(waits)
    return {
        "requests_per_s": load["requests_per_s"], "forwards": n,
        "texts_per_forward": statistics.mean(r[3] for r in records),
        "wall_us_mean": statistics.mean(walls), "cpu_us_mean": statistics.mean(r[2] * 1e6 for r in records),
        "wait_us_mean": statistics.mean(waits), "wait_share": sum(waits) / sum(walls),
        "wait_us": {f"p{q}": waits[min(n - 1, q * n // 100)] for q in (50, 90, 99)},
        "over_1ms": sum(w > 1000 for w in waits) / n,
    }  # fmt: skip


def render(r: dict[str, Any]) -> str:
    w = r["wait_us"]
    rows = [[f"{r['forwards']:,}", f"{r['texts_per_forward']:.1f}", f"{r['wall_us_mean']:,.0f}",
             f"{r['cpu_us_mean']:,.0f}", f"{r['wait_us_mean']:,.0f} ({100 * r['wait_share']:.0f} %)",
             f"{w['p50']:,.0f} / {w['p90']:,.0f} / {w['p99']:,.0f}", f"{100 * r['over_1ms']:.0f} %"]]  # fmt: skip
    header = ["forwards", "texts each", "wall µs (mean)", "thread CPU µs (mean)", "waiting µs (mean, share)",
              "waiting p50 / p90 / p99 µs", "waiting over 1 ms"]  # fmt: skip
    return (table(header, rows) + f"\n\nThe model thread's forwards of single-text batches (RNN_FORWARD_PROCESS=false)"
            f" during {r['seconds']:g} s of wrk at {CONNECTIONS} connections on POST /sentiment"
            f" ({r['requests_per_s']:,.0f} req/s); waiting = wall time less the thread's CPU time"
            f" (`python bench/forward_wait.py`).")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the instrumented server
    args = parser.parse_args()
    if args.serve:
        sys.argv = sys.argv[:1]
        raise SystemExit(serve_instrumented())
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args.seconds, Path(tmp)) | {"seconds": args.seconds}
    print(json.dumps(report, indent=2))
    report["markdown"] = render(report)
    publish("forward_wait", report, args.update_readme)


if __name__ == "__main__":
    main()
