"""Fit the character-level generator and write its artifact (tokenizer, weights, metrics, loss curves, samples).

Run through the CLI: `python -m model train generator [--data tinyshakespeare | --train F.txt] [--preset …]`.

Two ways to cut the training stream into batches (`batching`):

    stateful (truncated BPTT)                       random windows
    stream: |--- row 0 ---|--- row 1 ---| …          B windows of seq_len at random offsets each step,
    batch b = columns [b*T, (b+1)*T) of B rows,      hidden state starts at zero in every window
    hidden state carried (detached) from b to b+1

Under `torchrun --standalone --nproc_per_node W -m model train generator …` it trains data-parallel (PyTorch DDP,
gloo): the training stream is cut into W equal contiguous shares, rank r makes its B rows (or draws its windows)
from share r alone, so every rank takes the same number of steps; gradients are averaged, rank 0 validates and
alone writes checkpoints and the artifact. World size 1 trains on the whole stream, as without torchrun.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.checkpoints import TrainState, fingerprint
from model.generator.config import GeneratorTrainConfig
from model.generator.data import TextCorpus
from model.generator.network import CharRNN
from model.generator.sampling import SamplingParams, generate
from model.networks import Hidden, count_parameters
from model.runtime import Runtime, setup_runtime, teardown_runtime
from model.tokenization import build_char_tokenizer
from model.train import Batches, Plan, Step, epoch_seed, epochs_for, keep_if_higher, publish
from model.train import fit as shared_fit

log = logging.getLogger(__name__)
NATS_TO_BITS = 1 / math.log(2)


def detach(hidden: Hidden) -> Hidden:
    return tuple(h.detach() for h in hidden) if isinstance(hidden, tuple) else hidden.detach()  # type: ignore[return-value]


def stateful_batches(ids: torch.Tensor, batch: int, seq_len: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) pairs of shape (B, T): B contiguous rows of the stream, walked left to right."""
    per_row = (len(ids) - 1) // batch
    rows_x = ids[: per_row * batch].view(batch, per_row)  # (B, L)
    rows_y = ids[1 : per_row * batch + 1].view(batch, per_row)
    return [(rows_x[:, s : s + seq_len], rows_y[:, s : s + seq_len]) for s in range(0, per_row - 1, seq_len)]


