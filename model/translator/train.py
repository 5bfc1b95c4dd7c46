"""Fit the translator and write its artifact (subword tokenizers, weights, metrics, learning curves, attention
heatmaps).

Run through the CLI: `python -m model train translator [--data multi30k | --source F --target F | --train F]
[--preset quick|default]`.

Teacher forcing with label smoothing on the shared fit loop (model/train.py); after each epoch, greedy BLEU on
(the first `dev_sentences` of) dev picks the best weights. The report scores dev and test with beam search:
sacreBLEU (cased, detokenized, its default 13a tokenizer: the figure to quote), BLEU on lower-cased tokens
(sacreBLEU with lowercase=True: what tutorials and model cards report), chrF, and perplexity.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import matplotlib
import sacrebleu
import torch
import torch.nn.functional as F

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.checkpoints import TrainState, fingerprint
from model.data import DataError
from model.networks import count_parameters
from model.runtime import Runtime, setup_runtime, teardown_runtime
from model.train import Batches, Plan, Step, bucketed_batches, epochs_for, keep_if_higher, publish
from model.train import fit as shared_fit
from model.translator.config import TranslatorTrainConfig
from model.translator.data import Pairs, ParallelCorpus
from model.translator.decode import DecodeParams, Hypothesis, best_texts, pad_sources, translate
from model.translator.network import Translator
from model.translator.predictor import TARGET_TOKENIZER
from model.translator.subwords import BOS_ID, EOS_ID, PAD_ID, Vocabularies, encode_source, encode_target

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    """A split's subword ids: sources closed by [EOS], targets without markers."""

    source: list[list[int]]
    target: list[list[int]]

    def batch(self, idx: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """Source ids (B, S) and lengths (B,), decoder inputs [BOS] + ids and outputs ids + [EOS] (B, T)."""
        source, lengths = pad_sources([self.source[i] for i in idx], device)
        width = max(len(self.target[i]) for i in idx) + 1
        target_in = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
        target_out = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
        for row, i in enumerate(idx):
            ids = torch.tensor(self.target[i], dtype=torch.long)
            target_in[row, 0], target_in[row, 1 : len(ids) + 1] = BOS_ID, ids
            target_out[row, : len(ids)], target_out[row, len(ids)] = ids, EOS_ID
        return source, lengths, target_in.to(device), target_out.to(device)


def encode_split(vocab: Vocabularies, pairs: Pairs) -> Encoded:
    return Encoded(encode_source(vocab.source, pairs.source), encode_target(vocab.target, pairs.target))


def within_limit(encoded: Encoded, pairs: Pairs, max_length: int, skip: bool, name: str) -> tuple[Encoded, int]:
    """The training pairs whose sides have at most `max_length` subwords; a longer one stops the run (naming it)
    or, with `skip`, is dropped and counted."""
    keep = []
    for i, (s, t) in enumerate(zip(encoded.source, encoded.target, strict=True)):
        if len(s) - 1 <= max_length and len(t) <= max_length:
            keep.append(i)
        elif not skip:
            raise DataError(
                f"{name}: training pair {i + 1} has {len(s) - 1} source and {len(t)} target subwords, over"
                f" max_length {max_length} ({pairs.source[i][:60]!r}); raise --max-length or use --skip-bad-rows"
            )
    return Encoded([encoded.source[i] for i in keep], [encoded.target[i] for i in keep]), len(encoded.source) - len(
        keep
    )


def scores(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """sacreBLEU's corpus BLEU (cased, 13a), BLEU on lower-cased tokens, and chrF."""
    refs = [list(references)]
    return {
        "bleu": sacrebleu.corpus_bleu(hypotheses, refs).score,
        "bleu_lowercase_tokens": sacrebleu.corpus_bleu(hypotheses, refs, lowercase=True).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, refs).score,
    }


@torch.inference_mode()
def perplexity(net: Translator, data: Encoded, device: torch.device, batch_size: int = 128) -> float:
    """exp of the mean negative log-likelihood per target subword ([EOS] included), teacher-forced."""
    was = net.training
    net.eval()
    total, count = 0.0, 0
    order = sorted(range(len(data.source)), key=lambda i: len(data.source[i]))
    for start in range(0, len(order), batch_size):
        source, lengths, target_in, target_out = data.batch(order[start : start + batch_size], device)
        logits, _ = net(source, lengths, target_in)
        flat = logits.float().reshape(-1, logits.shape[-1])
        total += F.cross_entropy(flat, target_out.reshape(-1), ignore_index=PAD_ID, reduction="sum").item()
        count += int((target_out != PAD_ID).sum())
    net.train(was)
    return math.exp(total / max(count, 1))


def planned_epochs(cfg: TranslatorTrainConfig, pairs: int) -> int:
    """`epochs`, or more on small data: enough for `min_steps` optimizer steps (the schedule spans them all)."""
    return epochs_for(cfg.epochs, cfg.min_steps, math.ceil(pairs / cfg.batch_size))


@dataclass
class TranslatorTrainee:
    """The translator's part of the shared fit loop: batches of similar source lengths, label-smoothed
    cross-entropy per target subword, greedy dev BLEU (higher is better) to keep the best epoch."""

    net: Translator
    cfg: TranslatorTrainConfig
    train: Encoded
    dev: Encoded
    dev_texts: Pairs
    vocab: Vocabularies
    rt: Runtime
    unit = "subwords"

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.train.source) / self.cfg.batch_size)

    @property
    def epochs(self) -> int:
        return planned_epochs(self.cfg, len(self.train.source))

    def batches(self, epoch: int) -> Batches:
        return bucketed_batches([len(s) for s in self.train.source], self.cfg.batch_size, self.cfg.seed, epoch)

    def step(self, idx: list[int]) -> Step:
        source, lengths, target_in, target_out = self.train.batch(idx, self.rt.device)
        logits, _ = self.net(source, lengths, target_in)
        flat = logits.float().reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(
            flat, target_out.reshape(-1), ignore_index=PAD_ID, label_smoothing=self.cfg.label_smoothing
        )
        return Step(loss, int((target_out != PAD_ID).sum()))

    def groups(self) -> list[Iterable[torch.Tensor]]:
        return [self.net.parameters()]

    def validate(self) -> dict[str, Any]:
        n = self.cfg.dev_sentences
        head = self.dev_texts.head(n)
        results = translate(self.net, self.vocab.source, self.vocab.target, head.source, DecodeParams(beam=1))
        bleu = sacrebleu.corpus_bleu(best_texts(self.vocab.target, results), [head.target]).score
        ppl = perplexity(self.net, self.dev, self.rt.device)
        return {"dev_bleu": bleu, "dev_loss": math.log(ppl), "dev_perplexity": ppl}

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        return keep_if_higher(self.net, stats["dev_bleu"], state, best)

    def describe(self, stats: dict[str, Any], epochs: int) -> str:
        return (
            f"train loss {stats['train_loss']:.4f}  dev BLEU (greedy) {stats['dev_bleu']:.2f}  dev ppl"
            f" {stats['dev_perplexity']:.2f}  grad norm mean {stats['grad_norm_mean']:.2f}"
            f"  {stats['subwords_per_s']:.0f} subwords/s  {stats['epoch_s']:.1f}s"
        )


