"""Hygiene over the whole source tree: no pickle anywhere (artifacts are safetensors + JSON; checkpoints too)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("model", "app", "bench") for p in (REPO / d).rglob("*.py"))
UNSAFE = {
    "pickle import": re.compile(r"^\s*(import|from)\s+(c?pickle|dill|joblib)\b", re.M),
    "torch.load": re.compile(r"\btorch\.load\("),
    "numpy allow_pickle": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.save": re.compile(r"\btorch\.save\("),
}


def test_the_scan_sees_the_sources() -> None:
    assert len(SOURCES) > 30


@pytest.mark.parametrize("name", sorted(UNSAFE))
def test_no_pickle_in_the_sources(name: str) -> None:
    hits = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        hits += [
            f"{path.relative_to(REPO)}:{text[: m.start()].count(chr(10)) + 1}" for m in UNSAFE[name].finditer(text)
        ]
    assert not hits, f"{name} in {hits}"
