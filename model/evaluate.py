"""Evaluation: accuracy, macro-F1, per-class precision/recall, confusion matrix, calibration (ECE), temperature
scaling, and the PNG plots (learning curves, confusion matrix, reliability diagram).

Run through the CLI: `python -m model evaluate ARTIFACT [--data sst2 --split test | --test FILE] [--json]`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: plots are files, never windows
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """ECE with equal-width confidence bins: sum over bins of |accuracy - confidence| weighted by bin size."""
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean().item() * abs(correct[in_bin].mean().item() - conf[in_bin].mean().item())
    return ece


def reliability(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> list[dict[str, float]]:
    conf, pred = probs.max(dim=1)
    correct = (pred == targets).float()
    edges = torch.linspace(0, 1, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            rows.append(
                {
                    "lo": lo.item(),
                    "hi": hi.item(),
                    "count": int(in_bin.sum()),
                    "accuracy": correct[in_bin].mean().item(),
                    "confidence": conf[in_bin].mean().item(),
                }
            )
    return rows


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Temperature scaling (Guo et al. 2017): the T > 0 minimising dev NLL of softmax(logits / T)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    logits = logits.detach().float().clone()  # may come from inference mode

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        torch.autograd.backward(loss)
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    t = float(log_t.exp().item())
    return t if math.isfinite(t) and 0.01 < t < 100 else 1.0


def fit_mixture(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Weights w_k > 0 for parts' logits (K, N, C) minimising the dev NLL of softmax(sum_k w_k log_softmax(logits_k)):
    how much each part of a classifier counts (a product of experts; the weights' scale also sets a temperature)."""
    log_probs = torch.log_softmax(logits.detach().float().clone(), dim=-1)
    log_w = torch.zeros(len(log_probs), requires_grad=True)
    opt = torch.optim.LBFGS([log_w], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy((log_w.exp()[:, None, None] * log_probs).sum(0), targets)
        torch.autograd.backward(loss)
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    weights = log_w.detach().exp()
    if not bool(torch.isfinite(weights).all()):
        return torch.full((len(log_probs),), 1.0 / len(log_probs))
    return weights


def classification_metrics(probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix (rows = true), ECE, NLL."""
    k = len(labels)
    pred = probs.argmax(dim=1)
    confusion = torch.zeros(k, k, dtype=torch.long)
    confusion.index_put_((targets, pred), torch.ones_like(targets), accumulate=True)
    per_class: dict[str, dict[str, float]] = {}
    f1s = []
    for i, name in enumerate(labels):
        tp = confusion[i, i].item()
        predicted = confusion[:, i].sum().item()
        actual = confusion[i, :].sum().item()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": actual}
        f1s.append(f1)
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), targets).item()
    return {
        "n": len(targets),
        "accuracy": (pred == targets).float().mean().item(),
        "macro_f1": sum(f1s) / k,
        "per_class": per_class,
        "confusion_matrix": confusion.tolist(),
        "ece": expected_calibration_error(probs, targets),
        "nll": nll,
    }


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_learning_curves(
    history: Sequence[dict[str, Any]], metric: str = "dev_accuracy", dev_key: str = "dev_loss"
) -> bytes:
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax1.plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if all(dev_key in h for h in history):
        ax1.plot(epochs, [h[dev_key] for h in history], marker="o", label=dev_key.split("_")[0])
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(epochs, [h[metric] for h in history], marker="o", color="tab:green")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel(metric.replace("_", " "))
    ax2.grid(alpha=0.3)
    fig.suptitle("learning curves")
    return _png(fig)


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    k = len(labels)
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * k, 1.0 + 0.6 * k))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in confusion) or 1
    for i in range(k):
        for j in range(k):
            color = "white" if confusion[i][j] > peak / 2 else "black"
            ax.text(j, i, str(confusion[i][j]), ha="center", va="center", color=color)
    ax.set_title("confusion matrix")
    return _png(fig)


def plot_reliability(before: list[dict[str, float]], after: list[dict[str, float]]) -> bytes:
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for rows, name in ((before, "uncalibrated"), (after, "temperature-scaled")):
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("reliability diagram")
    return _png(fig)


def calibration_report(
    dev_logits: torch.Tensor, dev_targets: torch.Tensor, eval_logits: torch.Tensor, eval_targets: torch.Tensor
) -> tuple[float, dict[str, float], bytes]:
    """Fit T on dev; report ECE on the evaluation split before and after; the reliability PNG."""
    temperature = fit_temperature(dev_logits, dev_targets)
    raw = torch.softmax(eval_logits, dim=-1)
    scaled = torch.softmax(eval_logits / temperature, dim=-1)
    summary = {
        "temperature": temperature,
        "ece_before": expected_calibration_error(raw, eval_targets),
        "ece_after": expected_calibration_error(scaled, eval_targets),
    }
    png = plot_reliability(reliability(raw, eval_targets), reliability(scaled, eval_targets))
    return temperature, summary, png
