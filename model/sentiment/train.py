"""Fit the sentiment classifier and write its artifact (tokenizer, weights, calibration, metrics, plots).

Run through the CLI: `python -m model train sentiment [--data sst2 | --train F …] [--preset quick|default]`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.networks import count_parameters
from model.sentiment import onnx_runtime
from model.sentiment.augment import augmented
from model.sentiment.config import SentimentTrainConfig
from model.sentiment.data import SentimentData
from model.sentiment.network import SentimentClassifier
from model.sentiment.ngrams import BAG_NGRAMS, EMBEDDING_NGRAMS, CharNGramEmbedding
from model.sentiment.predictor import pad
from model.tokenization import PAD_ID, UNK_ID, build_word_tokenizer, encode_batch
from model.train import (
    Budget,
    Plan,
    Runtime,
    TrainState,
    bucketed_batches,
    epoch_seed,
    epochs_for,
    fingerprint,
    lr_at,
    optimizer_step,
    progress,
    publish,
    setup_runtime,
    teardown_runtime,
)
from model.train import fit as shared_fit

log = logging.getLogger(__name__)


@dataclass
class Encoded:
    ids: list[list[int]]
    targets: torch.Tensor  # (N,)
    soft: torch.Tensor | None = None  # (N, C) a teacher's probabilities: then training fits these (distillation)

    def batch(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, lengths = pad([self.ids[i] for i in idx])
        return ids, lengths, self.targets[idx]


def _encode(tok: Any, texts: list[str], labels: list[str], names: list[str], max_length: int) -> Encoded:
    index = {name: i for i, name in enumerate(names)}
    return Encoded(encode_batch(tok, texts, max_length), torch.tensor([index[x] for x in labels], dtype=torch.long))


@torch.inference_mode()
def predict_logits(
    net: nn.Module, data: Encoded, device: torch.device, batch_size: int = 512, per_member: bool = False
) -> torch.Tensor:
    """Logits (N, C) in data order, computed in length-sorted batches; per_member: each member's (M, N, C)."""
    was_training = net.training
    net.eval()
    parts: dict[int, torch.Tensor] = {}
    order = sorted(range(len(data.ids)), key=lambda i: len(data.ids[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        ids, lengths, _ = data.batch(idx)
        logits = net(ids.to(device), lengths, per_member=True) if per_member else net(ids.to(device), lengths)
        logits = logits.float().cpu().clone()
        for j, i in enumerate(idx):
            parts[i] = logits[:, j] if per_member else logits[j]
    net.train(was_training)
    return torch.stack([parts[i] for i in range(len(data.ids))], dim=1 if per_member else 0)


def unwrap(net: nn.Module) -> SentimentClassifier:
    module = net.module if isinstance(net, DistributedDataParallel) else net
    assert isinstance(module, SentimentClassifier)
    return module


def steps_per_epoch(cfg: SentimentTrainConfig, examples: int, rt: Runtime) -> int:
    return math.ceil(examples / cfg.batch_size / rt.world)


def planned_epochs(cfg: SentimentTrainConfig, examples: int, rt: Runtime) -> int:
    """`epochs`, or more on small data: enough for `min_steps` optimizer steps."""
    return epochs_for(cfg.epochs, cfg.min_steps, steps_per_epoch(cfg, examples, rt))


def combined(net: SentimentClassifier, parts: torch.Tensor) -> torch.Tensor:
    """combine() of the parts' logits (K, N, C) that predict_logits returns on the CPU, with the network wherever
    it is (its mixture weights live beside its parameters): the combination (N, C), on the CPU."""
    return net.combine(parts.to(next(net.parameters()).device)).cpu()


def _dev_metrics(net: nn.Module, dev: Encoded, rt: Runtime) -> dict[str, Any]:
    parts = predict_logits(net, dev, rt.device, per_member=True)  # (K, N, C)
    logits = combined(unwrap(net), parts)
    return {
        "dev_loss": F.cross_entropy(logits, dev.targets).item(),
        "dev_accuracy": (logits.argmax(1) == dev.targets).float().mean().item(),
        "dev_part_accuracy": (parts.argmax(-1) == dev.targets).float().mean(1).tolist(),
    }


def _keep_parts(best: dict[str, torch.Tensor], module: SentimentClassifier, parts: list[int]) -> None:
    """Copy the current weights of the parts `parts` (indices into module.parts) into the snapshot `best`."""
    prefixes = tuple(f"members.{k}." if k < len(module.members) else "bag." for k in parts)
    for name, value in module.state_dict().items():
        if name.startswith(prefixes):
            best[name] = value.detach().cpu().clone()


@dataclass
class Fixed:
    """A refit's plan, chosen on dev by the first fit: the learning-rate schedule spans `planned` epochs, and part
    k keeps its weights after epoch `epochs[k]` (no dev to choose on: the dev texts are training data now)."""

    planned: int
    epochs: list[int]


class SentimentTrainee:
    """The classifier's part of the shared fit loop. The parts (the members and the bag) learn on their own
    losses, so each keeps the epoch where its own dev accuracy was best, and training stops once no part has
    improved for `patience` epochs; under `fixed` (a refit), each keeps the epoch given there."""

    def __init__(
        self, net: nn.Module, opt: torch.optim.Optimizer, cfg: SentimentTrainConfig, train: Encoded, dev: Encoded,
        rt: Runtime, fixed: Fixed | None = None,
    ) -> None:  # fmt: skip
        self.net, self.module, self.opt, self.cfg, self.data, self.dev, self.rt, self.fixed = (
            net, unwrap(net), opt, cfg, train, dev, rt, fixed
        )  # fmt: skip
        self.planned = fixed.planned if fixed is not None else planned_epochs(cfg, len(train.ids), rt)
        self.total_steps = steps_per_epoch(cfg, len(train.ids), rt) * self.planned
        self.scaler = rt.grad_scaler()

    def train_epoch(self, state: TrainState, budget: Budget) -> dict[str, Any]:
        net, module, opt, cfg, data, rt = self.net, self.module, self.opt, self.cfg, self.data, self.rt
        total_steps = self.total_steps
        net.train()
        torch.manual_seed(epoch_seed(cfg.seed, state.epoch, rt.rank))
        batches = bucketed_batches([len(s) for s in data.ids], cfg.batch_size, cfg.seed, state.epoch, rt)
        loss_sum = correct = seen = clipped = 0.0
        norms: list[float] = []
        start = time.monotonic()
        desc = f"epoch {state.epoch + 1}/{self.planned}"
        bar = progress(batches, desc, rt)
        for idx in bar:
            ids, lengths, targets = data.batch(idx)
            if cfg.word_dropout > 0:
                drop = (torch.rand(ids.shape) < cfg.word_dropout) & (ids != PAD_ID)
                ids = ids.masked_fill(drop, UNK_ID)
            ids, targets = ids.to(rt.device), targets.to(rt.device)
            for group in opt.param_groups:
                group["lr"] = lr_at(state.step, total_steps, cfg.lr, cfg.warmup_fraction)
            with rt.autocast():
                part_logits = net(ids, lengths, per_member=True)  # (K, B, C): each part fits its own loss
                parts = part_logits.shape[0]
                flat = part_logits.float().reshape(-1, part_logits.shape[-1])
                if data.soft is None:
                    loss = F.cross_entropy(flat, targets.repeat(parts), label_smoothing=cfg.label_smoothing)
                else:  # distillation: KL to the teacher's tempered probabilities, scaled by T^2 (Hinton et al., 2015)
                    t = cfg.distill_temperature
                    soft = data.soft[idx].to(rt.device).repeat(parts, 1)
                    loss = F.kl_div(F.log_softmax(flat / t, -1), soft, reduction="batchmean") * t * t
            logits = part_logits.mean(0)
            clip = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
            trained = [m for m in module.parts if any(p.requires_grad for p in m.parameters())]  # not a frozen bag
            # the sum of part losses: each part's gradient as if alone, and each part's norm clipped on its own
            part_norms = optimizer_step(loss * parts, opt, self.scaler, [m.parameters() for m in trained], clip)
            if part_norms:  # none for an fp16 step skipped on overflow
                norms.append(sum(part_norms) / len(trained))
                clipped += sum(n > clip for n in part_norms) / len(trained)
            state.step += 1
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == targets).sum().item()
            seen += len(idx)
            if state.step % 25 == 0:
                rate = seen * rt.world / max(1e-9, time.monotonic() - start)
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}", sent_s=f"{rate:.0f}", refresh=False
                )
            if budget.exhausted():
                break
        bar.close()
        norms_t = torch.tensor(norms or [0.0])
        return {
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
            "grad_norm_mean": norms_t.mean().item(),
            "grad_norm_max": norms_t.max().item(),
            "grad_norm_p99": norms_t.quantile(0.99).item(),
            "clipped_fraction": clipped / max(len(norms), 1),
            "sentences_per_s": seen * rt.world / max(1e-9, time.monotonic() - start),
            "epoch_s": time.monotonic() - start,
            "complete": float(seen >= sum(len(b) for b in batches)),
        }

    def validate(self) -> dict[str, Any]:
        return {} if self.fixed is not None else _dev_metrics(self.module, self.dev, self.rt)

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        if self.fixed is not None:  # a refit: each part's epoch is given; Plan.epochs ends the run
            due = [k for k, epoch in enumerate(self.fixed.epochs) if epoch == state.epoch]
            for k in due:
                state.part_epoch[k] = state.epoch
            _keep_parts(best, self.module, due)
            state.best_epoch = max(self.fixed.epochs)
            return True
        improved = [k for k, acc in enumerate(stats["dev_part_accuracy"]) if acc > state.part_best[k]]
        for k in improved:
            state.part_best[k], state.part_epoch[k] = stats["dev_part_accuracy"][k], state.epoch
        _keep_parts(best, self.module, improved)
        state.best_epoch = max(state.part_epoch)
        return bool(improved)

    def describe(self, stats: dict[str, Any], epochs: int) -> str:
        if "dev_accuracy" not in stats:
            return (
                f"loss {stats['train_loss']:.4f}  train acc {stats['train_accuracy']:.4f} (refit: no dev)  grad norm"
                f" mean {stats['grad_norm_mean']:.2f}  {stats['sentences_per_s']:.0f} sent/s  {stats['epoch_s']:.1f}s"
            )
        parts = " ".join(f"{a:.4f}" for a in stats["dev_part_accuracy"])
        return (
            f"loss {stats['train_loss']:.4f}  train acc {stats['train_accuracy']:.4f}  dev acc"
            f" {stats['dev_accuracy']:.4f} (parts {parts})  dev loss {stats['dev_loss']:.4f}  grad norm mean"
            f" {stats['grad_norm_mean']:.2f} max {stats['grad_norm_max']:.2f}  {stats['sentences_per_s']:.0f}"
            f" sent/s  {stats['epoch_s']:.1f}s"
        )


