"""Sentiment quality on SST-2: the default preset beside TF-IDF + logistic regression, the cell variants, the
tokenizer comparison, and the fast preset (the ensemble distilled into one BiLSTM). Prints JSON;
`--update-readme` rewrites the README tables.

    python bench/sentiment_quality.py [--sections default,cells,tokenizers,ablations,distill] [--update-readme]

Needs the `bench` extra (scikit-learn) and SST-2 under RNN_DATA_DIR (or the cache / a download).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import tfidf_logreg  # noqa: E402
from bench.readme import save_json, table, update_section  # noqa: E402
from model.config import merge, sentiment_preset  # noqa: E402
from model.data import load_sst2  # noqa: E402
from model.train_sentiment import train_sentiment  # noqa: E402

TARGET_DEFAULT, TARGET_QUICK = 0.855, 0.80


def run(preset: str, overrides: dict[str, Any], data: Any, workdir: Path, out: Path | None = None) -> dict[str, Any]:
    cfg = merge(sentiment_preset(preset), {"threads": 2, **overrides})
    out = out or workdir / f"{preset}-{'-'.join(f'{k}{v}' for k, v in overrides.items()) or 'base'}"
    started = time.perf_counter()
    metrics = train_sentiment(cfg, data, out)
    wall = time.perf_counter() - started
    config = json.loads((out / "config.json").read_text())
    history = config["training"]["history"]
    return {
        "preset": preset,
        **overrides,
        "dev_accuracy": metrics["dev"]["accuracy"],
        "test_accuracy": metrics["test"]["accuracy"],
        "test_macro_f1": metrics["test"]["macro_f1"],
        "ece_before": metrics["calibration"]["ece_before"],
        "ece_after": metrics["calibration"]["ece_after"],
        "wall_s": wall,
        "parameters": config["parameters"],
        "grad_norm_mean": sum(h["grad_norm_mean"] for h in history) / len(history),
        "grad_norm_max": max(h["grad_norm_max"] for h in history),
        "clipped_fraction": sum(h["clipped_fraction"] for h in history) / len(history),
        "teacher": metrics.get("teacher"),  # a distilled run: the ensemble it learned from
    }


QUALITY_HEADER = ["model", "dev acc", "test acc", "test macro-F1", "test ECE (raw → calibrated)", "wall s", "params"]


def quality_row(name: str, r: dict[str, Any]) -> list[Any]:
    """A trained run's row of the quality tables."""
    return [name, r["dev_accuracy"], r["test_accuracy"], r["test_macro_f1"],
            f"{r['ece_before']:.4f} → {r['ece_after']:.4f}", f"{r['wall_s']:.0f}", f"{r['parameters']:,}"]  # fmt: skip


def section_default(data: Any, workdir: Path, keep: Path | None = None) -> dict[str, Any]:
    ours = run("default", {}, data, workdir, keep)
    quick = run("quick", {}, data, workdir)
    baseline = tfidf_logreg(data)
    rows = [
        quality_row("BiLSTM ensemble (default preset)", ours),
        quality_row("BiLSTM (quick preset)", quick),
        ["TF-IDF (1-2 grams) + logistic regression", baseline["dev_accuracy"], baseline["test_accuracy"],
         baseline["test_macro_f1"], "–", f"{baseline['wall_s']:.0f}", f"{baseline['parameters']:,}"],
    ]  # fmt: skip
    md = table(QUALITY_HEADER, rows)
    md += (
        f"\n\nTargets: default ≥ {TARGET_DEFAULT:.1%} test accuracy in ≤ 600 s "
        f"({'met' if ours['test_accuracy'] >= TARGET_DEFAULT and ours['wall_s'] <= 600 else 'NOT met'}); "
        f"quick ≥ {TARGET_QUICK:.0%} in ≤ 60 s "
        f"({'met' if quick['test_accuracy'] >= TARGET_QUICK and quick['wall_s'] <= 60 else 'NOT met'}). "
        "Wall time includes tokenizer training, evaluation and writing the artifact, on 2 threads."
    )
    return {"default": ours, "quick": quick, "tfidf_logreg": baseline, "markdown": md}


def section_cells(data: Any, workdir: Path) -> dict[str, Any]:
    results = [
        run("quick", {"cell": cell, "bidirectional": bidi}, data, workdir)
        for cell in ("rnn", "gru", "lstm")
        for bidi in (False, True)
    ]
    rows = [
        [r["cell"], "yes" if r["bidirectional"] else "no", r["dev_accuracy"], r["test_accuracy"],
         f"{r['grad_norm_mean']:.3f}", f"{r['grad_norm_max']:.2f}", f"{r['clipped_fraction']:.1%}",
         f"{r['wall_s']:.0f}"]
        for r in results
    ]  # fmt: skip
    md = table(
        ["cell", "bidirectional", "dev acc", "test acc", "grad norm mean", "grad norm max", "steps clipped", "wall s"],
        rows,
    )
    return {"runs": results, "markdown": md}


