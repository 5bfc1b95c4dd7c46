"""Checkpoints a run can resume from (`--resume`): the weights, the best weights so far and the optimizer state
in safetensors, the loop's TrainState in JSON, written atomically each epoch, and the fingerprint of the settings
and data a checkpoint must match to be resumed."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import nn


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
