"""Fit the sentiment classifier and write its artifact (tokenizer, weights, calibration, metrics, plots).

Run through the CLI: `python -m model train sentiment [--data sst2 | --train F …] [--preset quick|default]`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.checkpoints import TrainState, fingerprint
from model.networks import count_parameters
from model.runtime import Runtime, setup_runtime, teardown_runtime
from model.sentiment import onnx_runtime
from model.sentiment.augment import augmented
from model.sentiment.config import SentimentTrainConfig
from model.sentiment.data import SentimentData
from model.sentiment.network import SentimentClassifier
from model.sentiment.trainee import (
    Encoded,
    Fixed,
    _encode,
    build_network,
    combined,
    fit,
    fit_mixture,
    fold,
    predict_logits,
)
from model.tokenization import build_word_tokenizer
from model.train import publish

log = logging.getLogger(__name__)


@dataclass
class Distilled:
    """The student `distill` fitted: its network, its TrainState, the teacher's own scores (its dev and test
    accuracy, each member's, the member the student started from) and the student's schedule, for a refit."""

    net: SentimentClassifier
    state: TrainState
    teacher_scores: dict[str, Any]
    schedule: Fixed


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
) -> Distilled:
    """Fit one encoder to the trained ensemble (`teacher`): started from the teacher's member with the best dev
    accuracy (or member `start`), trained on the teacher's probabilities (at `distill_temperature`) over the
    transfer set (the training texts and `augment` variants of each: model/sentiment/augment.py), for
    `distill_epochs` at `distill_lr`, the best dev epoch kept, checkpointed and resumable like the teacher. The
    teacher's bag joins the student as it is; a refit repeats the first fit's epochs (`fixed`)."""
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
    return Distilled(student, state, scores, schedule)


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
        student = distill(
            cfg, model_net, enc, rt, student_checkpoint, stage_key, resume, tok, seen,
            schedule.start if schedule is not None else None, schedule.student if schedule is not None else None,
        )  # fmt: skip
        fitted.teacher_scores, chosen.student = student.teacher_scores, student.schedule
        chosen.start = student.teacher_scores["start"]
        chosen.student_mixture = fit_mixture(
            student.net, enc["dev"], rt, schedule.student_mixture if schedule is not None else None
        )
        fitted.net, fitted.teacher_history = student.net, state.history
        fitted.state = dataclasses.replace(student.state, elapsed_s=state.elapsed_s + student.state.elapsed_s)
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