def decode_params(cfg: TranslatorTrainConfig, **overrides: Any) -> DecodeParams:
    return DecodeParams(**{"beam": cfg.beam, "alpha": cfg.length_penalty, **overrides})


def evaluate_split(
    net: Translator, vocab: Vocabularies, pairs: Pairs, encoded: Encoded, params: DecodeParams, device: torch.device
) -> tuple[dict[str, float], list[list[Hypothesis]]]:
    results = translate(net, vocab.source, vocab.target, pairs.source, params)
    report = scores(best_texts(vocab.target, results), pairs.target)
    report["perplexity"] = perplexity(net, encoded, device)
    return report, results


def plot_attention(net: Translator, vocab: Vocabularies, texts: Sequence[str]) -> bytes:
    """Heatmaps of the attention of a few dev sentences' translations (target subwords down, source across)."""
    results = translate(net, vocab.source, vocab.target, texts, DecodeParams(beam=1, attention=True))
    fig, axes = plt.subplots(1, len(texts), figsize=(4.2 * len(texts), 4.2))
    for ax, text, (hyp,) in zip(axes if len(texts) > 1 else [axes], texts, results, strict=True):
        src = [vocab.source.id_to_token(i) for i in encode_source(vocab.source, [text])[0]]
        tgt = [vocab.target.id_to_token(i) for i in hyp.ids] + ["[EOS]"]
        ax.imshow(hyp.attention, cmap="Greys", aspect="auto", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(src)), src, rotation=90, fontsize=7)
        ax.set_yticks(range(len(tgt)), tgt, fontsize=7)
    fig.suptitle("attention (greedy decoding, dev sentences)")
    fig.tight_layout()
    return ev.png(fig)