def section_tokenizers(data: Any, workdir: Path) -> dict[str, Any]:
    results = [
        run("quick", {"tokenizer": scheme, "vocab_size": size}, data, workdir)
        for scheme, size in (("word", 30000), ("wordpiece", 8000), ("bpe", 8000))
    ]
    rows = [[r["tokenizer"], r["vocab_size"], r["dev_accuracy"], r["test_accuracy"]] for r in results]
    md = table(["tokenizer (NFKC + lowercase)", "vocab limit", "dev acc", "test acc"], rows)
    best = max(results, key=lambda r: r["dev_accuracy"])
    md += f"\n\nChosen by dev accuracy: **{best['tokenizer']}**."
    return {"runs": results, "markdown": md}


def section_ablations(data: Any, workdir: Path) -> dict[str, Any]:
    """What the default's choices buy: pooling (quick preset) and the ensemble (default preset, one member)."""
    runs = [("quick", {"pooling": p}) for p in ("last", "mean", "max", "maxmean")] + [("default", {"ensemble": 1})]
    results = [run(preset, overrides, data, workdir) for preset, overrides in runs]
    rows = [
        [f"{r['preset']} preset, " + ", ".join(f"{k} {r[k]}" for k in ("pooling", "ensemble") if k in r),
         r["dev_accuracy"], r["test_accuracy"], f"{r['wall_s']:.0f}"]
        for r in results
    ]  # fmt: skip
    md = table(["variant", "dev acc", "test acc", "wall s"], rows)
    md += "\n\nThe default preset itself (max+mean pooling, ensemble 4) is the first table's first row."
    return {"runs": results, "markdown": md}


def section_distill(data: Any, workdir: Path, keep: Path | None = None) -> dict[str, Any]:
    """The fast preset: the default preset's ensemble (same seed, same data: the same teacher) distilled into one
    BiLSTM, which costs about a quarter of the ensemble to serve (bench/runtime.py, bench/serve.py)."""
    fast = run("fast", {}, data, workdir, keep)
    teacher = fast["teacher"]
    rows = [
        quality_row("one BiLSTM distilled from the ensemble (fast preset)", fast),
        [f"its teacher: the {teacher['ensemble']}-member ensemble, trained in the same run", teacher["dev_accuracy"],
         teacher["test_accuracy"], "–", "–", "–", "–"],
    ]  # fmt: skip
    md = table(QUALITY_HEADER, rows)
    md += (
        f"\n\nThe student starts from the teacher's member {teacher['start']} (dev accuracy "
        f"{teacher['member_dev_accuracy'][teacher['start']]:.4f} alone) and changes test accuracy by "
        f"{fast['test_accuracy'] - teacher['test_accuracy']:+.4f} against its teacher. Wall time covers both."
    )
    return {"fast": fast, "markdown": md}


SECTIONS = {
    "default": section_default,
    "cells": section_cells,
    "tokenizers": section_tokenizers,
    "ablations": section_ablations,
    "distill": section_distill,
}
README_NAMES = {
    "default": "sentiment_quality",
    "cells": "sentiment_cells",
    "tokenizers": "sentiment_tokenizers",
    "ablations": "sentiment_ablations",
    "distill": "sentiment_distill",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="default,cells,tokenizers,ablations,distill")
    parser.add_argument("--data-dir", help="SST-2 mirror (default: $RNN_DATA_DIR)")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument(
        "--keep", type=Path, help="also keep the default preset's artifact here (e.g. artifacts/sentiment)"
    )
    parser.add_argument(
        "--keep-fast", type=Path, help="also keep the fast preset's artifact here (e.g. artifacts/sentiment-fast)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    data = load_sst2(args.data_dir)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sections.split(","):
            keep = {"default": args.keep, "distill": args.keep_fast}.get(name)
            extra = {"keep": keep} if keep else {}
            report[name] = SECTIONS[name](data, Path(tmp), **extra)
            save_json(f"sentiment_{name}", report[name])
            if args.update_readme:
                update_section(README_NAMES[name], report[name]["markdown"])
    print(json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "markdown"} for k, v in report.items()}, indent=2))


if __name__ == "__main__":
    main()
