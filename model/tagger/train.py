"""Fit the sequence tagger and write its artifact (word tokenizer, character vocabulary, weights, calibration,
metrics, plots).

Run through the CLI: `python -m model train tagger [--data ud_english_ewt | --train F [--dev F] [--test F]]
[--preset quick|default]`.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.checkpoints import TrainState, fingerprint
from model.networks import count_parameters
from model.runtime import Runtime, setup_runtime, teardown_runtime
from model.tagger.config import TaggerTrainConfig
from model.tagger.conll import TaggedCorpus, TaggedSentence
from model.tagger.network import SequenceTagger
from model.tagger.tagging import TagEncoder, normalize_word
from model.tokenization import UNK_ID
from model.train import Batches, Plan, Step, bucketed_batches, epochs_for, keep_if_higher, publish
from model.train import fit as shared_fit

log = logging.getLogger(__name__)


class Split:
    """A split's sentences with their tag ids: encoded per batch (the encoder is fast, the padding differs)."""

    def __init__(self, sentences: Sequence[TaggedSentence], index: dict[str, int]) -> None:
        self.tokens = [s.tokens for s in sentences]
        self.tags = [[index.get(t, -100) for t in s.tags] for s in sentences]  # -100: a tag unseen in training

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, enc: TagEncoder, idx: Sequence[int]) -> tuple[torch.Tensor, ...]:
        """words (B, T), chars (B, T, L), lengths (B,) and tags (B, T), on the CPU."""
        words, chars, lengths = enc.encode([self.tokens[i] for i in idx])
        tags = torch.full(words.shape, -100, dtype=torch.long)
        for row, i in enumerate(idx):
            tags[row, : len(self.tags[i])] = torch.tensor(self.tags[i])
        return words, chars, lengths, tags


