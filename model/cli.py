"""What the task CLIs share: the data and run options (device and precision among them), --if-missing, and the
errors that are the user's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.artifacts import ArtifactError, read_config, verify
from model.data import DataError
from model.versions import choose, is_versioned, scan

USER_ERRORS = (DataError, ArtifactError, ValueError, FileNotFoundError, IsADirectoryError, UnicodeDecodeError)


def bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, help=help)


def add_data_args(p: argparse.ArgumentParser, builtin: str) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help=f"a built-in data set (default {builtin} when no --train is given)")
    g.add_argument("--data-dir", help="a local mirror of the built-in data sets (default: $RNN_DATA_DIR)")
    g.add_argument("--train", type=Path, help="your own training file (.csv, .tsv or .jsonl)")
    g.add_argument("--dev", type=Path, help="your own dev file (default: a stratified split of --train)")
    g.add_argument("--test", type=Path, help="your own test file")
    g.add_argument("--text-column", help="text column (default: the first of text, sentence, content, review, …)")
    g.add_argument("--label-column", help="label column (default: the first of label, labels, class, …)")
    g.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed rows instead of failing")
    g.add_argument("--dev-fraction", type=float, help="fraction of --train held out as dev when no --dev (0.1)")


def add_run_args(g: Any, out: str, presets: list[str], preset_help: str = "settings preset (default)") -> None:
    """The run options every trainer takes: preset, output, --if-missing, epochs, seed, resume, budget, threads,
    device and precision."""
    g.add_argument("--preset", default="default", choices=presets, help=preset_help)
    g.add_argument("--out", type=Path, default=Path(out), help="artifact directory")
    g.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a verified artifact")
    g.add_argument(
        "--new-version", action="store_true",
        help="treat --out as a directory of numbered versions and write the next one (--out/N), as the service"
        " picks up",
    )  # fmt: skip
    g.add_argument(
        "--unless-newest", action="store_true",
        help="with --new-version: do nothing when the newest version that may serve was trained with this --preset"
        " (make serve's background trainer: its default versions are not trained twice)",
    )  # fmt: skip
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    g.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    g.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    add_device_args(g)


def add_device_args(g: Any) -> None:
    """--device and --precision, with one default for every kind: the CPU in fp32, the tested path."""
    g.add_argument(
        "--device", default="cpu", choices=["cpu", "cuda", "auto"],
        help="where to train: cpu (default), cuda, or auto (cuda when torch sees a GPU)",
    )  # fmt: skip
    g.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
        help="the training forward pass: fp32 (default), or bf16/fp16 autocast over fp32 weights (fp16 needs"
        " cuda); the artifact's weights are fp32 either way",
    )  # fmt: skip


def read_texts(args: argparse.Namespace, what: str) -> list[str]:
    """predict's TEXT arguments, then the lines of --file F; none at all is the user's error."""
    texts: list[str] = list(args.texts)
    if args.file is not None:
        with open(args.file, encoding="utf-8-sig") as fh:
            texts.extend(line.rstrip("\r\n") for line in fh)
    if not texts:
        raise DataError(f"nothing to {what}: give TEXT arguments or --file F (one text per line)")
    return texts


def already_trained(args: argparse.Namespace, task: str) -> bool:
    """--if-missing: true when --out holds an artifact of this task whose manifest verifies, or (a directory of
    versions) a version that may serve; --unless-newest: the same, and that newest version was trained with
    --preset (then say so)."""
    unless_newest = getattr(args, "unless_newest", False)
    if not (args.if_missing or unless_newest) or not args.out.exists():
        return False
    if is_versioned(args.out):
        try:
            newest = choose(scan(args.out, task))
        except ArtifactError:
            return False
        preset = read_config(newest.path).training.get("preset")
        if unless_newest and preset != args.preset:
            return False
        skipped = f"version {newest.number} ({preset or 'no'} preset) may serve already"
        print(json.dumps({"artifact": str(newest.path), "skipped": skipped}))
        return True
    try:
        verify(args.out)
        found = read_config(args.out).task
    except (ArtifactError, OSError, ValueError) as exc:
        print(f"{args.out} holds no usable artifact ({exc}); training a new one", file=sys.stderr)
        return False
    if found != task:
        raise DataError(f"{args.out} holds a {found!r} artifact, not {task!r}; choose another --out")
    print(json.dumps({"artifact": str(args.out), "skipped": "a verified artifact is already there"}))
    return True