def fit(
    cfg: SentimentTrainConfig,
    net: nn.Module,
    train: Encoded,
    dev: Encoded,
    rt: Runtime,
    checkpoint: Path | None,
    fingerprint: str,
    resume: bool,
    fixed: Fixed | None = None,
) -> tuple[TrainState, Fixed]:
    """The shared epoch loop (model/train.py) over SentimentTrainee. Leaves the best weights loaded. Returns the
    state and the schedule the fit followed: what a refit repeats."""
    module = unwrap(net)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    parts = len(module.parts)
    state = TrainState(part_best=[-math.inf] * parts, part_epoch=[0] * parts)
    trainee = SentimentTrainee(net, opt, cfg, train, dev, rt, fixed)
    plan = Plan(trainee.planned if fixed is None else max(fixed.epochs), cfg.patience, cfg.max_minutes)
    state = shared_fit(
        trainee, module, opt, plan, rt, checkpoint=checkpoint, fingerprint=fingerprint, resume=resume, state=state
    )
    return state, Fixed(trainee.planned, list(state.part_epoch))


def build_network(
    cfg: SentimentTrainConfig, tok: Tokenizer, num_classes: int, seen: set[int], device: torch.device
) -> SentimentClassifier:
    """The classifier to train, its word vectors drawn from N(0, embedding_std). With `char_ngrams` they and the
    bag's word weights are trained as sums of character n-grams (model/sentiment/ngrams.py) over the token ids `seen` in
    training; fold() makes plain tables of them."""
    net = SentimentClassifier(cfg.network(tok.get_vocab_size(), num_classes))
    with torch.no_grad():
        for member in net.members:
            assert isinstance(member.embedding, nn.Embedding)
            nn.init.normal_(member.embedding.weight, 0.0, cfg.embedding_std)
            member.embedding.weight[member.embedding.padding_idx or 0] = 0.0
    if cfg.char_ngrams:
        vocab = tok.get_vocab()
        for member in net.members:
            assert isinstance(member.embedding, nn.Embedding)
            member.embedding = CharNGramEmbedding(member.embedding, vocab, EMBEDDING_NGRAMS, seen, init_std=0.02)
        if net.bag is not None:  # a linear model's weights start at zero
            assert isinstance(net.bag.words, nn.Embedding)
            net.bag.words = CharNGramEmbedding(net.bag.words, vocab, BAG_NGRAMS, seen, init_std=0.0)
    return net.to(device)


