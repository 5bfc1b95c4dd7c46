"""Every default preset, trained as `python -m model train KIND` on this machine twice: with the CPU's own kernels,
and with PyTorch's and oneDNN's held to AVX2 (`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`), the instruction
set of an ordinary cloud CPU. A preset defined by epochs and steps trains the same steps under both, and must
reach the same quality (within 0.005 nats/char, 0.2 points of accuracy) and its ten-minute target with 20 % of
the time to spare when held.

    python bench/isa.py [--kinds generator,tagger,sentiment] [--keep artifacts] [--update-readme] [--render]

Each run is a fresh process (the variables are read when torch loads), checked to run the kernels it was given.
`--keep DIR` keeps the native runs' artifacts as DIR/KIND, the ones `make serve` loads.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.generator_quality import TARGET_LOSS  # noqa: E402
from bench.readme import RESULTS, publish, table, update_section  # noqa: E402
from bench.sentiment_quality import TARGET_DEFAULT as SENTIMENT_TARGET  # noqa: E402
from bench.tagger_quality import TARGET_DEFAULT as TAGGER_TARGET  # noqa: E402
from model.artifacts import copy_artifact, load_artifact  # noqa: E402
from model.versions import writing  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOLD = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
BUDGET_S, HEADROOM = 600.0, 1.2
# the largest difference between the two runs' quality that still counts as the same model
SAME = {"generator": 0.005, "tagger": 0.002, "sentiment": 0.002}
# each preset's quality target (its quality table's): (lower is better, bound)
TARGETS = {"generator": (True, TARGET_LOSS), "tagger": (False, TAGGER_TARGET), "sentiment": (False, SENTIMENT_TARGET)}


def environment(held: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in HOLD}
    return {**env, **HOLD} if held else env


def capability(env: dict[str, str]) -> str:
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def quality(kind: str, metrics: dict[str, Any]) -> tuple[str, float]:
    if kind == "generator":
        return "val loss (nats/char)", float(metrics["val_loss"])
    return "test accuracy", float(metrics["test"]["accuracy"])


def train(kind: str, held: bool, out: Path, data_dir: str | None) -> dict[str, Any]:
    env = environment(held)
    kernels = capability(env)
    if held and kernels != "AVX2":
        raise SystemExit(f"ATEN_CPU_CAPABILITY=avx2 did not take effect: torch reports {kernels}")
    cmd = [sys.executable, "-m", "model", "train", kind, "--out", str(out), "--threads", "2"]
    cmd += ["--data-dir", data_dir] if data_dir else []
    log = out.parent / f"{out.name}.log"
    started = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}); its log: {log.read_text()[-2000:]}")
    artifact = load_artifact(out)
    history = artifact.config.training["history"]
    name, value = quality(kind, artifact.config.metrics)
    return {
        "kind": kind,
        "kernels": kernels,
        "onednn": env.get("ONEDNN_MAX_CPU_ISA", "any"),
        "metric": name,
        "quality": value,
        "epochs": len(history),
        "steps": history[-1].get("step"),
        "wall_s": wall,
        "weights_sha256": artifact.sha256,
    }


def render(runs: list[dict[str, Any]]) -> str:
    rows, checks = [], []
    for kind in sorted({r["kind"] for r in runs}, key=list(SAME).index):
        native, held = (next(r for r in runs if r["kind"] == kind and r["held"] == h) for h in (False, True))
        for r in (native, held):
            kernels = f"PyTorch {r['kernels']}, oneDNN {'up to ' + r['onednn'] if r['onednn'] != 'any' else 'any'}"
            rows.append([f"{kind}, default preset", kernels, r["metric"], r["quality"], r["epochs"], r["steps"],
                         f"{r['wall_s']:.0f}", r["weights_sha256"][:12]])  # fmt: skip
        gap = abs(native["quality"] - held["quality"])
        fits = held["wall_s"] * HEADROOM <= BUDGET_S
        same_steps = native["steps"] == held["steps"]
        lower, bound = TARGETS[kind]
        good = all((r["quality"] <= bound) if lower else (r["quality"] >= bound) for r in (native, held))
        checks.append([kind, f"{gap:.4f} (≤ {SAME[kind]})", "yes" if same_steps else "NO",
                       f"{'≤' if lower else '≥'} {bound}: {'both' if good else 'NOT both'}",
                       f"{held['wall_s']:.0f} (≤ {BUDGET_S / HEADROOM:.0f})",
                       "met" if gap <= SAME[kind] and fits and same_steps and good else "NOT met"])  # fmt: skip
    md = table(["preset", "CPU kernels", "metric", "value", "epochs", "steps", "wall s", "weights sha256"], rows)
    md += "\n\n" + table(
        ["kind", "quality gap, native vs AVX2", "same steps", "quality target", "AVX2 wall s", ""], checks
    )
    native_kernels = next(r["kernels"] for r in runs if not r["held"])
    return md + (
        "\n\n`python -m model train KIND --threads 2`, each a fresh process on this 2-core machine "
        f"({native_kernels}), the two runs of a kind one after the other; the held runs set ATEN_CPU_CAPABILITY=avx2 "
        "ONEDNN_MAX_CPU_ISA=AVX2. The generator's target is its val loss table's; the tagger's and the classifier's "
        "are their quality tables'."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="generator,tagger,sentiment")
    parser.add_argument("--data-dir", help="the data sets' mirror (default: $RNN_DATA_DIR)")
    parser.add_argument("--keep", type=Path, help="keep the native runs' artifacts here, one directory per kind")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="redraw the table in docs/results.md from bench/results/isa.json"
    )
    args = parser.parse_args()
    if args.render:
        update_section("isa", render(json.loads((RESULTS / "isa.json").read_text())["runs"]))
        return
    kinds = args.kinds.split(",")
    # a kind not rerun keeps its last pair: each pair is measured side by side, kinds need not be
    earlier = json.loads((RESULTS / "isa.json").read_text())["runs"] if (RESULTS / "isa.json").exists() else []
    runs = [r for r in earlier if r["kind"] not in kinds]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for held in (False, True):
                out = Path(tmp) / f"{kind}-{'avx2' if held else 'native'}"
                runs.append({**train(kind, held, out, args.data_dir), "held": held})
                print(json.dumps(runs[-1]), flush=True)
                if args.keep and not held:
                    with writing(args.keep / kind) as kept:
                        copy_artifact(out, kept)
    publish("isa", {"runs": runs, "markdown": render(runs)}, args.update_readme)


if __name__ == "__main__":
    main()