def train_translator(
    cfg: TranslatorTrainConfig, corpus: ParallelCorpus, out: str | Path, *, resume: bool = False,
    device: str = "cpu", precision: str = "fp32",
) -> dict[str, Any]:  # fmt: skip
    """Train on `corpus` and write the artifact to `out`. Returns the metrics."""
    rt = setup_runtime(device, cfg.threads, precision)
    if rt.distributed:
        raise ValueError("the translator trains in one process; run it without torchrun")
    out = Path(out)
    checkpoint = out.parent / f"{out.name}.ckpt"
    try:
        torch.manual_seed(cfg.seed)
        vocab = Vocabularies.learn(
            corpus.train.source, corpus.train.target, cfg.subwords, cfg.vocab_size, cfg.joint_vocabulary
        )
        train, too_long = within_limit(
            encode_split(vocab, corpus.train), corpus.train, cfg.max_length, cfg.skip_bad_rows, corpus.name
        )
        dev = encode_split(vocab, corpus.dev)
        network_cfg = cfg.network(vocab.source.get_vocab_size(), vocab.target.get_vocab_size())
        net = Translator(network_cfg).to(rt.device)
        log.info(
            "training %s translator (%s attention) on %s: %d train / %d dev pairs, vocabularies %d / %d%s,"
            " %d parameters", network_cfg.cell, network_cfg.attention, corpus.name, len(train.source),
            len(corpus.dev), network_cfg.source_vocab_size, network_cfg.target_vocab_size,
            " (joint)" if vocab.joint else "", count_parameters(net),
        )  # fmt: skip
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        trainee = TranslatorTrainee(net, cfg, train, dev, corpus.dev, vocab, rt)
        key = fingerprint(cfg, corpus.sha256, corpus.name, precision=rt.precision)
        plan = Plan.of(cfg, trainee.epochs, trainee.steps_per_epoch * trainee.epochs)
        state = shared_fit(trainee, net, opt, plan, rt, checkpoint=checkpoint, fingerprint=key, resume=resume)
        params = decode_params(cfg)
        metrics: dict[str, Any] = {"best_epoch": state.best_epoch, "epochs_run": state.epoch,
                                   "train_seconds": state.elapsed_s, "beam": params.beam}  # fmt: skip
        splits = {"dev": (corpus.dev, dev)}
        if corpus.test is not None:
            splits["test"] = (corpus.test, encode_split(vocab, corpus.test))
        samples = []
        for name, (pairs, encoded) in splits.items():
            report, results = evaluate_split(net, vocab, pairs, encoded, params, rt.device)
            metrics[name] = report
            if name == "dev":
                shown = zip(pairs.source[:5], pairs.target[:5], best_texts(vocab.target, results[:5]), strict=True)
                samples = [{"source": s, "reference": r, "translation": t} for s, r, t in shown]
        metrics["samples"] = samples
        log.info("dev %s", json.dumps(metrics["dev"]))
        if "test" in metrics:
            log.info("test %s", json.dumps(metrics["test"]))
        files = {
            "metrics.json": (json.dumps(metrics, indent=2, ensure_ascii=False) + "\n").encode(),
            "learning_curves.png": ev.plot_learning_curves(state.history, metric="dev_bleu", dev_key="dev_loss"),
            "attention.png": plot_attention(net.cpu(), vocab, corpus.dev.source[:3]),
        }
        if not vocab.joint:
            files[TARGET_TOKENIZER] = vocab.target.to_str().encode()
        skipped = {**corpus.skipped, **({"over max_length": too_long} if too_long else {})}
        config = ArtifactConfig(
            task="translation",
            network=asdict(network_cfg),
            tokenizer={"kind": cfg.subwords, "joint": vocab.joint, "source_vocab_size": network_cfg.source_vocab_size,
                       "target_vocab_size": network_cfg.target_vocab_size},
            training={**asdict(cfg), "history": state.history, "skipped_rows": skipped, **rt.describe(),
                      "decoding": {"beam": params.beam, "alpha": params.alpha, "max_len_a": params.max_len_a,
                                   "max_len_b": params.max_len_b}},
            data=DataInfo(corpus.name, corpus.sha256),
            metrics=metrics,
        )  # fmt: skip
        publish(out, checkpoint, config, net.state_dict(), vocab.source, files)
        return metrics
    finally:
        teardown_runtime(rt)