def fold(net: SentimentClassifier) -> SentimentClassifier:
    """The network as the artifact stores it: character n-grams added into plain embedding tables."""
    for member in net.members:
        if isinstance(member.embedding, CharNGramEmbedding):
            member.embedding = member.embedding.folded()
    if net.bag is not None and isinstance(net.bag.words, CharNGramEmbedding):
        net.bag.words = net.bag.words.folded()
    return net


def fit_mixture(net: SentimentClassifier, dev: Encoded, rt: Runtime, given: list[float] | None = None) -> list[float]:
    """With `weighted`, set how much each part counts: the weights minimising dev NLL (model/evaluate.py), or
    `given` ones (a refit's, chosen on dev by the first fit)."""
    if not net.config.weighted:
        return []
    if given is not None:
        weights = torch.tensor(given)
    else:
        weights = ev.fit_mixture(predict_logits(net, dev, rt.device, per_member=True), dev.targets)
    net.mixture.copy_(weights.to(net.mixture.device))
    return [float(w) for w in weights]


def distill(
    cfg: SentimentTrainConfig,
    teacher: SentimentClassifier,
    enc: dict[str, Encoded],
    rt: Runtime,
    checkpoint: Path,
    fingerprint: str,
    resume: bool,
    tok: Tokenizer,
    seen: set[int],
    start: int | None = None,
    fixed: Fixed | None = None,
) -> tuple[SentimentClassifier, TrainState, dict[str, Any], Fixed]:
    """Fit one encoder to the trained ensemble (`teacher`): started from the teacher's member with the best dev
    accuracy (or member `start`), trained on the teacher's probabilities (at `distill_temperature`) over the
    transfer set (the training texts and `augment` variants of each: model/sentiment/augment.py), for
    `distill_epochs` at `distill_lr`, the best dev epoch kept, checkpointed and resumable like the teacher. The
    teacher's bag joins the student as it is; a refit repeats the first fit's epochs (`fixed`). Returns the
    student, its TrainState, the teacher's own scores and the student's schedule."""
    train = enc["train"]
    variants, sources = augmented(train.ids, cfg.augment, cfg.augment_mask, cfg.augment_ngram, cfg.seed)
    transfer = Encoded(train.ids + variants, torch.cat([train.targets, train.targets[sources]]))
    t = cfg.distill_temperature
    taught = combined(teacher, predict_logits(teacher, transfer, rt.device, per_member=True))  # (N, C)
    transfer.soft = torch.softmax(taught / t, -1)
    # one forward per split: the teacher's answer is combine() of its parts' (as in its own forward)
    per_split = {name: predict_logits(teacher, data, rt.device, per_member=True) for name, data in enc.items()
                 if name != "train"}  # fmt: skip
    members = len(teacher.members)
    member_acc = (per_split["dev"][:members].argmax(-1) == enc["dev"].targets).float().mean(1).tolist()
    best = start if start is not None else max(range(members), key=member_acc.__getitem__)
    scores: dict[str, Any] = {"ensemble": members, "member_dev_accuracy": member_acc, "start": best}
    if teacher.bag is not None:
        scores["bag_dev_accuracy"] = (per_split["dev"][-1].argmax(-1) == enc["dev"].targets).float().mean().item()
    if teacher.config.weighted:
        scores["mixture"] = teacher.mixture.tolist()
    for name, parts in per_split.items():
        scores[f"{name}_accuracy"] = (combined(teacher, parts).argmax(-1) == enc[name].targets).float().mean().item()
    student_cfg = dataclasses.replace(cfg, ensemble=1, epochs=cfg.distill_epochs, lr=cfg.distill_lr)
    student = build_network(student_cfg, tok, teacher.config.num_classes, seen, rt.device)
    student.members[0].load_state_dict(teacher.members[best].state_dict())
    if student.bag is not None and teacher.bag is not None:  # the bag is a linear model of the labels: kept as is
        student.bag.load_state_dict(teacher.bag.state_dict())
        student.bag.requires_grad_(False)
    net: nn.Module = DistributedDataParallel(student) if rt.distributed else student
    if rt.is_main:
        log.info(
            "distilling the %d-member ensemble (dev acc %.4f) into one encoder, from member %d (dev acc %.4f), on %d"
            " texts (%d variants)",
            members, scores["dev_accuracy"], best, member_acc[best], len(transfer.ids), len(variants),
        )  # fmt: skip
    state, schedule = fit(student_cfg, net, transfer, enc["dev"], rt, checkpoint, fingerprint, resume, fixed)
    student.requires_grad_(True)
    return student, state, scores, schedule


