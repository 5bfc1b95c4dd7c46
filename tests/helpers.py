"""Helpers for writing tiny data files and small configs; imported by the tests and by conftest.py."""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from model.sentiment.config import SentimentTrainConfig

POSITIVE = "good great fine lovely superb brilliant".split()
NEGATIVE = "bad awful poor boring dull dreadful".split()
FILLER = "the movie film plot was is a an acting story".split()
# PNG signature: what the stubbed plots return, so artifacts still hold a "png"
PNG_STUB = b"\x89PNG\r\n\x1a\n"
# history fields that measure time, so differ between otherwise identical runs
TIMING_KEYS = ("sentences_per_s", "epoch_s", "elapsed_s")


def sentences(n: int, labels: Sequence[str], seed: int = 0) -> list[tuple[str, str]]:
    """`n` (text, label) rows cycling through `labels`; each label has its own cue words, so models can learn."""
    rng = random.Random(seed)
    cues = {label: [f"{label.lower()}{k}" for k in range(3)] for label in labels}
    if len(labels) == 2:
        cues = {labels[0]: NEGATIVE, labels[1]: POSITIVE}
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.sample(FILLER, 3) + rng.sample(cues[label], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


PRONOUNS = "I they we she he".split()
DETERMINERS = "the a this".split()
NOUNS = "dog wood saw cut table".split()  # "saw" and "cut" are nouns after a determiner, verbs after a subject
VERBS = "saw cut like see".split()


def tagged_sentences(n: int, seed: int = 0) -> list[tuple[list[str], list[str]]]:
    """`n` (tokens, UPOS tags) sentences, subject-verb-object, where only the context tells a noun "saw" from the
    verb "saw": a tagger must read both sides of a word to get them all right."""
    rng = random.Random(seed)

    def phrase() -> tuple[list[str], list[str]]:
        if rng.random() < 0.5:
            return [rng.choice(PRONOUNS)], ["PRON"]
        return [rng.choice(DETERMINERS), rng.choice(NOUNS)], ["DET", "NOUN"]

    rows = []
    for _ in range(n):
        (subject, s_tags), (obj, o_tags) = phrase(), phrase()
        tokens = [*subject, rng.choice(VERBS), *obj, "."]
        rows.append((tokens, [*s_tags, "VERB", *o_tags, "PUNCT"]))
    return rows


def write_conllu(path: Path, rows: Sequence[tuple[Sequence[str], Sequence[str]]]) -> Path:
    """Sentences as CoNLL-U: ID, FORM, the tag as UPOS, the rest `_`."""
    lines = []
    for i, (tokens, tags) in enumerate(rows):
        lines.append(f"# sent_id = s{i}")
        for k, (token, tag) in enumerate(zip(tokens, tags, strict=True), start=1):
            lines.append("\t".join([str(k), token, "_", tag, "_", "_", "0", "_", "_", "_"]))
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = ("text", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_bytes(path: Path, text: str, *, newline: str = "\n", bom: bool = False) -> Path:
    """Write `text` (written with \\n) exactly: line ends converted to `newline`, optionally with a UTF-8 BOM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.replace("\n", newline).encode("utf-8")
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    return path


def small_config(**overrides: Any) -> SentimentTrainConfig:
    """A classifier that trains on a few dozen sentences in well under a second."""
    settings: dict[str, Any] = {
        "epochs": 2,
        "batch_size": 8,
        "embedding_dim": 8,
        "hidden_size": 8,
        "dropout": 0.1,
        "vocab_size": 200,
        "max_length": 32,
        "lr": 1e-2,
        "seed": 0,
        "threads": 1,
        "patience": 5,
        "dev_fraction": 0.25,
        "ensemble": 1,
        "min_steps": 0,
        "distill": False,
        "refit": False,  # the tests of the refit turn it on
        "bag_buckets": 256,
        "pieces": 50,
    }
    settings.update(overrides)
    return SentimentTrainConfig(**settings)


def tiny_train_argv(kind: str, folder: Path) -> list[str]:
    """`python -m model train KIND` arguments that train a tiny model of any kind in about a second, on data
    written into `folder`; the artifact goes to `folder / KIND`."""
    common = ["--out", str(folder / kind), "--preset", "quick", "--epochs", "1", "--threads", "1"]
    if kind == "sentiment":
        data = write_csv(folder / "tiny.csv", sentences(48, ["neg", "pos"]))
        sizes = ["--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "16"]
    elif kind == "generator":
        data = write_bytes(folder / "tiny.txt", "First Citizen:\nSpeak, speak.\n\nAll:\nResolved. resolved.\n\n" * 30)
        sizes = ["--embedding-dim", "8", "--hidden-size", "16", "--seq-len", "16", "--batch-size", "4"]
    elif kind == "tagger":
        data = write_conllu(folder / "tiny.conllu", tagged_sentences(40))
        sizes = ["--embedding-dim", "8", "--hidden-size", "8", "--char-dim", "4", "--char-hidden", "4"]
    elif kind == "translator":
        pairs = [("ein Hund läuft .", "a dog runs ."), ("zwei Katzen schlafen .", "two cats sleep .")] * 20
        data = write_bytes(folder / "tiny.tsv", "".join(f"{s}\t{t}\n" for s, t in pairs))
        sizes = ["--embedding-dim", "8", "--hidden-size", "8", "--vocab-size", "100", "--dev-sentences", "4"]
    else:
        raise ValueError(f"no tiny training data for {kind!r}")
    return ["train", kind, "--train", str(data), *common, *sizes]