def to_device(device: torch.device, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """A batch's words, characters and tags on the network's device; lengths stay on the CPU, where packing
    reads them."""
    return tuple(t.to(device) for t in tensors)


@torch.inference_mode()
def predict(
    net: SequenceTagger, enc: TagEncoder, split: Split, batch_size: int = 256
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Best tag ids per sentence (in split order), and per real token (flattened in split order) the scores'
    log-softmax (N, K) and the gold ids (N,), for calibration."""
    was = net.training
    net.eval()
    device = net.head.weight.device
    order = sorted(range(len(split)), key=lambda i: len(split.tokens[i]))
    best: dict[int, list[int]] = {}
    scores: dict[int, torch.Tensor] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        words, chars, lengths, _ = split.batch(enc, idx)
        words, chars = to_device(device, words, chars)
        emissions = net(words, chars if net.config.char_vocab_size else None, lengths)
        tags, _ = net.decode(emissions, lengths)
        for row, i in enumerate(idx):
            best[i] = tags[row]
            scores[i] = emissions[row, : len(split.tokens[i])].float().cpu()
    net.train(was)
    flat = torch.cat([scores[i] for i in range(len(split))])
    gold = torch.tensor([t for tags in split.tags for t in tags])
    return [best[i] for i in range(len(split))], flat, gold


def planned_epochs(cfg: TaggerTrainConfig, sentences: int) -> int:
    """`epochs`, or more on small data: enough for `min_steps` optimizer steps (the schedule spans them all)."""
    return epochs_for(cfg.epochs, cfg.min_steps, math.ceil(sentences / cfg.batch_size))


@dataclass
class TaggerTrainee:
    """The tagger's part of the shared fit loop: length-bucketed batches with word dropout on words seen once,
    token loss (or the CRF's likelihood), dev token accuracy, higher is better."""

    net: SequenceTagger
    cfg: TaggerTrainConfig
    enc: TagEncoder
    train: Split
    dev: Split
    singletons: torch.Tensor  # (V,) bool: word ids seen once in training, the ones word dropout hides
    rt: Runtime
    unit = "tokens"

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train) / self.cfg.batch_size)

    @property
    def epochs(self) -> int:
        return planned_epochs(self.cfg, len(self.train))

    def batches(self, epoch: int) -> Batches:
        return bucketed_batches([len(t) for t in self.train.tokens], self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, idx: list[int]) -> Step:
        words, chars, lengths, tags = self.train.batch(self.enc, idx)
        if self.cfg.word_dropout > 0:
            hide = self.singletons[words] & (torch.rand(words.shape) < self.cfg.word_dropout)
            words = words.masked_fill(hide, UNK_ID)
        words, chars, tags = to_device(self.rt.device, words, chars, tags)
        emissions = self.net(words, chars if self.net.config.char_vocab_size else None, lengths)
        return Step(self.net.loss(emissions.float(), tags, lengths), int(lengths.sum()))

    def groups(self) -> list[Iterable[torch.Tensor]]:
        return [self.net.parameters()]

    def validate(self) -> dict[str, Any]:
        best, _, _ = predict(self.net, self.enc, self.dev)
        gold = [t for tags in self.dev.tags for t in tags]
        pred = [t for tags in best for t in tags]
        return {"dev_accuracy": sum(g == p for g, p in zip(gold, pred, strict=True)) / max(len(gold), 1)}

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        return keep_if_higher(self.net, stats["dev_accuracy"], state, best)

    def describe(self, stats: dict[str, Any], epochs: int) -> str:
        return (
            f"train loss {stats['train_loss']:.4f}  dev acc {stats['dev_accuracy']:.4f}  grad norm mean"
            f" {stats['grad_norm_mean']:.2f}  {stats['tokens_per_s']:.0f} tokens/s  {stats['epoch_s']:.1f}s"
        )


def fit_temperature(net: SequenceTagger, enc: TagEncoder, dev: Split) -> float:
    """The temperature that minimises dev NLL of the per-token probabilities (a softmax; with a CRF the
    temperature also divides its transitions, so it is searched on a grid of the marginals)."""
    if not net.config.crf:
        _, scores, gold = predict(net, enc, dev)
        keep = gold >= 0
        return ev.fit_temperature(scores[keep], gold[keep])
    grid = [math.exp(x / 10) for x in range(-10, 16)]
    return min(grid, key=lambda t: _marginal_nll(net, enc, dev, t))


@torch.inference_mode()
def _marginal_nll(net: SequenceTagger, enc: TagEncoder, dev: Split, temperature: float) -> float:
    total, count = 0.0, 0
    for start in range(0, len(dev), 256):
        idx = list(range(start, min(len(dev), start + 256)))
        words, chars, lengths, tags = dev.batch(enc, idx)
        words, chars, tags = to_device(net.head.weight.device, words, chars, tags)
        probs = net.probabilities(net(words, chars if net.config.char_vocab_size else None, lengths), lengths,
                                  temperature)  # fmt: skip
        keep = tags >= 0
        total -= probs.gather(-1, tags.clamp(min=0).unsqueeze(-1)).squeeze(-1)[keep].clamp(min=1e-12).log().sum().item()
        count += int(keep.sum())
    return total / max(count, 1)


class MostFrequentTag:
    """The baseline a tagger must beat, as one would write it in an afternoon: each word's most frequent training
    tag (its exact form, else its lower-cased form); for a word never seen, the most frequent tag among words seen
    only once that share its last three letters and its capitalisation (rare words are the best model of unseen
    ones), else its capitalisation alone."""

    def __init__(self, train: Sequence[TaggedSentence]) -> None:
        exact: dict[str, Counter[str]] = {}
        lower: dict[str, Counter[str]] = {}
        for s in train:
            for token, tag in zip(s.tokens, s.tags, strict=True):
                exact.setdefault(token, Counter())[tag] += 1
                lower.setdefault(token.lower(), Counter())[tag] += 1
        self.exact = {w: c.most_common(1)[0][0] for w, c in exact.items()}
        self.lower = {w: c.most_common(1)[0][0] for w, c in lower.items()}
        by_shape: dict[tuple[str, bool], Counter[str]] = {}
        by_case: dict[bool, Counter[str]] = {}
        for word, counts in exact.items():
            if sum(counts.values()) == 1:
                [tag] = counts
                by_shape.setdefault(self.shape(word), Counter())[tag] += 1
                by_case.setdefault(self.shape(word)[1], Counter())[tag] += 1
        self.by_shape = {k: c.most_common(1)[0][0] for k, c in by_shape.items()}
        self.by_case = {k: c.most_common(1)[0][0] for k, c in by_case.items()}
        self.fallback = Counter(t for s in train for t in s.tags).most_common(1)[0][0]

    @staticmethod
    def shape(word: str) -> tuple[str, bool]:
        return word[-3:].lower(), word[:1].isupper()

    def tag(self, token: str) -> str:
        found = self.exact.get(token) or self.lower.get(token.lower())
        shape = self.shape(token)
        return found or self.by_shape.get(shape) or self.by_case.get(shape[1], self.fallback)


def baseline_accuracy(train: Sequence[TaggedSentence], split: Sequence[TaggedSentence]) -> float:
    baseline = MostFrequentTag(train)
    pairs = [(baseline.tag(t), g) for s in split for t, g in zip(s.tokens, s.tags, strict=True)]
    return sum(p == g for p, g in pairs) / max(len(pairs), 1)


def _report(
    net: SequenceTagger, enc: TagEncoder, corpus: TaggedCorpus, splits: dict[str, Split], labels: list[str],
    temperature: float, state: TrainState,
) -> tuple[dict[str, Any], dict[str, bytes]]:  # fmt: skip
    """Scores on dev (and test): accuracy, seen/unseen words, per tag, entities for BIO, calibration, baseline."""
    vocab = set(enc.tokenizer.get_vocab())
    metrics: dict[str, Any] = {"calibration": {"temperature": temperature}}
    sentences = {"dev": corpus.dev, "test": corpus.test or []}
    scored_labels: dict[str, list[str]] = {}
    for name, split in splits.items():
        if name == "train":
            continue
        best, scores, gold = predict(net, enc, split)
        pred = [[labels[k] for k in row] for row in best]
        report, scored_labels[name] = score_tags(split.tokens, [s.tags for s in sentences[name]], pred, vocab, labels)
        keep = gold >= 0
        probs = torch.softmax(scores[keep] / temperature, -1) if not net.config.crf else None
        if probs is not None:
            report["ece"] = ev.expected_calibration_error(probs, gold[keep])
        report["most_frequent_tag_accuracy"] = baseline_accuracy(corpus.train, sentences[name])
        metrics[name] = report
    metrics.update(best_epoch=state.best_epoch, epochs_run=state.epoch, train_seconds=state.elapsed_s)
    eval_split = "test" if "test" in metrics else "dev"
    files = {
        "metrics.json": (json.dumps(metrics, indent=2) + "\n").encode(),
        "learning_curves.png": ev.plot_learning_curves(state.history),
        "confusion_matrix.png": ev.plot_tag_confusion(metrics[eval_split]["confusion"], scored_labels[eval_split]),
    }
    return metrics, files


def score_tags(
    tokens: Sequence[Sequence[str]], gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], vocab: set[str],
    labels: list[str],
) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """model/evaluate.py's tagging metrics as the training report and `python -m model evaluate` both give them: a
    word is unseen when the vocabulary lacks its normalised form, and the label list is the model's tags, then any
    gold tag it never saw in training (it can only be wrong there). Returns the report and that label list."""
    scored = labels + sorted({t for tags in gold for t in tags} - set(labels))
    forms = [[normalize_word(t) for t in sentence] for sentence in tokens]
    return ev.tagging_metrics(gold, pred, forms, vocab, scored), scored


