"""The tagger's command line: `python -m model train tagger …`, its evaluate and predict.

python -m model train tagger [--data ud_english_ewt | --train F [--dev F] [--test F]] [--preset quick|default]
python -m model evaluate artifacts/tagger --data ud_english_ewt --split test --json
python -m model predict artifacts/tagger "I saw the saw." [--pretokenized] [--file F]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from model.cli import add_run_args, already_trained, bool_flag, read_texts
from model.config import CELLS, merge
from model.data import DataError
from model.tagger.config import tagger_preset

FORMATS_HELP = "conllu, conll (token<TAB>tag, blank line between sentences), jsonl ({tokens, tags}) or auto"
TRAIN_KEYS = (
    "epochs seed max_minutes threads cell bidirectional embedding_dim chars char_dim char_hidden hidden_size "
    "num_layers dropout crf min_frequency word_dropout batch_size lr weight_decay clip_norm patience dev_fraction"
    " min_steps"
).split()


def add_train(sub: Any) -> None:
    p = sub.add_parser("tagger", help="train the sequence tagger (part of speech, BIO entities, any token labels)",
                       description="Train the tagger.")  # fmt: skip
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="a built-in data set (default ud_english_ewt when no --train)")
    g.add_argument("--data-dir", help="a local mirror of the built-in data sets (default: $RNN_DATA_DIR)")
    g.add_argument("--train", type=Path, help="your own training file: .conllu, two-column CoNLL or .jsonl")
    g.add_argument("--dev", type=Path, help="your own dev file (default: a random 10 %% of --train)")
    g.add_argument("--test", type=Path, help="your own test file")
    add_tag_arguments(g)
    g.add_argument("--skip-bad-rows", action="store_true", help="skip and count malformed sentences")
    g.add_argument("--dev-fraction", type=float, help="fraction of --train held out as dev when no --dev (0.1)")
    g = p.add_argument_group("run")
    add_run_args(g, "artifacts/tagger", ["quick", "default"])
    g = p.add_argument_group("model and optimisation (override the preset)")
    g.add_argument("--cell", choices=CELLS)
    bool_flag(g, "bidirectional", "bidirectional encoder (on by default)")
    bool_flag(g, "chars", "a character BiLSTM per word, for words never seen in training (on)")
    bool_flag(g, "crf", "a CRF layer with Viterbi decoding, for label sets with structure such as BIO (off)")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--char-dim", type=int)
    g.add_argument("--char-hidden", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--layers", dest="num_layers", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--min-frequency", type=int, help="words seen fewer times are read as [UNK] (1)")
    g.add_argument("--word-dropout", type=float, help="probability a word seen once is read as [UNK] (0.25)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this (0 turns clipping off)")
    g.add_argument("--patience", type=int, help="epochs without dev improvement before stopping early")
    g.add_argument("--min-steps", type=int, help="train at least this many steps: more epochs on small data (1500)")
    p.set_defaults(func=train)


def add_tag_arguments(g: Any) -> None:
    """The options that say how to read a tagged file (train and evaluate share them)."""
    g.add_argument("--format", dest="tag_format", default="auto", help=f"tagged file format: {FORMATS_HELP}")
    g.add_argument("--tag-column", default="upos", help="CoNLL-U: upos (default), xpos, a column name or number")


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tagger")
    add_tag_arguments(g)


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretokenized", action="store_true", help="tagger: each TEXT is whitespace-separated tokens")


def load_data(args: argparse.Namespace, seed: int, dev_fraction: float) -> Any:
    from model.tagger.conll import load_tagged_builtin, load_tagged_files

    if args.train is not None:
        if args.data is not None:
            raise DataError("give either --data or --train, not both")
        return load_tagged_files(
            args.train, args.dev, args.test, fmt=args.tag_format, tag_column=args.tag_column,
            skip_bad_rows=args.skip_bad_rows, dev_fraction=dev_fraction, seed=seed,
        )  # fmt: skip
    return load_tagged_builtin(args.data or "ud_english_ewt", args.data_dir, tag_column=args.tag_column)


def train(args: argparse.Namespace) -> int:
    from model.runtime import check_device
    from model.tagger.train import train_tagger

    if already_trained(args, "tagging"):
        return 0
    check_device(args.device, args.precision)  # before the data loads: a wrong --device fails at once
    cfg = merge(tagger_preset(args.preset), {k: getattr(args, k, None) for k in TRAIN_KEYS})
    corpus = load_data(args, cfg.seed, cfg.dev_fraction)
    metrics = train_tagger(cfg, corpus, args.out, resume=args.resume, device=args.device, precision=args.precision)
    split = "test" if "test" in metrics else "dev"
    summary = {"artifact": str(args.out), "split": split, "accuracy": metrics[split]["accuracy"]}
    if "entity_f1" in metrics[split]:
        summary["entity_f1"] = metrics[split]["entity_f1"]
    print(json.dumps(summary))
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from model.data import resolve
    from model.tagger.conll import TAGGED_BUILTINS, read_tagged
    from model.tagger.predictor import load_tagger
    from model.tagger.train import score_tags

    tagger = load_tagger(args.artifact)
    if args.test is not None:
        sentences = read_tagged(args.test, fmt=args.tag_format, tag_column=args.tag_column,
                                skip_bad_rows=args.skip_bad_rows).sentences  # fmt: skip
        split = str(args.test)
    else:
        name = args.split or "test"
        if name not in ("train", "dev", "test"):
            raise DataError(f"a tagged data set has train, dev and test splits, not {name!r}")
        data = args.data or "ud_english_ewt"
        if data not in TAGGED_BUILTINS:
            raise DataError(f"{data!r} is not a tagged data set; built-in: {', '.join(TAGGED_BUILTINS)}")
        path = resolve(data, name, args.data_dir)  # only the split scored: no training file to fetch
        sentences = read_tagged(path, fmt="conllu", tag_column=args.tag_column).sentences
        split = f"{data}/{name}"
    if not sentences:
        raise DataError(f"{split}: no sentences to score")
    tagged = tagger.tag_tokens([s.tokens for s in sentences])
    pred = [[t["tag"] for t in sentence] for sentence in tagged]
    gold = [s.tags for s in sentences]
    report, _ = score_tags([s.tokens for s in sentences], gold, pred, set(tagger.tokenizer.get_vocab()), tagger.labels)
    return {"split": split, "artifact": str(args.artifact), **report}


def show(report: dict[str, Any]) -> None:
    print(f"{report['split']}: {report['tokens']} tokens, accuracy={report['accuracy']:.4f} "
          f"(unseen words {report['unseen_accuracy'] or 0:.4f} on {report['unseen_tokens']})")  # fmt: skip
    if "entity_f1" in report:
        print(f"entities: precision={report['entity_precision']:.4f} recall={report['entity_recall']:.4f} "
              f"F1={report['entity_f1']:.4f}")  # fmt: skip
    for tag, row in report["per_tag"].items():
        print(f"  {tag:>8}: precision={row['precision']:.3f} recall={row['recall']:.3f} n={row['support']}")


def predict(args: argparse.Namespace) -> int:
    from model.tagger.predictor import load_tagger

    texts = read_texts(args, "tag")
    tagger = load_tagger(args.artifact)
    if args.pretokenized:
        results = tagger.tag_tokens([text.split() for text in texts])
    else:
        results = tagger.tag_texts(texts)
    for tokens in results:
        print(json.dumps({"tokens": tokens}, ensure_ascii=False))
    return 0
