"""Training loops: AdamW, warm-up + cosine schedule, gradient clipping, early stopping with best weights,
per-epoch checkpoints with `--resume`, a `--max-minutes` budget, seeded runs, PyTorch DDP (torchrun), and the
device (`--device cpu|cuda|auto`) and mixed precision (`--precision fp32|bf16|fp16`) every trainer runs under.

Run through the CLI: `python -m model train sentiment --preset quick`, or under
`torchrun --standalone --nproc_per_node 2 -m model train sentiment …` for data-parallel training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import safetensors.torch
import torch
import torch.distributed as dist
from tokenizers import Tokenizer
from torch import nn
from tqdm.auto import tqdm

from model.artifacts import ArtifactConfig, save_artifact

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- distributed


DEVICES = ("cpu", "cuda", "auto")
# the autocast dtype of each --precision (fp32: none); the weights, the optimizer state and the artifact stay fp32
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Runtime:
    """Where this process trains: device, rank, world size (1 without torchrun) and the precision of its forward
    passes (fp32, or bf16/fp16 autocast over fp32 weights)."""

    device: torch.device
    rank: int = 0
    world: int = 1
    precision: str = "fp32"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def describe(self) -> dict[str, str]:
        """What an artifact's `training` records of where it was trained: the precision and the device type."""
        return {"precision": self.precision, "device": self.device.type}

    def autocast(self) -> AbstractContextManager[Any]:
        """The context for a training forward pass and its loss: autocast to bf16/fp16, nothing under fp32."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """fp16's loss scaling (its gradients would underflow unscaled); a pass-through under bf16 and fp32."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")


def check_device(device: str, precision: str) -> str:
    """The device to train on for `--device` (auto: cuda when torch sees one) and `--precision`; a ValueError,
    which the CLI prints as one line, for a combination this machine cannot run."""
    if precision not in PRECISIONS:
        raise ValueError(f"--precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":", 1)[0]
    if kind not in DEVICES[:2]:
        raise ValueError(f"--device {device!r}: choose one of {', '.join(DEVICES)}")
    if kind == "cuda" and not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ValueError(f"--device cuda: no CUDA device here (torch {torch.__version__}, {build}); use --device cpu")
    if precision == "fp16" and kind != "cuda":
        raise ValueError("--precision fp16 needs CUDA (--device cuda); on the CPU use --precision bf16 or fp32")
    if precision == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError("--precision bf16: this GPU has no bfloat16; use --precision fp16 or fp32")
    return device


def setup_runtime(device: str = "cpu", threads: int = 0, precision: str = "fp32") -> Runtime:
    """Check the device and precision, and under torchrun (WORLD_SIZE > 1) join the process group: nccl on GPU,
    gloo on CPU."""
    device = check_device(device, precision)
    if threads > 0:
        torch.set_num_threads(threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend)
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            device = f"cuda:{local}"
    return Runtime(torch.device(device), rank, world, precision)


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


def teardown_runtime(rt: Runtime) -> None:
    if rt.distributed and dist.is_initialized():
        dist.destroy_process_group()


def parameter_digest(module: nn.Module) -> str:
    """A sha256 over all parameters: equal digests mean bit-identical replicas."""
    digest = hashlib.sha256()
    for name, p in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_replicas(module: nn.Module, rt: Runtime) -> str:
    """Log this rank's parameter digest and, under DDP, fail loudly if the replicas diverged."""
    mine = parameter_digest(module)
    log.info("rank %d/%d parameter digest %s", rt.rank, rt.world, mine)
    if rt.distributed:
        digests: list[Any] = [None] * rt.world
        dist.all_gather_object(digests, mine)
        if len(set(digests)) != 1:
            raise RuntimeError(f"DDP replicas diverged: parameter digests {digests}")
        if rt.is_main:
            log.info("all %d replicas hold identical parameters", rt.world)
    return mine


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


# --------------------------------------------------------------------------- checkpoints


@dataclass
class TrainState:
    """Everything a resumed run needs beyond the tensors: where it was and what it saw."""

    epoch: int = 0  # epochs finished
    step: int = 0
    elapsed_s: float = 0.0
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    part_best: list[float] = field(default_factory=list)  # a classifier's parts stop early each on its own
    part_epoch: list[int] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    fingerprint: str = ""


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": sd["param_groups"], "state": {}}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars["state"].setdefault(str(pid), {})[key] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, extra in scalars["state"].items():
        state.setdefault(int(pid), {}).update(extra)
    return {"state": state, "param_groups": scalars["param_groups"]}


def save_checkpoint(
    path: Path, model: nn.Module, best: dict[str, torch.Tensor], opt: torch.optim.Optimizer, state: TrainState
) -> None:
    """Tensors in safetensors, the rest in JSON; written to a temporary directory and renamed into place."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v.detach().cpu().contiguous() for k, v in best.items()})
    opt_tensors, opt_scalars = _flatten_optimizer(opt)
    tensors.update(opt_tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        safetensors.torch.save_file(tensors, str(tmp / "state.safetensors"))
        meta = {"train_state": asdict(state), "optimizer": opt_scalars}
        (tmp / "state.json").write_text(json.dumps(meta), encoding="utf-8")
        old = path.parent / f".{path.name}.old"
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, fingerprint: str
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    tensors = safetensors.torch.load_file(str(path / "state.safetensors"))
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    state = TrainState(**meta["train_state"])
    if state.fingerprint != fingerprint:
        raise ValueError(
            f"checkpoint {path} was made with other settings or data; delete it or drop --resume to start afresh"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    opt.load_state_dict(_unflatten_optimizer(tensors, meta["optimizer"]))
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return state, best


def fingerprint(cfg: Any, data_sha256: dict[str, str], data_name: str, **extra: Any) -> str:
    """What a checkpoint must match to be resumed: the settings (bar run-time ones), the data and `extra`."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("max_minutes", "threads", "preset")}
    blob = json.dumps({"cfg": settings, "data": data_sha256, "name": data_name, **extra}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


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


class Trainee(Protocol):
    """What differs between the tasks inside `fit`: an epoch of optimizer steps, the dev/validation score, the
    choice of what to keep as best, and the epoch's log line."""

    def train_epoch(self, state: TrainState, budget: Budget) -> dict[str, Any]:
        """One pass over the training data (or until the budget is spent), with "complete" in the stats."""
        ...

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


@dataclass
class Plan:
    """How long `fit` may run: epochs, patience (epochs without improvement) and the wall-clock budget."""

    epochs: int
    patience: int
    max_minutes: float | None


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
    while state.epoch < plan.epochs and state.bad_epochs < plan.patience:
        started = time.monotonic()
        stats = trainee.train_epoch(state, budget)
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
