"""docs/architecture.md is true of the code: every kind in the registry has the files the document lists, and no
file outside those it lists imports a kind's own code. Adding a kind somewhere else fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from app.config import default_names
from app.main import MODEL_ROUTES
from app.serving.registry import ENGINES
from model.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent


def listed() -> dict[str, list[str]]:
    """The document's `files` block: own, registries and protocols, each a list of paths (KIND for the kind)."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"```files\n(.*?)```", text, re.S)
    assert block, "docs/architecture.md has no ```files block"
    groups: dict[str, list[str]] = {}
    current = ""
    for line in block.group(1).splitlines():
        head, sep, rest = line.partition(":")
        if sep and not head.startswith(" "):
            current, line = head.strip(), rest
        groups.setdefault(current, []).extend(line.split())
    return groups


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (`from a.b import c` gives a.b and a.b.c)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_the_registries_agree_on_the_kinds() -> None:
    kinds = set(TASKS)
    assert kinds == set(ENGINES) == set(default_names())
    assert {m.__name__.rsplit(".", 1)[-1] for m in MODEL_ROUTES} >= kinds
    packages = {p.parent.name for p in (REPO / "model").glob("*/task.py")}
    assert packages == kinds, "every kind declares its Task in model/KIND/task.py, and only kinds do"


def test_every_kind_has_the_files_the_document_lists() -> None:
    groups = listed()
    assert set(groups) == {"own", "registries", "protocols"}
    for kind in TASKS:
        for pattern in groups["own"]:
            assert (REPO / pattern.replace("KIND", kind)).is_file(), f"{kind}: {pattern} is missing"
    for path in groups["registries"] + groups["protocols"]:
        assert (REPO / path).is_file(), path


def test_a_kind_is_imported_only_where_the_document_says() -> None:
    groups = listed()
    sources = [p for d in ("model", "app") for p in (REPO / d).rglob("*.py")]
    for kind in TASKS:
        own = {pattern.replace("KIND", kind) for pattern in groups["own"]}
        allowed = own | set(groups["registries"]) | set(groups["protocols"])
        its_code = (f"model.{kind}", f"app.serving.{kind}", f"app.routes.{kind}")
        for path in sources:
            rel = path.relative_to(REPO).as_posix()
            if rel.startswith(f"model/{kind}/") or rel in allowed:
                continue
            uses = {
                m for m in imported_modules(path) if m in its_code or m.startswith(tuple(c + "." for c in its_code))
            }
            assert not uses, (
                f"{rel} imports {sorted(uses)}: a kind's code is imported only where docs/architecture.md says"
            )


# what only model/train.py's step loop does: a kind's trainer that did one of these would be a second step loop
# (a trainer still seeds its run once, before it builds its network, and may seed a generator of its own batches)
STEP_LOOP_CALLS = {"optimizer_step", "lr_at", "clip_grad_norm_", "backward", "zero_grad", "progress", "autocast"}


def test_only_the_shared_fit_loop_steps_the_optimizer() -> None:
    """Seeding, the schedule, backward, clipping, the optimizer step and progress live in model/train.py alone; a
    kind's trainer supplies batches, a loss and its validation (docs/architecture.md, "The fit loop")."""
    found = []
    for kind in TASKS:
        for path in sorted((REPO / "model" / kind).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                    if name in STEP_LOOP_CALLS:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno} {name}")
    assert not found, f"step-loop work outside model/train.py: {found}"
