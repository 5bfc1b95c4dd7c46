"""Translator quality on Multi30k German -> English (test_2016_flickr): the default and quick presets, trained and
scored in this run, beside the copy-the-source baseline (the source sentence as its own "translation", which shares
names, numbers and punctuation with the reference). Prints JSON; `--update-readme` rewrites its table in
docs/results.md.

    python bench/translator_quality.py [--presets default,quick] [--update-readme] [--keep DIR]

Targets (issue 33): default BLEU on lower-cased tokens >= 33.5 in <= 10 minutes of training on these 2 cores;
quick >= 10 BLEU in <= 90 s.
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

import sacrebleu

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import kernels, kernels_note, save_json, table, update_section  # noqa: E402
from model.artifacts import read_config  # noqa: E402
from model.config import merge  # noqa: E402
from model.translator.config import translator_preset  # noqa: E402
from model.translator.data import ParallelCorpus, load_parallel  # noqa: E402
from model.translator.train import train_translator  # noqa: E402
from model.versions import writing  # noqa: E402

TARGETS = {"default": (33.5, 600.0), "quick": (10.0, 90.0)}  # BLEU on lower-cased tokens, training seconds


def run(preset: str, corpus: ParallelCorpus, out: Path) -> dict[str, Any]:
    cfg = merge(translator_preset(preset), {"threads": 2})
    with writing(out) as out:  # a directory of versions (--keep artifacts/translator) gets its next one
        started = time.perf_counter()
        metrics = train_translator(cfg, corpus, out)
        wall = time.perf_counter() - started
    config = read_config(out)
    bleu, seconds = TARGETS[preset]
    test = metrics["test"]
    return {
        "preset": preset,
        **{k: test[k] for k in ("bleu", "bleu_lowercase_tokens", "chrf", "perplexity")},
        "dev_bleu": metrics["dev"]["bleu"],
        "beam": metrics["beam"],
        "epochs_run": metrics["epochs_run"],
        "train_s": metrics["train_seconds"],
        "wall_s": wall,
        "parameters": config.parameters,
        "network": config.network,
        "met": test["bleu_lowercase_tokens"] >= bleu and metrics["train_seconds"] <= seconds,
        "kernels": kernels(),
    }


def copy_source(corpus: ParallelCorpus) -> dict[str, float]:
    assert corpus.test is not None
    refs = [corpus.test.target]
    return {
        "bleu": sacrebleu.corpus_bleu(corpus.test.source, refs).score,
        "bleu_lowercase_tokens": sacrebleu.corpus_bleu(corpus.test.source, refs, lowercase=True).score,
        "chrf": sacrebleu.corpus_chrf(corpus.test.source, refs).score,
    }


def render(report: dict[str, Any]) -> str:
    rows = []
    for r in report["presets"]:
        bleu, seconds = TARGETS[r["preset"]]
        net = r["network"]
        rows.append([
            f"{r['preset']} ({net['cell'].upper()} {net['hidden_size']}, {net['attention']} attention,"
            f" {net['source_vocab_size']:,}/{net['target_vocab_size']:,} subwords)",
            r["epochs_run"], f"{r['train_s']:.0f}", f"{r['bleu']:.2f}", f"{r['bleu_lowercase_tokens']:.2f}",
            f"{r['chrf']:.2f}", f"{r['perplexity']:.2f}",
            f"≥ {bleu} in ≤ {seconds:.0f} s: {'met' if r['met'] else 'NOT met'}",
        ])  # fmt: skip
    c = report["copy_source"]
    rows.append(["copy the source (baseline)", "", "", f"{c['bleu']:.2f}", f"{c['bleu_lowercase_tokens']:.2f}",
                 f"{c['chrf']:.2f}", "", ""])  # fmt: skip
    header = ["model", "epochs", "training s", "sacreBLEU", "BLEU, lower-cased tokens", "chrF", "perplexity",
              "target (lower-cased BLEU, time)"]  # fmt: skip
    beam = report["presets"][0]["beam"] if report["presets"] else "-"
    return table(header, rows) + (
        f"\n\nMulti30k German → English, test_2016_flickr (1,000 sentences), beam {beam}; sacreBLEU is cased,"
        " detokenized, 13a (the figure to quote), the lower-cased BLEU is sacreBLEU with `lowercase=True` (what"
        f" tutorials and model cards report). {kernels_note(report['kernels'])}; 2 threads"
        " (`python bench/translator_quality.py --update-readme`)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="default,quick")
    parser.add_argument("--keep", type=Path, help="also keep the default preset's artifact here")
    parser.add_argument("--data-dir", help="Multi30k mirror (default: $RNN_DATA_DIR)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    corpus = load_parallel(data_dir=args.data_dir)
    report: dict[str, Any] = {"presets": [], "copy_source": copy_source(corpus), "kernels": kernels()}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            out = args.keep if preset == "default" and args.keep else Path(tmp) / preset
            report["presets"].append(run(preset, corpus, out))
    report["markdown"] = render(report)
    save_json("translator_quality", report)
    if args.update_readme:
        update_section("translator_quality", report["markdown"])
    print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2))


if __name__ == "__main__":
    main()
