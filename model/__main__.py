"""Command line of the training package.

    python -m model train sentiment [--data sst2 | --train F [--dev F] [--test F]] [--preset quick|default|ensemble] …
    python -m model evaluate ARTIFACT [--data sst2 --split test | --test F] [--json]
    python -m model predict ARTIFACT [TEXT …] [--file F]
    python -m model train generator [--data tinyshakespeare | --train F.txt] [--preset quick|default] …
    python -m model evaluate ARTIFACT [--data tinyshakespeare --split val | --text F] --json
    python -m model sample ARTIFACT --prompt P --max-new-tokens N --temperature T [--top-k K] [--top-p P] …
    python -m model train tagger [--data ud_english_ewt | --train F [--dev F] [--test F]] [--preset quick|default] …
    python -m model evaluate ARTIFACT [--data ud_english_ewt --split test | --test F [--tag-column C]] [--json]
    python -m model predict ARTIFACT [TEXT …] [--file F] [--pretokenized]

ARTIFACT may be a directory of numbered versions (model/versions.py): its newest verified version is used.
`train … --new-version` writes the next version of --out.

The kinds of model come from model/tasks.py; each one's options live in its model/cli_<kind>.py.

`python -m model COMMAND --help` lists every option. A mistake in the input exits with status 2 and one line
on stderr; nothing prints a traceback for a user's error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from model.artifacts import read_config, verify
from model.cli import USER_ERRORS, add_data_args, already_trained
from model.data import DataError
from model.kind import Task
from model.tasks import TASKS, by_artifact_task
from model.versions import new_version, release, resolve


def task_of(artifact: Path) -> Task:
    verify(artifact)
    return by_artifact_task(read_config(artifact).task)


def cmd_evaluate(args: argparse.Namespace) -> int:
    cli = task_of(args.artifact).cli_module()
    report = cli.evaluate(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        cli.show(report)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    task = task_of(args.artifact)
    cli = task.cli_module()
    if not hasattr(cli, "predict"):
        raise DataError(f"{args.artifact} holds a {task.name} model; predict takes a classifier or a tagger")
    result: int = cli.predict(args)
    return result


def cmd_sample(args: argparse.Namespace) -> int:
    result: int = TASKS["generator"].cli_module().sample(args)
    return result


def cmd_kinds(args: argparse.Namespace) -> int:
    """The kinds of model, one a line: what deployment scripts loop over (the Makefile, docker/compose.yaml)."""
    print("\n".join(TASKS))
    return 0


def _task_arguments(p: argparse.ArgumentParser, hook: str) -> None:
    """Options of a shared command that only one kind reads (a tagger's --tag-column), from its CLI module."""
    for task in TASKS.values():
        add = getattr(task.cli_module(), hook, None)
        if add is not None:
            add(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Train, evaluate and use the RNN models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model and write its artifact", description="Train a model.")
    tasks = train.add_subparsers(dest="task", required=True)
    for task in TASKS.values():
        task.cli_module().add_train(tasks)

    p = commands.add_parser(
        "evaluate", help="score an artifact on labelled data or text", description="Evaluate an artifact."
    )
    p.add_argument("artifact", type=Path)
    add_data_args(p, ", ".join(f"{task.builtin_data} ({task.name})" for task in TASKS.values()))
    p.add_argument("--text", type=Path, help="generator: a UTF-8 text file to score (nats/char)")
    p.add_argument(
        "--split", default=None, choices=["train", "dev", "test", "val"],
        help="built-in split: test for sentiment and the tagger, val for the generator",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_evaluate)
    _task_arguments(p, "add_evaluate_arguments")

    p = commands.add_parser("predict", help="classify or tag texts with an artifact", description="Predict.")
    p.add_argument("artifact", type=Path)
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", type=Path, help="a file with one text per line")
    p.set_defaults(func=cmd_predict)
    _task_arguments(p, "add_predict_arguments")

    p = commands.add_parser("sample", help="generate text with a generator artifact", description="Sample text.")
    p.add_argument("artifact", type=Path)
    p.add_argument("--prompt", default="", help="text to continue (default: start a new line)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--repetition-penalty", type=float)
    p.add_argument("--seed", type=int, help="fixes the sample; printed on stderr either way")
    p.add_argument("--stop", nargs="*", default=[], help="stop sequences (excluded from the output)")
    p.set_defaults(func=cmd_sample)

    p = commands.add_parser("kinds", help="list the kinds of model, one a line", description="List the kinds.")
    p.set_defaults(func=cmd_kinds)
    return parser


def train_new_version(args: argparse.Namespace, func: Callable[[argparse.Namespace], int]) -> int:
    """--new-version: train into the next numbered version of --out (reserved first, so two trainers get two
    numbers); with --if-missing, nothing when a version that may serve is already there, with --unless-newest
    when the newest that may is of this preset."""
    if args.resume:
        raise DataError("--resume continues the run whose checkpoint is beside --out: drop --new-version")
    if already_trained(args, TASKS[args.task].artifact_task):
        return 0
    args.out, args.if_missing = new_version(args.out), False
    try:
        return func(args)
    finally:
        release(args.out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        if getattr(args, "artifact", None) is not None:
            args.artifact = resolve(args.artifact)  # a directory of versions: its newest that may serve
        if getattr(args, "new_version", False):
            return train_new_version(args, func)
        if getattr(args, "unless_newest", False):
            raise DataError("--unless-newest compares the versions in --out: add --new-version")
        return func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