@dataclass
class Schedule:
    """What dev chose in the first fit, which a refit (no dev left to choose on) repeats."""

    teacher: Fixed
    mixture: list[float]
    start: int | None = None  # the teacher member the student started from
    student: Fixed | None = None
    student_mixture: list[float] = field(default_factory=list)


@dataclass
class Fitted:
    """One fit of the whole recipe: the network as the artifact stores it, its tokenizer and encoded splits."""

    net: SentimentClassifier
    tok: Tokenizer
    enc: dict[str, Encoded]
    state: TrainState
    schedule: Schedule
    teacher_scores: dict[str, Any] | None = None
    teacher_history: list[dict[str, Any]] = field(default_factory=list)


def checkpoints(out: Path) -> list[Path]:
    """A run's checkpoint directories beside `out`: the teacher's and the student's, of the fit and the refit."""
    return [out.parent / f"{out.name}{stage}{kind}.ckpt" for stage in ("", ".refit") for kind in ("", ".distill")]


def fit_recipe(
    cfg: SentimentTrainConfig, data: SentimentData, rt: Runtime, out: Path, resume: bool,
    schedule: Schedule | None = None,
) -> Fitted:  # fmt: skip
    """Tokenizer, the parts (stopped early on dev), the mixture, and with `distill` the student; given a
    `schedule` (a refit on data whose train holds the first fit's dev), what it says instead of dev's choices."""
    stage = "" if schedule is None else ".refit"
    checkpoint, student_checkpoint = checkpoints(out)[2:] if schedule is not None else checkpoints(out)[:2]
    key: dict[str, Any] = {"world": rt.world, "precision": rt.precision}
    if schedule is not None:
        key["refit"] = asdict(schedule)
    torch.manual_seed(cfg.seed)
    tok = build_word_tokenizer(
        data.train.texts, cfg.tokenizer, cfg.vocab_size, cfg.min_frequency, cfg.lowercase, cfg.word_pieces
    )
    if rt.distributed:  # every rank must use rank 0's token ids
        payload: list[Any] = [tok.to_str() if rt.is_main else None]
        torch.distributed.broadcast_object_list(payload, src=0)
        tok = Tokenizer.from_str(payload[0])
    names = data.label_names
    enc = {"train": _encode(tok, data.train.texts, data.train.labels, names, cfg.max_length)}
    enc["dev"] = _encode(tok, data.dev.texts, data.dev.labels, names, cfg.max_length)
    if data.test is not None:
        enc["test"] = _encode(tok, data.test.texts, data.test.labels, names, cfg.max_length)
    seen = {t for ids in enc["train"].ids for t in ids}
    model_net = build_network(cfg, tok, len(names), seen, rt.device)
    if rt.is_main:
        log.info(
            "%s %s on %s: %d train / %d dev sentences, %d labels, vocabulary %d, %d parameters, world %d",
            "training" if schedule is None else "refitting (dev in train, dev's choices repeated)",
            model_net.config.cell, data.name, len(data.train), len(data.dev), len(names), tok.get_vocab_size(),
            count_parameters(model_net), rt.world,
        )  # fmt: skip
    net: nn.Module = DistributedDataParallel(model_net) if rt.distributed else model_net
    state, teacher = fit(
        cfg, net, enc["train"], enc["dev"], rt, checkpoint, fingerprint(cfg, data.sha256, data.name, **key), resume,
        schedule.teacher if schedule is not None else None,
    )  # fmt: skip
    mixture = fit_mixture(model_net, enc["dev"], rt, schedule.mixture if schedule is not None else None)
    chosen = Schedule(teacher, mixture)
    fitted = Fitted(model_net, tok, enc, state, chosen)
    if cfg.distill:  # the ensemble becomes the teacher; the artifact gets the student
        stage_key = fingerprint(cfg, data.sha256, data.name, stage="distill" + stage, **key)
        student, student_state, fitted.teacher_scores, chosen.student = distill(
            cfg, model_net, enc, rt, student_checkpoint, stage_key, resume, tok, seen,
            schedule.start if schedule is not None else None, schedule.student if schedule is not None else None,
        )  # fmt: skip
        chosen.start = fitted.teacher_scores["start"]
        chosen.student_mixture = fit_mixture(
            student, enc["dev"], rt, schedule.student_mixture if schedule is not None else None
        )
        fitted.net, fitted.teacher_history = student, state.history
        fitted.state = dataclasses.replace(student_state, elapsed_s=state.elapsed_s + student_state.elapsed_s)
    fold(fitted.net)
    return fitted


