"""The one fit loop every kind trains with: seeded epochs, the warm-up + cosine learning-rate schedule (following
steps, or time under a `--max-minutes` budget), autocast, backward, per-group gradient clipping and the optimizer
step, progress, early stopping with the best weights kept, and per-epoch checkpoints for `--resume`. A kind's
Trainee supplies only its batches, its loss on a batch and its validation (model/KIND/train.py); the device,
precision and DDP ranks it runs under are model/runtime.py's.

Run through the CLI: `python -m model train sentiment --preset quick`, or under
`torchrun --standalone --nproc_per_node 2 -m model train sentiment …` for data-parallel training.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from model.artifacts import ArtifactConfig, save_artifact
from model.checkpoints import TrainState, load_checkpoint, save_checkpoint
from model.runtime import Runtime, agreed, check_replicas

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the step


def optimizer_step(
    loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
    groups: Sequence[Iterable[torch.Tensor]], clip: float,
) -> list[float]:  # fmt: skip
    """Backward, clip, step: the gradients of `loss` (scaled by `scaler` under fp16 and unscaled before clipping),
    each group of parameters' gradient norm clipped to `clip` on its own, then the optimizer's step. Returns each
    group's norm before clipping; none for a step that the scaler skipped because an fp16 gradient overflowed (it
    lowers the scale and tries again on the next batch: the first few steps of an fp16 run do so)."""
    opt.zero_grad(set_to_none=True)
    torch.autograd.backward(scaler.scale(loss))
    scaler.unscale_(opt)
    norms = [float(nn.utils.clip_grad_norm_(params, clip)) for params in groups]
    scaler.step(opt)
    scaler.update()
    if scaler.is_enabled() and not all(math.isfinite(n) for n in norms):
        return []
    return norms


class Budget:
    """Wall-clock budget shared by all ranks (they must agree on when to stop, or DDP would deadlock)."""

    def __init__(self, minutes: float | None, already: float, rt: Runtime) -> None:
        self.seconds = None if minutes is None else minutes * 60
        self.deadline = None if self.seconds is None else time.monotonic() + self.seconds - already
        self.rt = rt
        self.calls = 0

    def used(self) -> float:
        """The fraction of the budget spent (0 without a budget): a schedule can follow time instead of steps."""
        if self.seconds is None or self.deadline is None:
            return 0.0
        return min(1.0, max(0.0, 1 - (self.deadline - time.monotonic()) / self.seconds))

    def exhausted(self) -> bool:
        if self.deadline is None:
            return False
        over = time.monotonic() > self.deadline
        if not self.rt.distributed:
            return over
        self.calls += 1
        if self.calls % 10:
            return False
        flag = torch.tensor([1.0 if over else 0.0])
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())


# --------------------------------------------------------------------------- schedule and batches


def lr_at(step: int, total: int, base: float, warmup_fraction: float) -> float:
    """Linear warm-up, then cosine decay to 5 % of the base rate."""
    warmup = max(1, int(total * warmup_fraction))
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def bucketed_batches(
    lengths: Sequence[int], batch_size: int, seed: int, epoch: int, rt: Runtime | None = None
) -> list[list[int]]:
    """Shuffled batches of similar-length items (little padding), the same on every rank for a given epoch;
    under DDP each rank takes every world-th batch of an equal share."""
    g = torch.Generator().manual_seed(seed * 10_007 + epoch)
    perm = torch.randperm(len(lengths), generator=g).tolist()
    chunk = batch_size * 50
    ordered: list[int] = []
    for start in range(0, len(perm), chunk):
        ordered.extend(sorted(perm[start : start + chunk], key=lambda i: lengths[i]))
    batches = [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]
    batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    if rt is not None and rt.distributed:
        usable = len(batches) - len(batches) % rt.world
        batches = batches[rt.rank : usable : rt.world]
    return batches


def publish(
    out: Path, checkpoint: Path, config: ArtifactConfig, state_dict: dict[str, torch.Tensor], tokenizer: Tokenizer,
    files: dict[str, bytes],
) -> None:  # fmt: skip
    """Write the artifact (atomically), then drop the run's checkpoint: a finished run is not resumable."""
    save_artifact(out, config, state_dict, tokenizer, files)
    shutil.rmtree(checkpoint, ignore_errors=True)
    log.info("wrote %s", out)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """Dropout and word-dropout randomness per (epoch, rank): a resumed epoch replays exactly."""
    return seed * 1_000_003 + epoch * 101 + rank


# --------------------------------------------------------------------------- the fit loop

T = TypeVar("T")


