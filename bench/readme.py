"""Rewrite a generated section of docs/results.md, between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, and
the README's "at a glance" table, which reads bench/results/*.json (`python bench/readme.py` redraws it alone).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC = ROOT / "docs" / "results.md"  # where every table goes
RESULTS = ROOT / "bench" / "results"


def update_section(name: str, markdown: str, doc: Path = DOC) -> None:
    """Section NAME of `doc` (docs/results.md) becomes `markdown`; then the README's glance table is redrawn."""
    _replace(doc, name, markdown)
    if doc == DOC:
        _replace(README, "glance", glance())


def _replace(doc: Path, name: str, markdown: str) -> None:
    text = doc.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{doc.name} has no section {start} … {end}")
    block = f"{start}\n{markdown.strip()}\n{end}"
    doc.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


def load_result(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def glance() -> str:
    """Eleven rows, each a headline figure from bench/results/*.json beside what a user would otherwise have, linking
    to its table in docs/results.md. A benchmark not run yet gives no row."""
    rows: list[list[str]] = []

    def row(what: str, anchor: str, build: Any) -> None:
        try:
            ours, theirs = build()
        except (KeyError, IndexError, TypeError, ValueError):
            return
        rows.append([f"[{what}](docs/results.md#{anchor})", ours, theirs])

    s, small, g, t = (
        load_result("sentiment_default"),
        load_result("sentiment_small"),
        load_result("generator_default"),
        load_result("tagger_default"),
    )
    serve, speed, first, swaps = (
        load_result("serve"),
        load_result("generator_speed"),
        load_result("first_answer"),
        load_result("swaps"),
    )
    soak, tq, peers = load_result("soak"), load_result("translator_quality"), load_result("peers")
    row(
        "SST-2 sentiment, test accuracy",
        "sentiment-on-sst-2",
        lambda: (f"{s['default']['test_accuracy']:.4f}", f"TF-IDF + LR {s['tfidf_logreg']['test_accuracy']:.4f}"),
    )
    row(
        "MR · SUBJ · MPQA (not tuned on), test accuracy",
        "other-peoples-data-three-small-sets-the-preset-was-not-tuned-on",
        lambda: (
            " · ".join(f"{small['runs'][k]['default']['test_accuracy']:.4f}" for k in ("mr", "subj", "mpqa")),
            "TF-IDF + LR "
            + " · ".join(f"{small['runs'][k]['tfidf']['test_accuracy']:.4f}" for k in ("mr", "subj", "mpqa")),
        ),
    )
    row(
        "tiny-shakespeare generator, val nats/char",
        "character-generator-on-tiny-shakespeare",
        lambda: (f"{g['default']['val_loss']:.4f} (GRU)", f"Kneser-Ney 5-gram {g['kneser_ney']['val_loss']:.4f}"),
    )
    row(
        "UD English EWT tagger, UPOS test accuracy",
        "part-of-speech-tagging-on-ud-english-ewt",
        lambda: (f"{t['default']['test_accuracy']:.4f}", f"most frequent tag {t['baseline']['test_accuracy']:.4f}"),
    )
    row(
        "Multi30k German to English, test BLEU (lower-cased)",
        "translation-on-multi30k-german-to-english",
        lambda: (
            f"{tq['presets'][0]['bleu_lowercase_tokens']:.2f} ({tq['presets'][0]['preset']} preset)",
            f"copy the source {tq['copy_source']['bleu_lowercase_tokens']:.2f}",
        ),
    )
    row(
        "POST /sentiment, 64 connections",
        "serving-performance",
        lambda: (
            f"{serve['service']['sentiment']['64']['requests_per_s']:,.0f} req/s",
            f"{serve['verdicts']['over_naive']['value']:.1f}x a plain FastAPI + torch server",
        ),
    )
    row(
        "POST /sentiment, 64 connections, beside the serving frameworks",
        "against-the-serving-frameworks-people-pick-instead",
        lambda: (
            f"{peers['servers']['service']['sentiment']['64']['requests_per_s']:,.0f} req/s",
            " · ".join(f"{name} {peers['servers'][name]['sentiment']['64']['requests_per_s']:,.0f}"
                       for name in ("mosec", "litserve", "bentoml")),
        ),
    )  # fmt: skip
    row(
        "generation, one stream · 32 streams",
        "sampling-speed",
        lambda: (f"{speed['one_stream']:,.0f} · {speed['streams_32']:,.0f} chars/s", "targets 15,000 · 60,000"),
    )
    row(
        "`make serve` on a fresh clone to the first 200",
        "first-answers",
        lambda: (
            " · ".join(f"{s:.0f} s" for s in first["runs"][0]["first_s"].values()),
            " · ".join(first["runs"][0]["first_s"]) + "; targets 90 s, 180 s",
        ),
    )
    row(
        "p99 of /sentiment during a live swap",
        "swaps-under-load",
        lambda: (
            f"{max(r['p99_ms'] for r in swaps['runs'] if r['run'].startswith('swap')) / swaps['runs'][0]['p99_ms']:.1f}"
            f"x idle, {sum(r['errors'] for r in swaps['runs'])} failed",
            "target 3x, 0 failed",
        ),
    )
    row(
        "an hour of mixed load",
        "soak-an-hour-of-mixed-load",
        lambda: (
            f"{soak['requests']:,} requests, {soak['error_total']} errors",
            f"resident memory drift {soak['rss_drift']:+.1%}",
        ),
    )
    return table(["", "this service", "beside it"], rows)


def kernels() -> dict[str, str]:
    """The instruction set PyTorch's own kernels run with (ATEN_CPU_CAPABILITY=avx2 holds them to that of an
    ordinary cloud CPU) and the ceiling set for oneDNN's (ONEDNN_MAX_CPU_ISA): what a timing was measured under."""
    import torch  # only the training benchmarks ask, and this module stays importable without torch

    return {"aten": torch.backends.cpu.get_cpu_capability(), "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "any")}


def kernels_note(k: dict[str, str]) -> str:
    onednn = "any ISA" if k["onednn"] == "any" else f"up to {k['onednn']}"
    return f"CPU kernels: PyTorch {k['aten']}, oneDNN {onednn}"


def save_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return path


def publish(name: str, report: dict[str, Any], update_readme: bool) -> None:
    """The usual end of a benchmark: bench/results/NAME.json, the docs/results.md section NAME from
    report["markdown"] and the README's glance table (when asked), and that markdown on stdout."""
    save_json(name, report)
    if update_readme:
        update_section(name, report["markdown"])
    print(report["markdown"], flush=True)  # a long benchmark's log shows each table as it is done


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    _replace(README, "glance", glance())
    print(glance())