def train_tagger(
    cfg: TaggerTrainConfig, corpus: TaggedCorpus, out: str | Path, *, resume: bool = False, device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:  # fmt: skip
    """Train on `corpus` and write the artifact to `out`. Returns the metrics."""
    rt = setup_runtime(device, cfg.threads, precision)
    if rt.distributed:
        raise ValueError("the tagger trains in one process; run it without torchrun")
    out = Path(out)
    checkpoint = out.parent / f"{out.name}.ckpt"
    try:
        torch.manual_seed(cfg.seed)
        enc = TagEncoder.build([s.tokens for s in corpus.train], cfg.min_frequency, cfg.max_chars_per_word)
        labels = corpus.tags
        index = {t: i for i, t in enumerate(labels)}
        splits = {"train": Split(corpus.train, index), "dev": Split(corpus.dev, index)}
        if corpus.test:
            splits["test"] = Split(corpus.test, index)
        counts = Counter(normalize_word(t) for s in corpus.train for t in s.tokens)
        singletons = torch.zeros(enc.vocab_size, dtype=torch.bool)
        for word, wid in enc.tokenizer.get_vocab().items():
            singletons[wid] = counts.get(word, 0) == 1
        net = SequenceTagger(cfg.network(enc.vocab_size, len(labels), enc.char_vocab_size)).to(rt.device)
        log.info(
            "training %s tagger on %s: %d train / %d dev sentences, %d tags, vocabulary %d, %d characters, %d"
            " parameters", net.config.cell, corpus.name, len(corpus.train), len(corpus.dev), len(labels),
            enc.vocab_size, enc.char_vocab_size, count_parameters(net),
        )  # fmt: skip
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        trainee = TaggerTrainee(net, cfg, enc, splits["train"], splits["dev"], singletons, rt)
        key = fingerprint(cfg, corpus.sha256, corpus.name, precision=rt.precision)
        plan = Plan.of(cfg, trainee.epochs, trainee.steps_per_epoch * trainee.epochs)
        state = shared_fit(trainee, net, opt, plan, rt, checkpoint=checkpoint, fingerprint=key, resume=resume)
        temperature = fit_temperature(net, enc, splits["dev"])
        metrics, files = _report(net, enc, corpus, splits, labels, temperature, state)
        config = ArtifactConfig(
            task="tagging",
            network=asdict(net.config),
            tokenizer={"kind": "word+char", "vocab_size": enc.vocab_size, "chars": enc.chars,
                       "max_chars_per_word": cfg.max_chars_per_word, "normalize": "lowercase, digits as 0"},
            labels=labels,
            calibration={"temperature": temperature},
            training={**asdict(cfg), "history": state.history, "skipped_rows": corpus.skipped, **rt.describe()},
            data=DataInfo(corpus.name, corpus.sha256),
            metrics=metrics,
        )  # fmt: skip
        publish(out, checkpoint, config, net.state_dict(), enc.tokenizer, files)
        return metrics
    finally:
        teardown_runtime(rt)
