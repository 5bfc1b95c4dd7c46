"""Translator quality on Multi30k German -> English (test_2016_flickr), trained and scored in this run, beside the
copy-the-source baseline (the source sentence as its own "translation", which shares names, numbers and punctuation
with the reference). Sections:

  presets   the default and quick presets;
  ablation  one change at a time to the quick preset (same size, same epochs): additive attention instead of
            multiplicative, no attention (Cho et al.'s fixed summary), a one-direction encoder, LSTM cells, one
            joint subword vocabulary instead of one per side, BPE subwords instead of Unigram;
  decoding  greedy against beam 4 and 8 on --artifact, or else the default preset's artifact (the quick one's when the
            default was not trained in this run): BLEU and sentences/s, one process, batches of 64;
  pair      the other direction, English -> German, given as your own line-aligned files (--source/--target):
            the --presets against copying the source on that pair, beside German -> English (this run's presets
            rows, or else the last saved ones).

Prints JSON; `--update-readme` rewrites its tables in docs/results.md.

    python bench/translator_quality.py [--sections presets,ablation,decoding,pair] [--presets default,quick]
                                       [--update-readme] [--keep DIR]

A preset left out of --presets keeps its rows from the last run's results (bench/results/), so the quick rows can be
rerun alone.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import kernels, kernels_note, load_result, publish, table  # noqa: E402
from model.artifacts import read_config  # noqa: E402
from model.config import merge  # noqa: E402
from model.translator.config import translator_preset  # noqa: E402
from model.translator.data import ParallelCorpus, SplitFiles, load_parallel  # noqa: E402
from model.translator.predictor import load_translator  # noqa: E402
from model.translator.train import scores, train_translator  # noqa: E402
from model.versions import writing  # noqa: E402

TARGETS = {"default": (33.5, 600.0), "quick": (10.0, 90.0)}  # BLEU on lower-cased tokens, training seconds


def run(preset: str, corpus: ParallelCorpus, out: Path, change: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg = merge(translator_preset(preset), {"threads": 2, **(change or {})})
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
        "artifact": str(out),
        "kernels": kernels(),
    }


def copy_source(corpus: ParallelCorpus) -> dict[str, float]:
    assert corpus.test is not None
    return scores(corpus.test.source, corpus.test.target)


ABLATIONS: dict[str, dict[str, Any]] = {
    "additive attention (Bahdanau)": {"attention": "additive"},
    "no attention (the encoder's summary only)": {"attention": "none"},
    "one-direction encoder": {"bidirectional": False},
    "LSTM cells": {"cell": "lstm"},
    "one joint subword vocabulary for both sides": {"joint_vocabulary": True},
    "BPE subwords instead of Unigram": {"subwords": "bpe"},
}


def ablation(corpus: ParallelCorpus, workdir: Path, base: dict[str, Any] | None) -> dict[str, Any]:
    """The quick preset, then each change in ABLATIONS on top of it alone (`base`: its row when already run)."""
    rows = {"quick preset (multiplicative attention, bidirectional GRU, Unigram per side)":
            base or run("quick", corpus, workdir / "q")}  # fmt: skip
    for name, change in ABLATIONS.items():
        rows[name] = run("quick", corpus, workdir / name.split()[0], change)
    return rows


def decoding(artifact: Path, corpus: ParallelCorpus) -> dict[str, Any]:
    """Greedy, beam 4 and beam 8 on one artifact: test BLEU and sentences/s (after one warm-up batch)."""
    assert corpus.test is not None
    model = load_translator(artifact)
    texts = corpus.test.source
    model.translate(texts[:64], model.params(beam=1))
    rows: dict[str, Any] = {}
    for beam in (1, 4, 8):
        started = time.perf_counter()
        out = model.translate(texts, model.params(beam=beam))
        seconds = time.perf_counter() - started
        rows[str(beam)] = {**scores([r["translation"] for r in out], corpus.test.target),
                           "sentences_per_s": len(texts) / seconds}  # fmt: skip
    return {"artifact_preset": read_config(artifact).training.get("preset"), "beams": rows}


def other_pair(corpus: ParallelCorpus, workdir: Path, presets: list[str]) -> dict[str, Any]:
    """English -> German from line-aligned files, as a user gives their own pair (--source/--target)."""
    assert corpus.test is not None
    files: dict[str, SplitFiles] = {}
    for split, pairs in (("train", corpus.train), ("dev", corpus.dev), ("test", corpus.test)):
        source, target = workdir / f"{split}.en", workdir / f"{split}.de"
        source.write_text("\n".join(pairs.target) + "\n", encoding="utf-8")
        target.write_text("\n".join(pairs.source) + "\n", encoding="utf-8")
        files[split] = SplitFiles(source=source, target=target)
    reverse = load_parallel(files["train"], files["dev"], files["test"])
    trained = {preset: run(preset, reverse, workdir / f"en-de-{preset}") for preset in presets}
    return {"presets": trained, "copy_source": copy_source(reverse)}


def metric_cells(r: dict[str, Any]) -> list[str]:
    return [f"{r['bleu']:.2f}", f"{r['bleu_lowercase_tokens']:.2f}", f"{r['chrf']:.2f}"]


def render_ablation(rows: dict[str, Any]) -> str:
    body = [[name, f"{r['train_s']:.0f}", *metric_cells(r), f"{r['perplexity']:.2f}"] for name, r in rows.items()]
    header = ["quick preset, one change", "training s", "sacreBLEU", "BLEU, lower-cased tokens", "chrF",
              "perplexity"]  # fmt: skip
    first = next(iter(rows.values()))
    net, epochs = first["network"], first["epochs_run"]
    return table(header, body) + (
        f"\n\nEach row trains the quick preset ({epochs} epoch(s), {net['cell'].upper()} {net['hidden_size']},"
        f" {net['source_vocab_size']:,} / {net['target_vocab_size']:,} subwords) with one change, on the same data"
        f" and seed; test_2016_flickr, beam {first['beam']}. So short a budget shows how fast each variant learns,"
        " not where it ends."
    )


def render_decoding(d: dict[str, Any]) -> str:
    body = [[("greedy" if b == "1" else f"beam {b}"), *metric_cells(r), f"{r['sentences_per_s']:,.0f}"]
            for b, r in d["beams"].items()]  # fmt: skip
    header = ["decoding", "sacreBLEU", "BLEU, lower-cased tokens", "chrF", "sentences/s"]
    return table(header, body) + (
        f"\n\nThe {d['artifact_preset']} preset's artifact on test_2016_flickr (1,000 sentences), one process,"
        " 2 threads, batches of 64 sentences of similar length (model/translator/decode.py's translate)."
    )


def render_pair(p: dict[str, Any], de_en: dict[str, dict[str, Any]]) -> str:
    body = [[f"{preset} preset, English → German", *metric_cells(r), f"{r['train_s']:.0f}"]
            for preset, r in p["presets"].items()]  # fmt: skip
    body.append(["copy the source, English → German", *metric_cells(p["copy_source"]), ""])
    for preset in p["presets"]:
        if preset in de_en:
            r = de_en[preset]
            body.append(
                [f"{preset} preset, German → English (for comparison)", *metric_cells(r), f"{r['train_s']:.0f}"]
            )
    header = ["model", "sacreBLEU", "BLEU, lower-cased tokens", "chrF", "training s"]
    return table(header, body) + (
        "\n\nThe same Multi30k sentences the other way round, handed to the trainer as plain line-aligned files"
        " (`--source train.en --target train.de`, and the same for dev and test), the way your own pair arrives."
        " These machines hold no other parallel corpus, so this is another direction rather than another pair"
        " of languages."
    )


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
    parser.add_argument("--sections", default="presets,ablation,decoding,pair")
    parser.add_argument("--presets", default="default,quick")
    parser.add_argument("--keep", type=Path, help="also keep the default preset's artifact here")
    parser.add_argument("--artifact", type=Path, help="decoding: this artifact (default: the one trained in this run)")
    parser.add_argument("--data-dir", help="Multi30k mirror (default: $RNN_DATA_DIR)")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    sections, presets = args.sections.split(","), args.presets.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    corpus = load_parallel(data_dir=args.data_dir)
    report: dict[str, Any] = {"presets": [], "copy_source": copy_source(corpus), "kernels": kernels()}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        saved = {r["preset"]: r for r in load_result("translator_quality").get("presets", [])}
        if "presets" in sections:
            for preset in presets:
                out = args.keep if preset == "default" and args.keep else workdir / preset
                report["presets"].append(run(preset, corpus, out))
            report["presets"] = list(with_saved({r["preset"]: r for r in report["presets"]}, saved).values())
            report["markdown"] = render(report)
            publish("translator_quality", report, args.update_readme)
        trained = {r["preset"]: r for r in report["presets"] if r["preset"] in presets}
        if "ablation" in sections:
            rows = ablation(corpus, workdir, trained.get("quick"))
            publish("translator_ablation", {"rows": rows, "markdown": render_ablation(rows)}, args.update_readme)
        if "decoding" in sections:
            if args.artifact is not None:
                artifact = args.artifact
            else:
                chosen = trained.get("default") or trained.get("quick") or run("quick", corpus, workdir / "quick")
                artifact = Path(chosen["artifact"])
            d = decoding(artifact, corpus)
            publish("translator_decoding", {**d, "markdown": render_decoding(d)}, args.update_readme)
        if "pair" in sections:
            p = other_pair(corpus, workdir, presets)
            p["presets"] = with_saved(p["presets"], load_result("translator_pair").get("presets", {}))
            de_en = {r["preset"]: r for r in report["presets"]} or saved
            publish("translator_pair", {**p, "markdown": render_pair(p, de_en)}, args.update_readme)
    print(json.dumps({k: v for k, v in report.items() if k != "markdown"}, indent=2))


def with_saved(trained: dict[str, Any], saved: dict[str, Any]) -> dict[str, Any]:
    """The rows of the presets trained in this run, and the last run's row of each preset not run this time (each
    row is one training), the default preset's first."""
    rows = {**saved, **trained}
    return dict(sorted(rows.items(), key=lambda item: item[0] != "default"))


if __name__ == "__main__":
    main()
