"""Rewrite a generated section of README.md, between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"


def update_section(name: str, markdown: str, readme: Path = README) -> None:
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md has no section {start} … {end}")
    block = f"{start}\n{markdown.strip()}\n{end}"
    readme.write_text(pattern.sub(lambda _: block, text), encoding="utf-8")


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
    """The usual end of a benchmark: bench/results/NAME.json, the README section NAME from report["markdown"]
    (when asked) and that markdown on stdout."""
    save_json(name, report)
    if update_readme:
        update_section(name, report["markdown"])
    print(report["markdown"])


def table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
