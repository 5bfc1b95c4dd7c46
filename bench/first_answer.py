"""How soon a newcomer gets answers: `make serve` on a fresh clone (this repository's HEAD, its virtual environment
already installed), timed from the command to the first 200 of each model route, natively and with PyTorch and
oneDNN held to AVX2 (an ordinary cloud CPU's kernels). Each run then watches for `--watch` more seconds, or with
`--until-defaults` until every model serves its default preset: the background trainer's versions being written
and swapped in (when each version directory appeared, when the service answered with it), and the service's
answers to /sentiment meanwhile.

    python bench/first_answer.py [--holds native,avx2] [--watch 0 | --until-defaults] [--update-readme]

Targets (issue 31): the first 200 from /sentiment within 90 s, from every route within 3 minutes; every default
preset serving by the time the last one has trained, with no restart.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import publish, table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HELD = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
ROUTES = {
    "/sentiment": {"text": "a fine film"},
    "/generate": {"prompt": "ROMEO:", "max_new_tokens": 20, "seed": 1},
    "/tag": {"text": "I saw the saw."},
    "/translate": {"text": "Ein Hund läuft über eine Wiese.", "beam": 1},
}
TARGET_FIRST, TARGET_ALL = 90.0, 180.0
DEFAULTS_DEADLINE_S = 5400  # the three default presets one after another at one thread: about 30 minutes here


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answer(port: int, route: str) -> tuple[int, str | None]:
    """The route's status and the version that answered (0 when it did not)."""
    body = json.dumps(ROUTES[route]).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{route}", body, {"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers.get("x-model-version")
    except OSError:
        return 0, None


def cards(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/models", timeout=10) as response:
        return {c["name"]: c for c in json.load(response)}


def on_defaults(now: dict[str, Any]) -> bool:
    """Every model (its /models card) serves a version of its default preset, and nothing is training."""
    return all(c["preset"] == "default" and not c.get("in_training") for c in now.values())


def written_s(clone: Path, model: str, version: int, wall_start: float) -> float | None:
    """When a version directory was renamed into place (its files are written before: model/versions.py)."""
    try:
        return round((clone / "artifacts" / model / str(version)).stat().st_mtime - wall_start, 1)
    except OSError:
        return None


def run(hold: str, data_dir: str, watch: float, until_defaults: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        (clone / ".venv").symlink_to(ROOT / ".venv")  # installed: the target starts from `make serve`
        os.utime(clone / ".venv" / ".installed")  # newer than the clone's pyproject.toml: make installs nothing
        port = free_port()
        env = {**os.environ, "RNN_DATA_DIR": data_dir, "RNN_PORT": str(port), **(HELD if hold == "avx2" else {})}
        log = (Path(tmp) / "serve.log").open("wb")
        started, wall_start = time.monotonic(), time.time()
        proc = subprocess.Popen(["make", "serve"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        first: dict[str, float] = {}
        swaps: list[dict[str, Any]] = []
        try:
            while len(first) < len(ROUTES):
                assert proc.poll() is None, (Path(tmp) / "serve.log").read_text()[-3000:]
                assert time.monotonic() - started < 900, f"no answer from every route in 15 minutes: {first}"
                for route in ROUTES:
                    if route not in first and answer(port, route)[0] == 200:
                        first[route] = time.monotonic() - started
                time.sleep(0.25)
            seen = {name: card["version"] for name, card in cards(port).items()}
            statuses: dict[int, int] = {}

            while True:
                status, _ = answer(port, "/sentiment")
                statuses[status] = statuses.get(status, 0) + 1
                now = cards(port)  # one reading for both the swaps and the end: none is missed between the two
                for name, card in now.items():
                    if card["version"] != seen[name]:
                        seen[name] = card["version"]
                        swaps.append({"model": name, "version": card["version"], "preset": card["preset"],
                                      "written_s": written_s(clone, name, card["version"], wall_start),
                                      "at_s": round(time.monotonic() - started, 1)})  # fmt: skip
                if until_defaults:
                    assert time.monotonic() - started < DEFAULTS_DEADLINE_S, f"defaults not all served: {swaps}"
                    assert proc.poll() is None, (Path(tmp) / "serve.log").read_text()[-3000:]
                    if on_defaults(now):
                        break
                elif time.monotonic() - started >= max(first.values()) + watch:
                    break
                time.sleep(1.0)
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        return {"hold": hold, "first_s": {r: round(s, 1) for r, s in first.items()}, "swaps": swaps,
                "statuses_while_watching": statuses if watch or until_defaults else {},
                "until_defaults": until_defaults}  # fmt: skip


def render(runs: list[dict[str, Any]]) -> str:
    rows = []
    for r in runs:
        firsts = r["first_s"]
        last = max(firsts.values())
        met = firsts["/sentiment"] <= TARGET_FIRST and last <= TARGET_ALL
        kernels = "PyTorch AVX2, oneDNN up to AVX2" if r["hold"] == "avx2" else "native"
        rows.append(
            [kernels, *(f"{firsts[route]:.0f}" for route in ROUTES), f"{last:.0f}", "met" if met else "NOT met"]
        )
    md = table(["CPU kernels", *(f"first 200 from {route}, s" for route in ROUTES), "every route, s",
                f"targets: /sentiment ≤ {TARGET_FIRST:.0f} s, all ≤ {TARGET_ALL:.0f} s"], rows)  # fmt: skip
    return md + (
        "\n\n`make serve` on a fresh clone of this repository with its virtual environment installed, timed from the "
        "command to each route's first 200 (`python bench/first_answer.py --update-readme`)."
    )


def render_defaults(run: dict[str, Any]) -> str:
    """The run watched until every default served: each version as the trainer wrote it and the service took it."""
    rows = [[s["model"], s["version"], s["preset"], f"{s['written_s']:.0f}", f"{s['at_s']:.0f}",
             f"{s['at_s'] - s['written_s']:.0f}"] for s in run["swaps"]]  # fmt: skip
    statuses = ", ".join(f"{n:,} × {code}" for code, n in sorted(run["statuses_while_watching"].items()))
    last = max(s["at_s"] for s in run["swaps"])
    kernels = "held to AVX2" if run["hold"] == "avx2" else "native kernels"
    return table(["model", "version", "preset", "written at, s", "serving at, s", "lag, s"], rows) + (
        f"\n\nThe same `make serve` ({kernels}) watched until every model served its default preset, with no "
        f"restart: the last at {last / 60:.0f} min. Meanwhile `/sentiment` answered {statuses} "
        "(`python bench/first_answer.py --holds native --until-defaults --update-readme`)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--holds", default="native,avx2", help="native, avx2 (the kernels held to AVX2), or both")
    parser.add_argument("--data-dir", default=os.environ.get("RNN_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--watch", type=float, default=0.0, help="seconds to keep watching after the first answers")
    parser.add_argument("--until-defaults", action="store_true", help="watch until every model serves its default")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    runs = []
    for hold in args.holds.split(","):
        runs.append(run(hold, str(Path(args.data_dir).resolve()), args.watch, args.until_defaults))
        print(json.dumps(runs[-1]), flush=True)
    if args.until_defaults:  # its own section: the first answers' table keeps both kernel holds
        publish("defaults_served", {"runs": runs, "markdown": "\n\n".join(map(render_defaults, runs))},
                args.update_readme)  # fmt: skip
    else:
        publish("first_answer", {"runs": runs, "markdown": render(runs)}, args.update_readme)


if __name__ == "__main__":
    main()
