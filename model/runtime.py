"""Where a training run executes: the device (`--device cpu|cuda|auto`), the precision of its forward passes
(`--precision fp32|bf16|fp16`), and under torchrun the process group and its ranks, with the checks that the ranks
agree (one parameter digest, one learning rate). model/train.py's fit loop runs on it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

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


def agreed(value: int, rt: Runtime) -> int:
    """The largest of the ranks' `value`s (the value itself in one process)."""
    if not rt.distributed:
        return value
    t = torch.tensor([value], dtype=torch.long)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())
