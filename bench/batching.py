"""The classifier's batching knobs, measured over HTTP: requests/s and latency of POST /sentiment at a given
concurrency for several RNN_BATCH_MAX_WAIT_MS x RNN_BATCH_MAX_SIZE settings, each against a fresh
`python -m app` on 127.0.0.1, all in one run, with the load from `wrk` (bench/wrk/post.lua, as bench/serve.py).
Prints JSON; `--update-readme` rewrites its table in docs/results.md.

    python bench/batching.py [--artifact artifacts/sentiment] [--seconds 8] [--concurrency 64] [--waits 0,2,5]
                             [--sizes 16,64]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import save_json, table, update_section  # noqa: E402
from bench.serve import write_bodies, wrk  # noqa: E402
from bench.service_accuracy import free_port, serve, stop  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--waits", default="0,2,5")
    parser.add_argument("--sizes", default="16,64")
    parser.add_argument("--artifact", type=Path, default=ROOT / "artifacts/sentiment")
    parser.add_argument("--generator", type=Path, default=ROOT / "artifacts/generator")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="batching-") as tmp:
        bodies, _ = write_bodies(Path(tmp))
        for size in (int(x) for x in args.sizes.split(",")):
            for wait in (float(x) for x in args.waits.split(",")):
                port = free_port()
                env = {"RNN_BATCH_MAX_WAIT_MS": str(wait), "RNN_BATCH_MAX_SIZE": str(size)}
                proc = serve(args.artifact, args.generator, port, env)
                try:
                    wrk(port, "/sentiment", bodies, args.concurrency, 2)  # warm-up
                    result = wrk(port, "/sentiment", bodies, args.concurrency, args.seconds)
                finally:
                    stop(proc)
                runs.append({"batch_max_size": size, "batch_max_wait_ms": wait, **result})
                print(json.dumps(runs[-1]), flush=True)
    best = max(runs, key=lambda r: r["requests_per_s"])
    rows = [[r["batch_max_size"], f"{r['batch_max_wait_ms']:g}", f"{r['requests_per_s']:.0f}", f"{r['p50_ms']:.1f}",
             f"{r['p99_ms']:.1f}", r["errors"]] for r in runs]  # fmt: skip
    md = table(["RNN_BATCH_MAX_SIZE", "RNN_BATCH_MAX_WAIT_MS", "req/s", "p50 ms", "p99 ms", "errors"], rows)
    md += (
        f"\n\nPOST /sentiment to {args.artifact.name}, {args.concurrency} wrk connections for {args.seconds:g} s per "
        f"setting, SST-2 dev sentences, one run. Most requests/s: size {best['batch_max_size']}, "
        f"wait {best['batch_max_wait_ms']:g} ms."
    )
    save_json("batching", {"concurrency": args.concurrency, "seconds": args.seconds, "runs": runs})
    if args.update_readme:
        update_section("batching", md)


if __name__ == "__main__":
    main()
