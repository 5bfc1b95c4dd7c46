"""The translator's command line: `python -m model train translator …`, its evaluate and predict.

python -m model train translator [--data multi30k | --source F --target F | --train F.tsv|.jsonl]
                                 [--dev …] [--test …] [--preset quick|default]
python -m model evaluate artifacts/translator --data multi30k --split test --json
python -m model predict artifacts/translator "Ein Hund läuft." [--file F] [--beam K] [--n-best N] [--alignment]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from model.cli import add_run_args, already_trained, bool_flag, read_texts
from model.config import CELLS, merge
from model.data import DataError
from model.translator.config import ATTENTIONS, SUBWORDS, translator_preset

TRAIN_KEYS = (
    "epochs seed max_minutes threads cell bidirectional attention embedding_dim hidden_size num_layers dropout "
    "tie_embeddings subwords joint_vocabulary vocab_size max_length skip_bad_rows label_smoothing batch_size lr "
    "weight_decay clip_norm patience min_steps dev_sentences beam length_penalty"
).split()


def add_train(sub: Any) -> None:
    p = sub.add_parser("translator", help="train the translator (any pair of languages, sentence-aligned)",
                       description="Train the translator.")  # fmt: skip
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="a built-in data set (default multi30k: German -> English)")
    g.add_argument("--data-dir", help="a local mirror of the built-in data sets (default: $RNN_DATA_DIR)")
    g.add_argument("--source", type=Path, help="your training sources, one sentence a line (with --target)")
    g.add_argument("--target", type=Path, help="your training targets, line i translating --source's line i")
    g.add_argument("--train", type=Path, help="your training pairs as .tsv (source<TAB>target) or .jsonl")
    for split in ("dev", "test"):
        g.add_argument(f"--{split}", type=Path, help=f"{split} pairs as .tsv or .jsonl")
        g.add_argument(f"--{split}-source", type=Path, help=f"{split} sources (with --{split}-target)")
        g.add_argument(f"--{split}-target", type=Path, help=f"{split} targets")
    g.add_argument("--skip-bad-rows", action="store_true", default=None,
                   help="skip and count bad pairs (an empty side, over --max-length) instead of failing")  # fmt: skip
    g = p.add_argument_group("run")
    add_run_args(g, "artifacts/translator", ["quick", "default"])
    g = p.add_argument_group("model and optimisation (override the preset)")
    g.add_argument("--cell", choices=CELLS)
    bool_flag(g, "bidirectional", "bidirectional encoder (on by default)")
    g.add_argument("--attention", choices=ATTENTIONS, help="multiplicative (default), additive or none")
    g.add_argument("--embedding-dim", type=int)
    g.add_argument("--hidden-size", type=int)
    g.add_argument("--layers", dest="num_layers", type=int)
    g.add_argument("--dropout", type=float)
    bool_flag(g, "tie-embeddings", "the output layer shares the target embedding (on)")
    g.add_argument("--subwords", choices=SUBWORDS, help="unigram (default) or bpe")
    bool_flag(g, "joint-vocabulary", "one subword vocabulary for both languages (off: one per side)")
    g.add_argument("--vocab-size", type=int, help="subwords per vocabulary (8000)")
    g.add_argument("--max-length", type=int, help="subwords per side of a training pair (64)")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--clip-norm", type=float, help="clip the gradient norm to this (0 turns clipping off)")
    g.add_argument("--patience", type=int, help="epochs without dev improvement before stopping early")
    g.add_argument("--min-steps", type=int, help="train at least this many steps: more epochs on small data (1500)")
    g.add_argument("--dev-sentences", type=int, help="dev pairs whose greedy BLEU picks the best epoch (500)")
    g.add_argument("--beam", type=int, help="the beam the report uses and the artifact serves by default (4)")
    g.add_argument("--length-penalty", type=float, help="GNMT's alpha for ranking hypotheses (0.6)")
    p.set_defaults(func=train)


def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("translator")
    g.add_argument("--source", type=Path, help="translator: sources to score, one a line (with --target)")
    g.add_argument("--target", type=Path, help="translator: their reference translations")


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("translator")
    g.add_argument("--beam", type=int, help="translator: beam size, 1 (greedy) to 8 (default: the artifact's)")
    g.add_argument("--n-best", type=int, help="translator: how many translations per text (at most --beam)")
    g.add_argument("--alignment", action="store_true", help="translator: each target subword's source word")


def _split(pairs: Path | None, source: Path | None, target: Path | None) -> Any:
    from model.translator.data import SplitFiles

    return SplitFiles(pairs, source, target)


def load_data(args: argparse.Namespace, skip_bad_rows: bool) -> Any:
    from model.translator.data import load_parallel

    train = _split(args.train, args.source, args.target)
    if train.given() and args.data is not None:
        raise DataError("give either --data or your own files (--source/--target or --train), not both")
    dev = _split(args.dev, args.dev_source, args.dev_target)
    test = _split(args.test, args.test_source, args.test_target)
    return load_parallel(train, dev, test, data=args.data, data_dir=args.data_dir, skip_bad_rows=skip_bad_rows)


def train(args: argparse.Namespace) -> int:
    from model.runtime import check_device
    from model.translator.train import train_translator

    if already_trained(args, "translation"):
        return 0
    check_device(args.device, args.precision)  # before the data loads: a wrong --device fails at once
    cfg = merge(translator_preset(args.preset), {k: getattr(args, k, None) for k in TRAIN_KEYS})
    corpus = load_data(args, cfg.skip_bad_rows)
    metrics = train_translator(cfg, corpus, args.out, resume=args.resume, device=args.device, precision=args.precision)
    split = "test" if "test" in metrics else "dev"
    print(json.dumps({"artifact": str(args.out), "split": split, **metrics[split]}))
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from model.data import resolve
    from model.translator.data import MULTI30K, MULTI30K_LANGUAGES, read_aligned, read_pairs
    from model.translator.predictor import load_translator
    from model.translator.train import Encoded, perplexity, scores

    model = load_translator(args.artifact)
    if args.test is not None:
        pairs, split = read_pairs(args.test, args.skip_bad_rows), str(args.test)
    elif getattr(args, "source", None) is not None or getattr(args, "target", None) is not None:
        if args.source is None or args.target is None:
            raise DataError("give both --source and --target to score your own sentences")
        pairs, split = read_aligned(args.source, args.target, args.skip_bad_rows), str(args.source)
    else:
        name = {"val": "dev"}.get(args.split or "test", args.split or "test")
        data = args.data or MULTI30K
        if data != MULTI30K:
            raise DataError(f"{data!r} is not a parallel corpus; built-in: {MULTI30K}")
        paths = [resolve(data, f"{name}.{lang}", args.data_dir) for lang in MULTI30K_LANGUAGES]
        pairs, split = read_aligned(paths[0], paths[1]), f"{data}/{name}"
    if not len(pairs):
        raise DataError(f"{split}: no pairs to score")
    results = model.translate(pairs.source)
    report: dict[str, Any] = scores([r["translation"] for r in results], pairs.target)
    encoded = Encoded(model.encode(pairs.source), [e.ids for e in model.target_tokenizer.encode_batch(pairs.target)])
    report["perplexity"] = perplexity(model.network, encoded, next(model.network.parameters()).device)
    return {"split": split, "artifact": str(args.artifact), "pairs": len(pairs), "beam": model.defaults.beam, **report}


def show(report: dict[str, Any]) -> None:
    print(f"{report['split']}: {report['pairs']} pairs, beam {report['beam']}: BLEU {report['bleu']:.2f} "
          f"(lower-cased {report['bleu_lowercase_tokens']:.2f}), chrF {report['chrf']:.2f}, "
          f"perplexity {report['perplexity']:.2f}")  # fmt: skip


def predict(args: argparse.Namespace) -> int:
    from model.translator.predictor import load_translator

    texts = read_texts(args, "translate")
    model = load_translator(args.artifact)
    params = model.params(beam=args.beam, n_best=args.n_best)
    for result in model.translate(texts, params, alignment=args.alignment):
        print(json.dumps(result, ensure_ascii=False))
    return 0
