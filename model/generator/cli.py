"""The generator's command line: `python -m model train generator …`, its evaluate and `sample`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from model.cli import add_run_args, already_trained
from model.config import CELLS, merge
from model.data import DataError
from model.generator.config import GENERATOR_PRESETS, generator_preset


def add_train(sub: Any) -> None:
    p = sub.add_parser("generator", help="train the character-level generator", description="Train the generator.")
    g = p.add_argument_group("data")
    g.add_argument("--data", default=None, help="a built-in corpus (default tinyshakespeare when no --train)")
    g.add_argument("--data-dir", help="a local mirror of the built-in data sets (default: $RNN_DATA_DIR)")
    g.add_argument("--train", type=Path, help="your own UTF-8 text file")
    g.add_argument("--val-fraction", type=float, help="the last fraction of the text held out for validation (0.1)")
    g = p.add_argument_group("run")
    add_run_args(
        g, "artifacts/generator", list(GENERATOR_PRESETS),
        "settings preset: default (a 1x512 GRU, eight epochs), lstm (the same with an LSTM cell) or quick",
    )  # fmt: skip
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
    g.add_argument("--min-steps", type=int, help="train at least this many steps: more epochs on a short text (1500)")
    p.set_defaults(func=train)


GENERATOR_KEYS = (
    "epochs seed max_minutes threads cell embedding_dim hidden_size num_layers dropout batching batch_size seq_len "
    "lr weight_decay clip_norm patience min_steps val_fraction"
).split()


def train(args: argparse.Namespace) -> int:
    from model.generator.data import load_corpus
    from model.generator.train import train_generator
    from model.runtime import check_device

    if already_trained(args, "generation"):
        return 0
    check_device(args.device, args.precision)  # before the data loads: a wrong --device fails at once

    cfg = merge(generator_preset(args.preset), {k: getattr(args, k, None) for k in GENERATOR_KEYS})
    corpus = load_corpus(args.train, data=args.data, data_dir=args.data_dir, val_fraction=cfg.val_fraction)
    metrics = train_generator(cfg, corpus, args.out, resume=args.resume, device=args.device, precision=args.precision)
    if metrics:  # rank 0 under torchrun (the other ranks write and report nothing)
        print(json.dumps({"artifact": str(args.out), "val_loss": metrics["val_loss"], "val_bpc": metrics["val_bpc"]}))
    return 0


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from model.generator.data import load_corpus, read_text
    from model.generator.predictor import load_generator
    from model.generator.train import NATS_TO_BITS, evaluate_loss

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


def show(report: dict[str, Any]) -> None:
    print(f"{report['split']}: {report['characters']} characters, loss {report['val_loss']:.4f} nats/char "
          f"({report['val_bpc']:.4f} bits/char)")  # fmt: skip


def sample(args: argparse.Namespace) -> int:
    from model.generator.predictor import load_generator
    from model.generator.sampling import SamplingParams, stream

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
