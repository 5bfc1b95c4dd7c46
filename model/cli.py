"""What the task CLIs share: the data and run options, --if-missing, and the errors that are the user's."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from model.artifacts import ArtifactError, read_config, verify
from model.data import DataError

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


def already_trained(args: argparse.Namespace, task: str) -> bool:
    """--if-missing: true when --out holds an artifact of this task whose manifest verifies (then say so)."""
    if not args.if_missing or not args.out.exists():
        return False
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