def followed(fitted: Fitted, schedule: Schedule) -> bool:
    """Whether a refit ran every epoch its schedule asked for (a --max-minutes budget may have cut it short)."""
    runs = [(fitted.teacher_history or fitted.state.history, schedule.teacher)]
    if schedule.student is not None:
        runs.append((fitted.state.history, schedule.student))
    return all(len(history) >= max(plan.epochs) and all(h["complete"] for h in history) for history, plan in runs)


def _report(
    first: Fitted, final: Fitted, data: SentimentData, rt: Runtime
) -> tuple[dict[str, Any], float, dict[str, bytes]]:
    """Calibrate on dev, score dev (and test), draw the plots. Dev scores and the temperature come from the
    `first` fit (chosen on dev, dev unseen); test scores from the `final` network, the one the artifact holds (the
    refit, when there was one)."""
    dev_logits = predict_logits(first.net, first.enc["dev"], rt.device)
    eval_split = "test" if "test" in final.enc else "dev"
    eval_logits = dev_logits if eval_split == "dev" else predict_logits(final.net, final.enc["test"], rt.device)
    temperature, calib, reliability_png = ev.calibration_report(
        dev_logits, first.enc["dev"].targets, eval_logits, final.enc[eval_split].targets
    )
    metrics: dict[str, Any] = {"calibration": {**calib, "split": eval_split}}
    for split in first.enc:
        if split == "train":
            continue
        logits = dev_logits if split == "dev" else eval_logits
        metrics[split] = ev.classification_metrics(
            torch.softmax(logits / temperature, -1), final.enc[split].targets, data.label_names
        )
    metrics["best_epoch"] = first.state.best_epoch
    metrics["epochs_run"] = first.state.epoch
    metrics["train_seconds"] = first.state.elapsed_s + (final.state.elapsed_s if final is not first else 0.0)
    if final is not first:
        first_scores: dict[str, Any] = {"train_sentences": len(first.enc["train"].ids)}
        if "test" in first.enc:
            logits = predict_logits(first.net, first.enc["test"], rt.device)
            first_scores["test_accuracy"] = (logits.argmax(-1) == first.enc["test"].targets).float().mean().item()
        metrics["refit"] = {
            "train_sentences": len(final.enc["train"].ids),
            "seconds": final.state.elapsed_s,
            "schedule": asdict(first.schedule),
            "first_fit": first_scores,
        }
    if first.teacher_scores is not None:
        metrics["teacher"] = first.teacher_scores
    files = {
        "metrics.json": (json.dumps(metrics, indent=2) + "\n").encode(),
        "learning_curves.png": ev.plot_learning_curves(first.state.history),
        "confusion_matrix.png": ev.plot_confusion(metrics[eval_split]["confusion_matrix"], data.label_names),
        "reliability.png": reliability_png,
    }
    return metrics, temperature, files


