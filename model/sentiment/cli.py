"""The sentiment classifier's command line: `python -m model train sentiment …`, and its evaluate and predict."""

from __future__ import annotations

import argparse
import json
from typing import Any

from model.cli import add_data_args, add_run_args, already_trained, bool_flag, read_texts
from model.config import CELLS, merge
from model.data import DataError
from model.sentiment.config import POOLINGS, sentiment_preset
from model.tokenization import SCHEMES


def add_train(sub: Any) -> None:
    p = sub.add_parser("sentiment", help="train the sentiment classifier", description="Train the classifier.")
    add_data_args(p, "sst2")
    g = p.add_argument_group("run")
    add_run_args(
        g, "artifacts/sentiment", ["quick", "default", "ensemble"],
        "settings preset: default (one BiLSTM and an n-gram bag, distilled from three), ensemble (four BiLSTMs and a "
        "bag, served whole) or quick",
    )  # fmt: skip
    g = p.add_argument_group("model and optimisation (override the preset)")
    g.add_argument("--cell", choices=CELLS)
    bool_flag(g, "bidirectional", "bidirectional encoder (on by default)")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--layers", dest="num_layers", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--pooling", choices=POOLINGS)
    g.add_argument("--ensemble", type=int, help="BiLSTMs trained side by side (the teacher when distilling)")
    bool_flag(g, "bag", "an n-gram bag (a linear model over words and word pairs) beside the BiLSTMs (on)")
    bool_flag(g, "weighted", "combine the parts with weights fitted on dev instead of averaging (on)")
    g.add_argument("--tokenizer", choices=SCHEMES)
    g.add_argument("--vocab-size", type=int)
    g.add_argument("--pieces", type=int, help="word tokenizer: WordPiece pieces that spell unseen words (0: [UNK])")
    bool_flag(g, "char-ngrams", "train word vectors as sums of character n-grams (on)")
    g.add_argument("--embedding-std", type=float, help="standard deviation of the initial word vectors (0.1)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this (0 turns clipping off)")
    g.add_argument(
        "--word-dropout", type=float,
        help="probability a word is read as [UNK] while training (0; on small data it moved held-out accuracy by"
        " less than the seed does: docs/results.md)",
    )  # fmt: skip
    g.add_argument("--patience", type=int, help="epochs without dev improvement before stopping early")
    g.add_argument("--min-steps", type=int, help="train at least this many steps: more epochs on small data (1500)")
    bool_flag(g, "distill", "distill the trained ensemble into one encoder and ship that (on by default)")
    g.add_argument("--augment", type=int, help="variants of each training text in the distillation transfer set (4)")
    g.add_argument("--distill-epochs", type=int, help="epochs over the transfer set fitting the single encoder (1)")
    g.add_argument("--distill-temperature", type=float, help="softmax temperature of the distillation targets (1)")
    bool_flag(g, "refit", "without --dev: after choosing on the held-out dev split, train again on all of --train (on)")
    p.set_defaults(func=train)


TRAIN_KEYS = (
    "epochs seed max_minutes threads cell bidirectional embedding_dim hidden_size num_layers dropout pooling ensemble "
    "bag weighted tokenizer vocab_size pieces char_ngrams embedding_std batch_size lr weight_decay clip_norm "
    "word_dropout patience min_steps dev_fraction distill augment distill_epochs distill_temperature refit"
).split()


def load_sentiment_data(args: argparse.Namespace, seed: int, dev_fraction: float) -> Any:
    from model.sentiment.data import load_sst2, load_user_data

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


def train(args: argparse.Namespace) -> int:
    from model.runtime import check_device
    from model.sentiment.train import train_sentiment

    if already_trained(args, "sentiment"):
        return 0
    check_device(args.device, args.precision)  # before the data loads: a wrong --device fails at once

    cfg = merge(sentiment_preset(args.preset), {k: getattr(args, k, None) for k in TRAIN_KEYS})
    data = load_sentiment_data(args, cfg.seed, cfg.dev_fraction)
    metrics = train_sentiment(cfg, data, args.out, resume=args.resume, device=args.device, precision=args.precision)
    if metrics:
        split = "test" if "test" in metrics else "dev"
        print(json.dumps({"artifact": str(args.out), "split": split, "accuracy": metrics[split]["accuracy"]}))
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from model.evaluate import classification_metrics
    from model.sentiment.data import LabelledData, load_sst2, read_labelled
    from model.sentiment.predictor import load_sentiment

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


def show(report: dict[str, Any]) -> None:
    print(f"{report['split']}: n={report['n']} accuracy={report['accuracy']:.4f} macro-F1={report['macro_f1']:.4f}")
    print(f"ECE={report['ece']:.4f} NLL={report['nll']:.4f}")
    for label, row in report["per_class"].items():
        print(f"  {label:>12}: precision={row['precision']:.3f} recall={row['recall']:.3f} n={row['support']}")


def predict(args: argparse.Namespace) -> int:
    from model.sentiment.predictor import load_sentiment

    texts = read_texts(args, "predict")
    predictor = load_sentiment(args.artifact)
    for result in predictor.predict(texts):
        print(json.dumps(result, ensure_ascii=False))
    return 0