def rank_share(ids: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank `rank`'s contiguous share of the stream: equal numbers of (character, next character) pairs, so every
    rank builds the same batches' shapes and takes the same number of steps (a rank that finished first would leave
    the others waiting in DDP's all-reduce). Neighbouring shares overlap by one character, one's last target being
    the next one's first input, so no pair is lost at a boundary; the last (fewer than `world`) pairs are dropped.
    World 1: the whole stream."""
    pairs = (len(ids) - 1) // world
    return ids[rank * pairs : rank * pairs + pairs + 1]


def random_batches(
    ids: torch.Tensor, batch: int, seq_len: int, steps: int, g: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - seq_len - 1, (batch,), generator=g)
        offsets = starts[:, None] + torch.arange(seq_len)[None, :]  # (B, T)
        yield ids[offsets], ids[offsets + 1]


@torch.inference_mode()
def evaluate_loss(net: CharRNN, ids: torch.Tensor, streams: int = 16, chunk: int = 512) -> float:
    """Mean negative log-likelihood (nats/char) over the whole of `ids`, read as `streams` contiguous rows with
    the hidden state carried across chunks; the few leftover characters at the end are scored as one row."""
    was_training = net.training
    net.eval()
    ids = ids.to(next(net.parameters()).device)
    total, count = 0.0, 0
    per_row = (len(ids) - 1) // streams
    parts = [(ids[: per_row * streams].view(streams, per_row), ids[1 : per_row * streams + 1].view(streams, per_row))]
    rest = len(ids) - 1 - per_row * streams
    if rest > 0:
        parts.append((ids[per_row * streams : -1].view(1, rest), ids[per_row * streams + 1 :].view(1, rest)))
    for x_all, y_all in parts:
        hidden = None
        for s in range(0, x_all.shape[1], chunk):
            logits, hidden = net(x_all[:, s : s + chunk], hidden)
            y = y_all[:, s : s + chunk]
            total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum").item()
            count += y.numel()
    net.train(was_training)
    return total / max(count, 1)


def unwrap(net: nn.Module) -> CharRNN:
    module = net.module if isinstance(net, DistributedDataParallel) else net
    assert isinstance(module, CharRNN)
    return module


def leave_together(rt: Runtime) -> None:
    """Under torchrun, wait for every rank (rank 0 once it has written the artifact) and for gloo to let go of that
    last collective. A rank that went from the replica check straight to exit could abort ("terminate called
    without an active exception"): DDP keeps the process group alive past destroy_process_group, and a gloo worker
    thread still releasing a collective whose tensors Python made needs the GIL, which a finalizing interpreter
    answers by ending the thread. The ranks' last collective is then this one, its tensor held here until gloo's
    reference is gone."""
    if not rt.distributed:
        return
    done = torch.zeros(1)
    dist.all_reduce(done)
    deadline = time.monotonic() + 5.0
    # more than our one reference: gloo's worker still holds it (Tensor._use_count is in no stub)
    while done._use_count() > 1 and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.001)


def planned_epochs(cfg: GeneratorTrainConfig, steps_per_epoch: int) -> int:
    """`epochs`, or more on a short text: enough for `min_steps` optimizer steps (the schedule spans them all)."""
    return epochs_for(cfg.epochs, cfg.min_steps, steps_per_epoch)


@dataclass
class RandomWindows:
    """An epoch of `steps` batches of random windows, drawn as they are needed from `g`."""

    ids: torch.Tensor
    batch: int
    seq_len: int
    steps: int
    g: torch.Generator

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return random_batches(self.ids, self.batch, self.seq_len, self.steps, self.g)


@dataclass
class GeneratorTrainee:
    """The generator's part of the shared fit loop: truncated-BPTT (or random-window) batches over this rank's
    share of the stream, next-character cross-entropy, validation loss over the whole validation split, lower is
    better."""

    net: nn.Module  # DDP-wrapped under torchrun
    cfg: GeneratorTrainConfig
    train_ids: torch.Tensor  # the whole stream; __post_init__ keeps this rank's share
    val_ids: torch.Tensor
    rt: Runtime
    module: CharRNN = field(init=False)
    steps_per_epoch: int = field(init=False)
    epochs: int = field(init=False)
    hidden: Hidden | None = field(init=False, default=None)  # carried across a stateful epoch's batches
    unit = "chars"

    def __post_init__(self) -> None:
        self.module = unwrap(self.net)
        self.train_ids = rank_share(self.train_ids, self.rt.rank, self.rt.world)
        self.steps_per_epoch = len(stateful_batches(self.train_ids, self.cfg.batch_size, self.cfg.seq_len))
        self.epochs = planned_epochs(self.cfg, self.steps_per_epoch)

    def batches(self, epoch: int) -> Batches:
        cfg = self.cfg
        self.hidden = None
        if cfg.batching == "stateful":
            return stateful_batches(self.train_ids, cfg.batch_size, cfg.seq_len)
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, self.rt.rank))
        return RandomWindows(self.train_ids, cfg.batch_size, cfg.seq_len, self.steps_per_epoch, g)

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Step:
        x, y = (t.to(self.rt.device) for t in batch)
        logits, hidden = self.net(x, self.hidden)
        if self.cfg.batching == "stateful":
            self.hidden = detach(hidden)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        return Step(loss, y.numel())

    def groups(self) -> list[Iterable[torch.Tensor]]:
        return [self.net.parameters()]

    def validate(self) -> dict[str, Any]:
        """Rank 0 scores, the others take its numbers: every rank then keeps the same best epoch and stops early
        at the same one (replicas that disagreed would deadlock DDP), even across machines whose arithmetic
        differs in the last bit."""
        stats: dict[str, Any] = {}
        if self.rt.is_main:
            val_loss = evaluate_loss(self.module, self.val_ids)
            stats = {"val_loss": val_loss, "val_bpc": val_loss * NATS_TO_BITS}
        if self.rt.distributed:
            payload: list[Any] = [stats]
            dist.broadcast_object_list(payload, src=0)
            stats = payload[0]
        return stats

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        return keep_if_higher(self.module, -stats["val_loss"], state, best)

    def describe(self, stats: dict[str, Any], epochs: int) -> str:
        return (
            f"train loss {stats['train_loss']:.4f}  val loss {stats['val_loss']:.4f} nats/char"
            f" ({stats['val_bpc']:.3f} bits)  grad norm mean {stats['grad_norm_mean']:.2f}"
            f"  {stats['chars_per_s']:.0f} chars/s  {stats['epoch_s']:.1f}s"
        )


def fit(
    cfg: GeneratorTrainConfig, net: CharRNN, train_ids: torch.Tensor, val_ids: torch.Tensor, rt: Runtime,
    checkpoint: Path | None, fingerprint: str, resume: bool,
) -> TrainState:  # fmt: skip
    """Epochs with validation loss, early stopping on it (lower is better), best weights kept (and left loaded),
    checkpoints. Under torchrun the steps run through DistributedDataParallel (averaged gradients); `net` itself is
    what is checkpointed, kept as best and compared across the replicas."""
    replicated: nn.Module = DistributedDataParallel(net) if rt.distributed else net
    opt = torch.optim.AdamW(replicated.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainee = GeneratorTrainee(replicated, cfg, train_ids, val_ids, rt)
    plan = Plan.of(cfg, trainee.epochs, trainee.steps_per_epoch * trainee.epochs)
    return shared_fit(trainee, net, opt, plan, rt, checkpoint=checkpoint, fingerprint=fingerprint, resume=resume)


def sample_texts(
    net: CharRNN, tok: Any, prompts: tuple[str, ...] = ("ROMEO:", "First Citizen:\n", "")
) -> list[dict[str, str]]:
    params = SamplingParams(max_new_tokens=300, temperature=0.8, seed=1234)
    return [{"prompt": p, "temperature": "0.8", "text": generate(net, tok, p, params).text} for p in prompts]


def train_generator(
    cfg: GeneratorTrainConfig, corpus: TextCorpus, out: str | Path, *, resume: bool = False, device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:  # fmt: skip
    """Train on `corpus` and write the artifact to `out` (rank 0 only). Returns the metrics ({} on other ranks)."""
    rt = setup_runtime(device, cfg.threads, precision)
    out = Path(out)
    checkpoint = out.parent / f"{out.name}.ckpt"
    try:
        torch.manual_seed(cfg.seed)
        tok = build_char_tokenizer(corpus.train)  # sorted characters: the same ids on every rank
        train_ids = torch.tensor(tok.encode(corpus.train).ids, dtype=torch.long)
        val_ids = torch.tensor(tok.encode(corpus.val).ids, dtype=torch.long)
        share = len(rank_share(train_ids, rt.rank, rt.world))
        if share < 2 * cfg.seq_len * cfg.batch_size // 4 or len(val_ids) < 2:
            ranks = f" on each of {rt.world} ranks" if rt.distributed else ""
            raise ValueError(
                f"{corpus.name}: {len(train_ids)} training characters are too few for batch_size {cfg.batch_size}"
                f" x seq_len {cfg.seq_len}{ranks}; use a longer corpus or smaller --batch-size/--seq-len"
            )
        network_cfg = cfg.network(tok.get_vocab_size())
        net = CharRNN(network_cfg).to(rt.device)
        if rt.is_main:
            log.info(
                "training %s on %s: %d train / %d val characters, vocabulary %d, %d parameters, world %d",
                network_cfg.cell, corpus.name, len(train_ids), len(val_ids), tok.get_vocab_size(),
                count_parameters(net), rt.world,
            )  # fmt: skip
        key = fingerprint(cfg, corpus.sha256, corpus.name, world=rt.world, precision=rt.precision)
        state = fit(cfg, net, train_ids, val_ids, rt, checkpoint, key, resume)
        if not rt.is_main:
            leave_together(rt)
            return {}
        val_loss = evaluate_loss(net, val_ids)
        samples = sample_texts(net.cpu(), tok)  # the sampler steps in NumPy
        metrics: dict[str, Any] = {
            "val_loss": val_loss,
            "val_bpc": val_loss * NATS_TO_BITS,
            "best_epoch": state.best_epoch,
            "epochs_run": state.epoch,
            "train_seconds": state.elapsed_s,
            "samples": samples,
        }
        files = {
            "metrics.json": (json.dumps(metrics, indent=2, ensure_ascii=False) + "\n").encode(),
            "learning_curves.png": ev.plot_learning_curves(state.history, metric="val_loss", dev_key="val_loss"),
            "samples.txt": "\n\n".join(
                f"--- prompt {s['prompt']!r}\n{s['prompt']}{s['text']}" for s in samples
            ).encode(),
        }
        config = ArtifactConfig(
            task="generation",
            network=asdict(network_cfg),
            tokenizer={"kind": "char", "vocab_size": tok.get_vocab_size()},
            training={**asdict(cfg), "history": state.history, "world_size": rt.world, **rt.describe()},
            data=DataInfo(corpus.name, corpus.sha256),
            metrics=metrics,
        )
        publish(out, checkpoint, config, net.state_dict(), tok, files)
        leave_together(rt)
        return metrics
    finally:
        teardown_runtime(rt)
