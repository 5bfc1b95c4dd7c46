"""Command line of the training package.

    python -m model train sentiment [--data sst2 | --train F [--dev F] [--test F]] [--preset quick|default|ensemble] …
    python -m model evaluate ARTIFACT [--data sst2 --split test | --test F] [--json]
    python -m model predict ARTIFACT [TEXT …] [--file F]
    python -m model train generator [--data tinyshakespeare | --train F.txt] [--preset quick|default] …
    python -m model evaluate ARTIFACT [--data tinyshakespeare --split val | --text F] --json
    python -m model sample ARTIFACT --prompt P --max-new-tokens N --temperature T [--top-k K] [--top-p P] …

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
from typing import Any

from model.artifacts import ArtifactError, verify
from model.config import CELLS, POOLINGS, generator_preset, merge, sentiment_preset
from model.data import DataError
from model.tokenization import SCHEMES

USER_ERRORS = (DataError, ArtifactError, ValueError, FileNotFoundError, IsADirectoryError, UnicodeDecodeError)


def _bool_flag(p: argparse.ArgumentParser, name: str, help: str) -> None:
    p.add_argument(f"--{name}", dest=name.replace("-", "_"), action=argparse.BooleanOptionalAction, help=help)


def _add_data_args(p: argparse.ArgumentParser, builtin: str) -> None:
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


def _add_sentiment_train(sub: Any) -> None:
    p = sub.add_parser("sentiment", help="train the sentiment classifier", description="Train the classifier.")
    _add_data_args(p, "sst2")
    g = p.add_argument_group("run")
    g.add_argument(
        "--preset", default="default", choices=["quick", "default", "ensemble"],
        help="settings preset: default (one BiLSTM and an n-gram bag, distilled from three), ensemble (four "
        "BiLSTMs and a bag, served whole) or quick",
    )  # fmt: skip
    g.add_argument("--out", type=Path, default=Path("artifacts/sentiment"), help="artifact directory")
    g.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a verified artifact")
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    g.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    g.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    g = p.add_argument_group("model and optimisation (override the preset)")
    g.add_argument("--cell", choices=CELLS)
    _bool_flag(g, "bidirectional", "bidirectional encoder (on by default)")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--layers", dest="num_layers", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--pooling", choices=POOLINGS)
    g.add_argument("--ensemble", type=int, help="BiLSTMs trained side by side (the teacher when distilling)")
    _bool_flag(g, "bag", "an n-gram bag (a linear model over words and word pairs) beside the BiLSTMs (on)")
    _bool_flag(g, "weighted", "combine the parts with weights fitted on dev instead of averaging (on)")
    g.add_argument("--tokenizer", choices=SCHEMES)
    g.add_argument("--vocab-size", type=int)
    g.add_argument("--pieces", type=int, help="word tokenizer: WordPiece pieces that spell unseen words (0: [UNK])")
    _bool_flag(g, "char-ngrams", "train word vectors as sums of character n-grams (on)")
    g.add_argument("--embedding-std", type=float, help="standard deviation of the initial word vectors (0.1)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this (0 turns clipping off)")
    g.add_argument("--word-dropout", type=float)
    g.add_argument("--patience", type=int, help="epochs without dev improvement before stopping early")
    g.add_argument("--min-steps", type=int, help="train at least this many steps: more epochs on small data (1500)")
    _bool_flag(g, "distill", "distill the trained ensemble into one encoder and ship that (on by default)")
    g.add_argument("--augment", type=int, help="variants of each training text in the distillation transfer set (4)")
    g.add_argument("--distill-epochs", type=int, help="epochs over the transfer set fitting the single encoder (1)")
    g.add_argument("--distill-temperature", type=float, help="softmax temperature of the distillation targets (1)")
    p.set_defaults(func=cmd_train_sentiment)


def _add_generator_train(sub: Any) -> None:
    p = sub.add_parser("generator", help="train the character-level generator", description="Train the generator.")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="a built-in corpus (default tinyshakespeare when no --train)")
    g.add_argument("--data-dir", help="a local mirror of the built-in data sets (default: $RNN_DATA_DIR)")
    g.add_argument("--train", type=Path, help="your own UTF-8 text file")
    g.add_argument("--val-fraction", type=float, help="the last fraction of the text held out for validation (0.1)")
    g = p.add_argument_group("run")
    g.add_argument("--preset", default="default", choices=["quick", "default"], help="settings preset (default)")
    g.add_argument("--out", type=Path, default=Path("artifacts/generator"), help="artifact directory")
    g.add_argument("--if-missing", action="store_true", help="do nothing when --out already holds a verified artifact")
    g.add_argument("--epochs", type=int)
    g.add_argument("--seed", type=int)
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint beside --out")
    g.add_argument("--max-minutes", type=float, help="stop training after this many minutes")
    g.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    g.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    g = p.add_argument_group("model and optimisation (override the preset)")
    g.add_argument("--cell", choices=CELLS)
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--layers", dest="num_layers", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--batching", choices=["stateful", "random"], help="truncated BPTT streams or random windows")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--seq-len", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this (0 turns clipping off)")
    g.add_argument("--patience", type=int, help="epochs without validation improvement before stopping early")
    p.set_defaults(func=cmd_train_generator)


GENERATOR_KEYS = (
    "epochs seed max_minutes threads cell embedding_dim hidden_size num_layers dropout batching batch_size seq_len "
    "lr weight_decay clip_norm patience val_fraction"
).split()


def already_trained(args: argparse.Namespace, task: str) -> bool:
    """--if-missing: true when --out holds an artifact of this task whose manifest verifies (then say so)."""
    if not args.if_missing or not args.out.exists():
        return False
    try:
        verify(args.out)
        found = json.loads((args.out / "config.json").read_text(encoding="utf-8")).get("task")
    except (ArtifactError, OSError, ValueError) as exc:
        print(f"{args.out} holds no usable artifact ({exc}); training a new one", file=sys.stderr)
        return False
    if found != task:
        raise DataError(f"{args.out} holds a {found!r} artifact, not {task!r}; choose another --out")
    print(json.dumps({"artifact": str(args.out), "skipped": "a verified artifact is already there"}))
    return True


def cmd_train_generator(args: argparse.Namespace) -> int:
    from model.data import load_corpus
    from model.train_generator import train_generator

    if already_trained(args, "generation"):
        return 0

    cfg = merge(generator_preset(args.preset), {k: getattr(args, k, None) for k in GENERATOR_KEYS})
    corpus = load_corpus(args.train, data=args.data, data_dir=args.data_dir, val_fraction=cfg.val_fraction)
    metrics = train_generator(cfg, corpus, args.out, resume=args.resume, device=args.device)
    print(json.dumps({"artifact": str(args.out), "val_loss": metrics["val_loss"], "val_bpc": metrics["val_bpc"]}))
    return 0


def evaluate_generator(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from model.artifacts import load_generator
    from model.data import load_corpus, read_text
    from model.train_generator import NATS_TO_BITS, evaluate_loss

    gen = load_generator(args.artifact)
    if args.text is not None:
        text, split = read_text(args.text), str(args.text)
    else:
        corpus = load_corpus(data=args.data, data_dir=args.data_dir)
        split = "val" if args.split in ("val", "dev", "test") else "train"
        text = corpus.val if split == "val" else corpus.train
        split = f"{corpus.name}/{split}"
    if len(text) < 2:
        raise DataError(f"{split}: need at least 2 characters to score")
    ids = torch.tensor(gen.tokenizer.encode(text).ids, dtype=torch.long)
    loss = evaluate_loss(gen.network, ids)
    return {"split": split, "artifact": str(args.artifact), "characters": len(ids), "val_loss": loss,
            "val_bpc": loss * NATS_TO_BITS}  # fmt: skip


def cmd_sample(args: argparse.Namespace) -> int:
    from model.artifacts import load_generator
    from model.sampling import SamplingParams, stream

    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, stop=tuple(args.stop), seed=args.seed,
    )  # fmt: skip
    gen = load_generator(args.artifact)
    sys.stdout.write(args.prompt)
    for piece, done in stream(gen.network, gen.tokenizer, args.prompt, params):
        sys.stdout.write(piece)
        sys.stdout.flush()
        if done is not None:
            sys.stdout.write("\n")
            print(json.dumps({"finish_reason": done.finish_reason, "tokens": done.tokens, "seed": done.seed}),
                  file=sys.stderr)  # fmt: skip
    return 0


TRAIN_KEYS = (
    "epochs seed max_minutes threads cell bidirectional embedding_dim hidden_size num_layers dropout pooling ensemble "
    "bag weighted tokenizer vocab_size pieces char_ngrams embedding_std batch_size lr weight_decay clip_norm "
    "word_dropout patience min_steps dev_fraction distill augment distill_epochs distill_temperature"
).split()


def load_sentiment_data(args: argparse.Namespace, seed: int, dev_fraction: float) -> Any:
    from model.data import load_sst2, load_user_data

    if args.train is not None:
        if args.data is not None:
            raise DataError("give either --data or --train, not both")
        return load_user_data(
            args.train, args.dev, args.test, text_column=args.text_column, label_column=args.label_column,
            skip_bad_rows=args.skip_bad_rows, dev_fraction=dev_fraction, seed=seed,
        )  # fmt: skip
    name = args.data or "sst2"
    if name != "sst2":
        raise DataError(f"{name!r} is not a labelled data set; built-in for sentiment: sst2")
    return load_sst2(args.data_dir)


def cmd_train_sentiment(args: argparse.Namespace) -> int:
    from model.train_sentiment import train_sentiment

    if already_trained(args, "sentiment"):
        return 0

    cfg = merge(sentiment_preset(args.preset), {k: getattr(args, k, None) for k in TRAIN_KEYS})
    data = load_sentiment_data(args, cfg.seed, cfg.dev_fraction)
    metrics = train_sentiment(cfg, data, args.out, resume=args.resume, device=args.device)
    if metrics:
        split = "test" if "test" in metrics else "dev"
        print(json.dumps({"artifact": str(args.out), "split": split, "accuracy": metrics[split]["accuracy"]}))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from model.artifacts import load_artifact

    task = load_artifact(args.artifact).task
    report = evaluate_sentiment(args) if task == "sentiment" else evaluate_generator(args)
    if args.json:
        print(json.dumps(report, indent=2))
    elif task == "generation":
        print(f"{report['split']}: {report['characters']} characters, loss {report['val_loss']:.4f} nats/char "
              f"({report['val_bpc']:.4f} bits/char)")  # fmt: skip
    else:
        print(f"{report['split']}: n={report['n']} accuracy={report['accuracy']:.4f} macro-F1={report['macro_f1']:.4f}")
        print(f"ECE={report['ece']:.4f} NLL={report['nll']:.4f}")
        for label, row in report["per_class"].items():
            print(f"  {label:>12}: precision={row['precision']:.3f} recall={row['recall']:.3f} n={row['support']}")
    return 0


def evaluate_sentiment(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from model.artifacts import load_sentiment
    from model.data import LabelledData, load_sst2, read_labelled
    from model.evaluate import classification_metrics

    predictor = load_sentiment(args.artifact)
    part: LabelledData | None
    if args.test is not None:
        part, split = read_labelled(args.test, args.text_column, args.label_column, args.skip_bad_rows), str(args.test)
    else:
        if (args.data or "sst2") != "sst2":
            raise DataError(f"unknown data set {args.data!r} for sentiment; use sst2 or --test FILE")
        data = load_sst2(args.data_dir)
        name = args.split or "test"
        if name not in ("train", "dev", "test"):
            raise DataError(f"sst2 has no split {name!r}; use train, dev or test")
        part = {"train": data.train, "dev": data.dev, "test": data.test}[name]
        assert part is not None
        split = f"sst2/{name}"
    index = {name: i for i, name in enumerate(predictor.labels)}
    unknown = sorted(set(part.labels) - set(index))
    if unknown:
        raise DataError(f"{part.source}: label(s) {unknown} are not among the model's labels {predictor.labels}")
    targets = torch.tensor([index[x] for x in part.labels])
    report = classification_metrics(predictor.predict_proba(part.texts), targets, predictor.labels)
    return {"split": split, "artifact": str(args.artifact), **report}


def cmd_predict(args: argparse.Namespace) -> int:
    from model.artifacts import load_sentiment

    texts: list[str] = list(args.texts)
    if args.file is not None:
        with open(args.file, encoding="utf-8-sig") as fh:
            texts.extend(line.rstrip("\r\n") for line in fh)
    if not texts:
        raise DataError("nothing to predict: give TEXT arguments or --file F (one text per line)")
    predictor = load_sentiment(args.artifact)
    for result in predictor.predict(texts):
        print(json.dumps(result, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model", description="Train, evaluate and use the RNN models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a model and write its artifact", description="Train a model.")
    tasks = train.add_subparsers(dest="task", required=True)
    _add_sentiment_train(tasks)
    _add_generator_train(tasks)

    p = commands.add_parser(
        "evaluate", help="score an artifact on labelled data or text", description="Evaluate an artifact."
    )
    p.add_argument("artifact", type=Path)
    _add_data_args(p, "sst2 (sentiment) or tinyshakespeare (generator)")
    p.add_argument("--text", type=Path, help="generator: a UTF-8 text file to score (nats/char)")
    p.add_argument(
        "--split", default=None, choices=["train", "dev", "test", "val"],
        help="built-in split: test for sentiment, val for the generator",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("predict", help="classify texts with a sentiment artifact", description="Predict.")
    p.add_argument("artifact", type=Path)
    p.add_argument("texts", nargs="*", metavar="TEXT")
    p.add_argument("--file", type=Path, help="a file with one text per line")
    p.set_defaults(func=cmd_predict)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