def _on_cpu(net: SentimentClassifier) -> SentimentClassifier:
    """A copy of the network on the CPU, in eval mode: what the artifact's weights build when they are loaded."""
    copy = SentimentClassifier(net.config)
    copy.load_state_dict({k: v.detach().cpu() for k, v in net.state_dict().items()})
    return copy.eval()


def train_sentiment(
    cfg: SentimentTrainConfig,
    data: SentimentData,
    out: str | Path,
    *,
    resume: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Train on `data` and write the artifact to `out` (rank 0 only). Returns the metrics. With `refit` and a dev
    split carved out of the training file, the artifact holds a second fit on train + dev that repeats what dev
    chose in the first (its scores on dev and the temperature stay the first fit's)."""
    rt = setup_runtime(device, cfg.threads, precision)
    out = Path(out)
    try:
        first = final = fit_recipe(cfg, data, rt, out, resume)
        if cfg.refit and data.dev_from_train:
            left = None if cfg.max_minutes is None else cfg.max_minutes - first.state.elapsed_s / 60
            if left is not None and left <= 0:
                log.warning("no refit on train + dev: the --max-minutes budget is spent")
            else:
                refit_cfg = dataclasses.replace(cfg, max_minutes=left)
                refit = fit_recipe(refit_cfg, data.dev_in_train(), rt, out, resume, first.schedule)
                if followed(refit, first.schedule):
                    final = refit
                else:
                    log.warning("the refit on train + dev ran out of --max-minutes: the artifact keeps the first fit")
        if not rt.is_main:
            return {}
        metrics, temperature, files = _report(first, final, data, rt)
        files.update(onnx_runtime.graph_files(_on_cpu(final.net)))  # the service loads it: no export there
        training: dict[str, Any] = {
            **asdict(cfg), "history": first.state.history, "world_size": rt.world, **rt.describe()
        }  # fmt: skip
        if first.teacher_scores is not None:
            training["teacher_history"] = first.teacher_history
        if final is not first:
            training["refit_history"] = final.state.history
        config = ArtifactConfig(
            task="sentiment",
            network=asdict(final.net.config),
            labels=data.label_names,
            tokenizer={
                "kind": cfg.tokenizer, "lowercase": cfg.lowercase, "vocab_size": final.tok.get_vocab_size(),
                "pieces": cfg.word_pieces,
            },
            calibration={"temperature": temperature},
            max_length=cfg.max_length,
            training=training,
            data=DataInfo(data.name, data.sha256),
            metrics=metrics,
        )  # fmt: skip
        first_checkpoint, *others = checkpoints(out)
        publish(out, first_checkpoint, config, final.net.state_dict(), final.tok, files)
        for path in others:
            shutil.rmtree(path, ignore_errors=True)
        return metrics
    finally:
        teardown_runtime(rt)
