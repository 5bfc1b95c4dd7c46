"""The classifier's part of the shared fit loop (model/train.py): its encoded data, its network built for
training, the Trainee that runs an epoch over every part and keeps each part's best epoch, and the mixture of the
parts fitted on dev. model/sentiment/train.py runs the recipe on top of it."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model import evaluate as ev
from model.checkpoints import TrainState
from model.runtime import Runtime
from model.sentiment.config import SentimentTrainConfig
from model.sentiment.network import SentimentClassifier
from model.sentiment.ngrams import BAG_NGRAMS, EMBEDDING_NGRAMS, CharNGramEmbedding
from model.sentiment.predictor import pad
from model.tokenization import PAD_ID, UNK_ID, encode_batch
from model.train import Batches, Plan, Step, bucketed_batches, epochs_for
from model.train import fit as shared_fit


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


@dataclass
class SentimentTrainee:
    """The classifier's part of the shared fit loop. The parts (the members and the bag) learn on their own
    losses, so each keeps the epoch where its own dev accuracy was best, and training stops once no part has
    improved for `patience` epochs; under `fixed` (a refit), each keeps the epoch given there."""

    net: nn.Module  # DDP-wrapped under torchrun
    cfg: SentimentTrainConfig
    data: Encoded
    dev: Encoded
    rt: Runtime
    fixed: Fixed | None = None
    module: SentimentClassifier = field(init=False)
    unit = "sentences"

    def __post_init__(self) -> None:
        self.module = unwrap(self.net)

    @property
    def planned(self) -> int:
        """The epochs the learning-rate schedule spans."""
        return self.fixed.planned if self.fixed is not None else planned_epochs(self.cfg, len(self.data.ids), self.rt)

    @property
    def total_steps(self) -> int:
        return steps_per_epoch(self.cfg, len(self.data.ids), self.rt) * self.planned

    def batches(self, epoch: int) -> Batches:
        return bucketed_batches([len(s) for s in self.data.ids], self.cfg.batch_size, self.cfg.seed, epoch, self.rt)

    def step(self, idx: list[int]) -> Step:
        cfg, rt, data = self.cfg, self.rt, self.data
        ids, lengths, targets = data.batch(idx)
        if cfg.word_dropout > 0:
            drop = (torch.rand(ids.shape) < cfg.word_dropout) & (ids != PAD_ID)
            ids = ids.masked_fill(drop, UNK_ID)
        ids, targets = ids.to(rt.device), targets.to(rt.device)
        part_logits = self.net(ids, lengths, per_member=True)  # (K, B, C): each part fits its own loss
        parts = part_logits.shape[0]
        flat = part_logits.float().reshape(-1, part_logits.shape[-1])
        if data.soft is None:
            loss = F.cross_entropy(flat, targets.repeat(parts), label_smoothing=cfg.label_smoothing)
        else:  # distillation: KL to the teacher's tempered probabilities, scaled by T^2 (Hinton et al., 2015)
            t = cfg.distill_temperature
            soft = data.soft[idx].to(rt.device).repeat(parts, 1)
            loss = F.kl_div(F.log_softmax(flat / t, -1), soft, reduction="batchmean") * t * t
        correct = int((part_logits.mean(0).argmax(1) == targets).sum().item())
        # backward on the sum of the part losses: each part's gradient as if alone (each clipped on its own)
        return Step(loss, len(idx), scale=parts, correct=correct)

    def groups(self) -> list[Iterable[torch.Tensor]]:
        """Each trained part's parameters (not a frozen bag's): each part's gradient norm is clipped on its own."""
        return [m.parameters() for m in self.module.parts if any(p.requires_grad for p in m.parameters())]

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
    trainee = SentimentTrainee(net, cfg, train, dev, rt, fixed)
    plan = Plan.of(cfg, trainee.planned if fixed is None else max(fixed.epochs), trainee.total_steps)
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