def progress(batches: Iterable[T], desc: str, rt: Runtime, total: int | None = None) -> tqdm[T]:
    """A training epoch's progress bar (rank 0 only), refreshed at most every two seconds."""
    return tqdm(batches, desc=desc, total=total, disable=not rt.is_main, leave=False, unit="batch", mininterval=2.0)


class Batches(Sized, Iterable[Any], Protocol):
    """An epoch's batches: iterable, and sized so the progress bar and the budget check know the epoch's length."""


@dataclass
class Step:
    """A trainee's loss on one batch and what the epoch's statistics count of it."""

    loss: torch.Tensor  # the mean over the batch's `count` items: what the epoch's train_loss averages
    count: int  # the items the loss is a mean over: characters, tokens or sentences
    scale: float = 1.0  # backward runs on loss * scale (a classifier's parts: the sum of their losses)
    correct: int | None = None  # items predicted right, for a train accuracy


class Trainee(Protocol):
    """What differs between the kinds inside `fit`: the network the forward passes run through (DDP-wrapped under
    torchrun), the unit its batches count (`chars`, `tokens`, `sentences`: the `<unit>_per_s` statistic), an
    epoch's batches, the loss on one batch (called under autocast), the groups of parameters clipped each on its
    own, the dev/validation score, the choice of what to keep as best, and the epoch's log line."""

    @property
    def net(self) -> nn.Module: ...

    @property
    def unit(self) -> str: ...

    def batches(self, epoch: int) -> Batches:
        """Epoch `epoch`'s batches, drawn after the loop has seeded the epoch's randomness."""
        ...

    def step(self, batch: Any) -> Step: ...

    def groups(self) -> list[Iterable[torch.Tensor]]: ...

    def validate(self) -> dict[str, Any]: ...

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        """Update `best` (and state.best_*) from this epoch's stats; True when anything improved."""
        ...

    def describe(self, stats: dict[str, Any], epochs: int) -> str: ...


def keep_if_higher(module: nn.Module, score: float, state: TrainState, best: dict[str, torch.Tensor]) -> bool:
    """The common selection rule: a new best when `score` beats every earlier epoch's (higher is better)."""
    if score <= state.best_metric:
        return False
    state.best_metric, state.best_epoch = score, state.epoch
    best.clear()
    best.update(snapshot(module))
    return True


