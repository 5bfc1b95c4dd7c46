"""Fit the character-level generator and write its artifact (tokenizer, weights, metrics, loss curves, samples).

Run through the CLI: `python -m model train generator [--data tinyshakespeare | --train F.txt] [--preset …]`.

Two ways to cut the training stream into batches (`batching`):

    stateful (truncated BPTT)                       random windows
    stream: |--- row 0 ---|--- row 1 ---| …          B windows of seq_len at random offsets each step,
    batch b = columns [b*T, (b+1)*T) of B rows,      hidden state starts at zero in every window
    hidden state carried (detached) from b to b+1
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model import evaluate as ev
from model.artifacts import ArtifactConfig, DataInfo
from model.config import GeneratorTrainConfig
from model.data import TextCorpus
from model.networks import CharRNN, Hidden, count_parameters
from model.sampling import SamplingParams, generate
from model.tokenization import build_char_tokenizer
from model.train import (
    Budget,
    Plan,
    Runtime,
    TrainState,
    epoch_seed,
    fingerprint,
    keep_if_higher,
    lr_at,
    progress,
    publish,
    setup_runtime,
    teardown_runtime,
)
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


def random_batches(ids: torch.Tensor, batch: int, seq_len: int, steps: int, g: torch.Generator) -> Any:
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


class GeneratorTrainee:
    """The generator's part of the shared fit loop: truncated-BPTT (or random-window) epochs, validation loss
    over the whole validation split, lower is better."""

    def __init__(
        self, net: CharRNN, opt: torch.optim.Optimizer, cfg: GeneratorTrainConfig, train_ids: torch.Tensor,
        val_ids: torch.Tensor, rt: Runtime,
    ) -> None:  # fmt: skip
        self.net, self.opt, self.cfg, self.train_ids, self.val_ids, self.rt = net, opt, cfg, train_ids, val_ids, rt
        self.steps_per_epoch = len(stateful_batches(train_ids, cfg.batch_size, cfg.seq_len))

    def batches(self, epoch: int) -> Any:
        cfg = self.cfg
        if cfg.batching == "stateful":
            return stateful_batches(self.train_ids, cfg.batch_size, cfg.seq_len)
        g = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, 0))
        return random_batches(self.train_ids, cfg.batch_size, cfg.seq_len, self.steps_per_epoch, g)

    def train_epoch(self, state: TrainState, budget: Budget) -> dict[str, Any]:
        net, opt, cfg = self.net, self.opt, self.cfg
        net.train()
        torch.manual_seed(epoch_seed(cfg.seed, state.epoch, self.rt.rank))
        total_steps = self.steps_per_epoch * cfg.epochs
        hidden: Hidden | None = None
        loss_sum, seen, norms, start, done = 0.0, 0, [], time.monotonic(), 0
        desc = f"epoch {state.epoch + 1}/{cfg.epochs}"
        bar = progress(self.batches(state.epoch), desc, self.rt, total=self.steps_per_epoch)
        for x, y in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(state.step, total_steps, cfg.lr, cfg.warmup_fraction)
            logits, hidden = net(x, hidden if cfg.batching == "stateful" else None)
            hidden = detach(hidden)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            torch.autograd.backward(loss)
            clip = cfg.clip_norm if cfg.clip_norm > 0 else math.inf
            norms.append(float(nn.utils.clip_grad_norm_(net.parameters(), clip)))
            opt.step()
            state.step += 1
            done += 1
            loss_sum += loss.item() * y.numel()
            seen += y.numel()
            if state.step % 10 == 0:
                rate = seen / max(1e-9, time.monotonic() - start)
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", chars_s=f"{rate:.0f}", refresh=False)
            if budget.exhausted():
                break
        bar.close()
        norms_t = torch.tensor(norms or [0.0])
        return {
            "train_loss": loss_sum / max(seen, 1),
            "grad_norm_mean": norms_t.mean().item(),
            "grad_norm_max": norms_t.max().item(),
            "chars_per_s": seen / max(1e-9, time.monotonic() - start),
            "epoch_s": time.monotonic() - start,
            "complete": float(done >= self.steps_per_epoch),
        }

    def validate(self) -> dict[str, Any]:
        val_loss = evaluate_loss(self.net, self.val_ids)
        return {"val_loss": val_loss, "val_bpc": val_loss * NATS_TO_BITS}

    def keep_best(self, stats: dict[str, Any], state: TrainState, best: dict[str, torch.Tensor]) -> bool:
        return keep_if_higher(self.net, -stats["val_loss"], state, best)

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
    """Epochs with validation loss, early stopping on it (lower is better), best weights kept, checkpoints."""
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    trainee = GeneratorTrainee(net, opt, cfg, train_ids, val_ids, rt)
    plan = Plan(cfg.epochs, cfg.patience, cfg.max_minutes)
    return shared_fit(trainee, net, opt, plan, rt, checkpoint=checkpoint, fingerprint=fingerprint, resume=resume)


def sample_texts(
    net: CharRNN, tok: Any, prompts: tuple[str, ...] = ("ROMEO:", "First Citizen:\n", "")
) -> list[dict[str, str]]:
    params = SamplingParams(max_new_tokens=300, temperature=0.8, seed=1234)
    return [{"prompt": p, "temperature": "0.8", "text": generate(net, tok, p, params).text} for p in prompts]


def train_generator(
    cfg: GeneratorTrainConfig, corpus: TextCorpus, out: str | Path, *, resume: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Train on `corpus` and write the artifact to `out`. Returns the metrics."""
    rt = setup_runtime(device, cfg.threads)
    if rt.distributed:
        raise ValueError("the generator trains in one process; run it without torchrun")
    out = Path(out)
    checkpoint = out.parent / f"{out.name}.ckpt"
    try:
        torch.manual_seed(cfg.seed)
        tok = build_char_tokenizer(corpus.train)
        train_ids = torch.tensor(tok.encode(corpus.train).ids, dtype=torch.long)
        val_ids = torch.tensor(tok.encode(corpus.val).ids, dtype=torch.long)
        if len(train_ids) < 2 * cfg.seq_len * cfg.batch_size // 4 or len(val_ids) < 2:
            raise ValueError(
                f"{corpus.name}: {len(train_ids)} training characters are too few for batch_size {cfg.batch_size}"
                f" x seq_len {cfg.seq_len}; use a longer corpus or smaller --batch-size/--seq-len"
            )
        network_cfg = cfg.network(tok.get_vocab_size())
        net = CharRNN(network_cfg)
        log.info(
            "training %s on %s: %d train / %d val characters, vocabulary %d, %d parameters",
            network_cfg.cell, corpus.name, len(train_ids), len(val_ids), tok.get_vocab_size(), count_parameters(net),
        )  # fmt: skip
        key = fingerprint(cfg, corpus.sha256, corpus.name)
        state = fit(cfg, net, train_ids, val_ids, rt, checkpoint, key, resume)
        val_loss = evaluate_loss(net, val_ids)
        samples = sample_texts(net, tok)
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
            training={**asdict(cfg), "history": state.history},
            data=DataInfo(corpus.name, corpus.sha256),
            metrics=metrics,
        )
        publish(out, checkpoint, config, net.state_dict(), tok, files)
        return metrics
    finally:
        teardown_runtime(rt)
