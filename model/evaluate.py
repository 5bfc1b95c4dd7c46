"""Evaluation: accuracy, macro-F1, per-class precision/recall, confusion matrix, calibration (ECE), temperature
scaling, the PNG plots (learning curves, confusion matrix, reliability diagram), and the sequence-tagging metrics
(token/sentence accuracy, seen/unseen words, per-tag scores, seqeval-compatible BIO entity F1) with their plot.

Run through the CLI: `python -m model evaluate ARTIFACT [--data sst2 --split test | --test FILE] [--json]`.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Sequence
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


def png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
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
    return png(fig)


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
    return png(fig)


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
    return png(fig)


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


# --------------------------------------------------------------------------- sequence tagging


def bio_spans(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The (type, first, last) entity spans of a BIO/IOB2 sequence, `last` inclusive, as seqeval's default
    (conlleval-compatible) mode reads them: an `I-X` after `O` or after another type starts a span of its own;
    any tag that is neither `B-` nor `I-` counts as `O`."""
    spans: list[tuple[str, int, int]] = []
    prev, prev_type, begin = "O", "", 0
    for i, label in enumerate([*tags, "O"]):
        kind = label[0] if label[:2] in ("B-", "I-") else "O"
        type_ = (label[2:] or "_") if kind != "O" else ""  # seqeval names an untyped chunk "_"
        if prev != "O" and (kind != "I" or type_ != prev_type):
            spans.append((prev_type, begin, i - 1))
        if kind == "B" or (kind == "I" and (prev == "O" or type_ != prev_type)):
            begin = i
        prev, prev_type = kind, type_
    return spans


def is_bio(labels: Sequence[str]) -> bool:
    """Every label `O`, `B-X` or `I-X`, and at least one `B-`: a label set that entity-level scores apply to."""
    return all(x == "O" or x.startswith(("B-", "I-")) for x in labels) and any(x.startswith("B-") for x in labels)


def _prf(tp: int, predicted: int, actual: int) -> dict[str, float]:
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def entity_metrics(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Exact-span precision, recall and F1, micro-averaged over all spans and per entity type, as seqeval's
    default mode computes them (per-type rows for every type in gold or predictions)."""
    gold_spans = {(k, *span) for k, tags in enumerate(gold) for span in bio_spans(tags)}
    pred_spans = {(k, *span) for k, tags in enumerate(pred) for span in bio_spans(tags)}
    hits = gold_spans & pred_spans
    overall = _prf(len(hits), len(pred_spans), len(gold_spans))
    per_entity = {
        name: _prf(*(sum(s[1] == name for s in spans) for spans in (hits, pred_spans, gold_spans)))
        for name in sorted({s[1] for s in gold_spans | pred_spans})
    }
    return {
        "entity_precision": overall["precision"],
        "entity_recall": overall["recall"],
        "entity_f1": overall["f1"],
        "per_entity": per_entity,
    }


def _tag_confusion(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]
) -> list[list[int]]:
    index = {label: i for i, label in enumerate(labels)}
    confusion = [[0] * len(labels) for _ in labels]
    for k, (g_tags, p_tags) in enumerate(zip(gold, pred, strict=True)):
        if len(g_tags) != len(p_tags):
            raise ValueError(f"sentence {k}: {len(g_tags)} gold tags but {len(p_tags)} predicted; expected equal")
        for g, p in zip(g_tags, p_tags, strict=True):
            if g not in index or p not in index:
                raise ValueError(f"sentence {k}: tag {g if g not in index else p!r} is not in labels {list(labels)}")
            confusion[index[g]][index[p]] += 1
    return confusion


def _accuracy_where(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], keep: Sequence[Sequence[bool]]
) -> tuple[float | None, int]:
    """Token accuracy over the tokens where `keep` holds (None when there are none), and their number."""
    pairs = [
        (g, p) for gs, ps, ks in zip(gold, pred, keep, strict=True) for g, p, k in zip(gs, ps, ks, strict=True) if k
    ]
    return (sum(g == p for g, p in pairs) / len(pairs) if pairs else None), len(pairs)


def _check_shapes(
    gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], tokens: Sequence[Sequence[str]]
) -> None:
    if not len(gold) == len(pred) == len(tokens):
        raise ValueError(f"{len(gold)} gold, {len(pred)} predicted and {len(tokens)} token sequences; expected equal")
    for k, (words, tags) in enumerate(zip(tokens, gold, strict=True)):
        if len(words) != len(tags):
            raise ValueError(f"sentence {k}: {len(words)} tokens but {len(tags)} gold tags; expected equal")


def tagging_metrics(
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    tokens: Sequence[Sequence[str]],
    seen_words: Collection[str],
    labels: Sequence[str],
) -> dict[str, Any]:
    """Token and sentence accuracy; accuracy on tokens whose form was seen / unseen in training (None if there are
    none); per-tag precision/recall/F1/support; macro-F1 over the tags that occur in gold or predictions; the
    confusion matrix (rows = gold, columns = predicted, in `labels` order); and, when `labels` is a BIO set,
    seqeval's entity-level scores. Every gold and predicted tag must be in `labels`."""
    _check_shapes(gold, pred, tokens)
    confusion = _tag_confusion(gold, pred, labels)
    total = sum(map(sum, confusion))
    if not total:
        raise ValueError("no tokens to evaluate")
    unseen = [[w not in seen_words for w in words] for words in tokens]
    unseen_accuracy, unseen_tokens = _accuracy_where(gold, pred, unseen)
    seen_accuracy, _ = _accuracy_where(gold, pred, [[not u for u in flags] for flags in unseen])
    predicted = [sum(row[j] for row in confusion) for j in range(len(labels))]
    per_tag = {label: _prf(confusion[i][i], predicted[i], sum(confusion[i])) for i, label in enumerate(labels)}
    present = [per_tag[label]["f1"] for i, label in enumerate(labels) if predicted[i] or sum(confusion[i])]
    metrics: dict[str, Any] = {
        "accuracy": sum(confusion[i][i] for i in range(len(labels))) / total,
        "tokens": total,
        "sentences": len(gold),
        "sentence_accuracy": sum(list(g) == list(p) for g, p in zip(gold, pred, strict=True)) / len(gold),
        "seen_accuracy": seen_accuracy,
        "unseen_accuracy": unseen_accuracy,
        "unseen_tokens": unseen_tokens,
        "per_tag": per_tag,
        "macro_f1": sum(present) / len(present),
        "confusion": confusion,
    }
    if is_bio(labels):
        metrics.update(entity_metrics(gold, pred))
    return metrics


def plot_tag_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """The tag confusion matrix coloured by row share (rare tags show as clearly as frequent ones), with small
    counts and zeros left blank: legible for UPOS's 17 tags and for BIO label sets of a few dozen."""
    k = len(labels)
    shares = [[c / (sum(row) or 1) for c in row] for row in confusion]
    side = 2.0 + 0.42 * k
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the gold tag's tokens")
    ax.set_xticks(range(k), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(k), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    for i in range(k):
        for j in range(k):
            if confusion[i][j]:
                color = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(confusion[i][j]), ha="center", va="center", color=color, fontsize=5.5)
    ax.set_title("tag confusion (colour: share of the row)")
    return png(fig)