def epochs_for(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """`epochs`, or more on small data: enough for `min_steps` optimizer steps (the schedule spans them all, and
    early stopping still ends them)."""
    return max(epochs, math.ceil(min_steps / max(steps_per_epoch, 1)))


class Recipe(Protocol):
    """The training settings every kind's config carries under the same names."""

    lr: float
    warmup_fraction: float
    clip_norm: float
    seed: int
    patience: int
    max_minutes: float | None


@dataclass
class Plan:
    """What `fit` runs: up to `epochs` epochs, stopping after `patience` without improvement or when the
    `max_minutes` budget is spent; a learning rate warmed up over the first `warmup_fraction` of `steps` optimizer
    steps, then decayed on a cosine to 5 %; each group's gradient norm clipped to `clip_norm` (0: none); each
    epoch's randomness seeded from `seed`."""

    epochs: int
    steps: int
    lr: float
    warmup_fraction: float
    clip_norm: float
    seed: int
    patience: int
    max_minutes: float | None

    @classmethod
    def of(cls, recipe: Recipe, epochs: int, steps: int) -> Plan:
        """`epochs` epochs with a schedule over `steps` steps, the rest from a kind's config."""
        r = recipe
        return cls(epochs, steps, r.lr, r.warmup_fraction, r.clip_norm, r.seed, r.patience, r.max_minutes)


@dataclass
class Loop:
    """What every epoch of one `fit` shares: the optimizer, fp16's loss scaler, the plan and the runtime."""

    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    plan: Plan
    rt: Runtime


def train_epoch(trainee: Trainee, state: TrainState, budget: Budget, loop: Loop) -> dict[str, Any]:
    """One pass over the trainee's batches for epoch `state.epoch`, or until the budget is spent: per batch the
    scheduled learning rate, the trainee's loss under autocast, then backward, clipping and the optimizer's step.
    The schedule follows steps or, under a time budget, time, whichever is further along, so a run that the
    budget ends still finishes its decay (the ranks' clocks differ a little: they agree on one rate, or the
    replicas would drift apart). Returns the epoch's statistics, with "complete" 0 when the budget cut it."""
    plan, rt, opt = loop.plan, loop.rt, loop.opt
    trainee.net.train()
    torch.manual_seed(epoch_seed(plan.seed, state.epoch, rt.rank))
    batches = trainee.batches(state.epoch)
    clip = plan.clip_norm if plan.clip_norm > 0 else math.inf
    loss_sum, count, correct, done, clipped = 0.0, 0, 0, 0, 0.0
    norms: list[float] = []
    start = time.monotonic()
    bar = progress(batches, f"epoch {state.epoch + 1}/{plan.epochs}", rt, total=len(batches))
    for batch in bar:
        at = state.step
        if budget.seconds is not None:
            at = agreed(max(at, int(plan.steps * budget.used())), rt)
        for group in opt.param_groups:
            group["lr"] = lr_at(at, plan.steps, plan.lr, plan.warmup_fraction)
        with rt.autocast():
            step = trainee.step(batch)
        loss = step.loss if step.scale == 1 else step.loss * step.scale
        groups = trainee.groups()
        group_norms = optimizer_step(loss, opt, loop.scaler, groups, clip)
        if group_norms:  # none for an fp16 step skipped on overflow
            norms.append(sum(group_norms) / len(group_norms))
            clipped += sum(n > clip for n in group_norms) / len(group_norms)
        state.step += 1
        done += 1
        loss_sum += step.loss.item() * step.count
        count += step.count
        correct += step.correct or 0
        if state.step % 10 == 0:
            rate = count * rt.world / max(1e-9, time.monotonic() - start)
            shown = {"loss": f"{loss_sum / count:.3f}", f"{trainee.unit}_s": f"{rate:.0f}"}
            if step.correct is not None:
                shown["acc"] = f"{correct / count:.3f}"
            bar.set_postfix(shown, refresh=False)
        if budget.exhausted():
            break
    bar.close()
    elapsed = time.monotonic() - start
    norms_t = torch.tensor(norms or [0.0])
    stats: dict[str, Any] = {"train_loss": loss_sum / max(count, 1)}
    if done and step.correct is not None:
        stats["train_accuracy"] = correct / max(count, 1)
    stats.update({
        "grad_norm_mean": norms_t.mean().item(),
        "grad_norm_max": norms_t.max().item(),
        "grad_norm_p99": norms_t.quantile(0.99).item(),
        "clipped_fraction": clipped / max(len(norms), 1),
        f"{trainee.unit}_per_s": count * rt.world / max(1e-9, elapsed),
        "epoch_s": elapsed,
        "complete": float(done >= len(batches)),
    })  # fmt: skip
    return stats


def fit(
    trainee: Trainee, module: nn.Module, opt: torch.optim.Optimizer, plan: Plan, rt: Runtime, *,
    checkpoint: Path | None, fingerprint: str, resume: bool, state: TrainState | None = None,
) -> TrainState:  # fmt: skip
    """The one epoch loop every trainer uses: resume from the checkpoint, train an epoch, validate, keep the best
    weights, stop early after `patience` epochs without improvement or when the budget is spent, checkpoint each
    epoch (rank 0). Leaves the best weights loaded in `module`; under DDP checks the replicas agree."""
    state = state or TrainState()
    state.fingerprint = fingerprint
    best = snapshot(module)
    if resume and checkpoint is not None and (checkpoint / "state.json").exists():
        state, best = load_checkpoint(checkpoint, module, opt, fingerprint)
        log.info("resumed from %s after epoch %d (step %d)", checkpoint, state.epoch, state.step)
    budget = Budget(plan.max_minutes, state.elapsed_s, rt)
    loop = Loop(opt, rt.grad_scaler(), plan, rt)
    while state.epoch < plan.epochs and state.bad_epochs < plan.patience:
        started = time.monotonic()
        stats = train_epoch(trainee, state, budget, loop)
        stats.update(trainee.validate())
        state.epoch += 1
        state.elapsed_s += time.monotonic() - started
        stats.update(epoch=state.epoch, step=state.step, lr=opt.param_groups[0]["lr"], elapsed_s=state.elapsed_s)
        state.history.append(stats)
        state.bad_epochs = 0 if trainee.keep_best(stats, state, best) else state.bad_epochs + 1
        if rt.is_main:
            log.info("epoch %d/%d  %s", state.epoch, plan.epochs, trainee.describe(stats, plan.epochs))
            if checkpoint is not None:
                save_checkpoint(checkpoint, module, best, opt, state)
        if not stats["complete"]:
            log.warning("stopping: the --max-minutes budget of %s min is spent", plan.max_minutes)
            break
    if state.bad_epochs >= plan.patience and rt.is_main:
        log.info("early stop: no improvement on dev for %d epochs", plan.patience)
    check_replicas(module, rt)
    module.load_state_dict(best)
    return state
