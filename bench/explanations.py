"""Word explanations for the classifier: leave-one-out occlusion (what the service uses) against integrated
gradients over the word embeddings, compared on SST-2 dev sentences for faithfulness and cost.

Faithfulness is the deletion AOPC: remove a sentence's k most important words (k = 1..3) by each method and
average the drop in the predicted label's probability; a larger drop means the method found the words the
model really relies on. Cost is the median wall time of one explanation.

    python bench/explanations.py [--artifact artifacts/sentiment] [--sentences 200] [--steps 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import cast

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.readme import save_json, table, update_section  # noqa: E402
from model.sentiment.data import load_sst2  # noqa: E402
from model.sentiment.network import Encoder  # noqa: E402
from model.sentiment.predictor import SentimentModel, load_sentiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def occlusion(model: SentimentModel, words: list[str], label: int) -> list[float]:
    variants = [" ".join(words)] + [" ".join(words[:i] + words[i + 1 :]) or " " for i in range(len(words))]
    with torch.inference_mode():
        probs = model.predict_proba(variants)[:, label]
    return [float(probs[0] - p) for p in probs[1:]]


def integrated_gradients(model: SentimentModel, words: list[str], label: int, steps: int) -> list[float]:
    """IG from an all-[PAD]-embedding baseline (zeros), summed over each word's tokens and every member."""
    enc = model.tokenizer.encode(" ".join(words), add_special_tokens=False)
    ids = torch.tensor([enc.ids or [1]])
    lengths = torch.tensor([ids.shape[1]])
    word_of = [w if w is not None else 0 for w in enc.word_ids] or [0]
    alphas = torch.linspace(1 / steps, 1, steps)
    net = model.network
    members = [cast(Encoder, m) for m in net.members]
    total = torch.zeros(ids.shape[1])
    embedded = [m.embedding(ids).detach() for m in members]  # (1, T, E) each
    for alpha in alphas:
        scaled = [(e * alpha).requires_grad_(True) for e in embedded]
        handles = [
            m.embedding.register_forward_hook(lambda _m, _i, _o, s=s: s) for m, s in zip(members, scaled, strict=True)
        ]
        try:
            log_probs = net(ids, lengths)  # the ensemble's log-probabilities
            prob = torch.softmax(log_probs / model.temperature, -1)[0, label]  # the calibrated probability
            grads = torch.autograd.grad(prob, scaled)
        finally:
            for h in handles:
                h.remove()
        for e, g in zip(embedded, grads, strict=True):
            total += (e * g).sum(-1)[0] / steps  # (T,)
    scores = [0.0] * len(words)
    for t, w in enumerate(word_of):
        if w < len(scores):
            scores[w] += float(total[t])
    return scores


def deletion_drop(model: SentimentModel, words: list[str], label: int, scores: list[float], k: int) -> float:
    order = sorted(range(len(words)), key=lambda i: -scores[i])[:k]
    kept = [w for i, w in enumerate(words) if i not in set(order)]
    with torch.inference_mode():
        probs = model.predict_proba([" ".join(words), " ".join(kept) or " "])[:, label]
    return float(probs[0] - probs[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, default=ROOT / "artifacts/sentiment")
    parser.add_argument("--sentences", type=int, default=200)
    parser.add_argument("--steps", type=int, default=32, help="integrated-gradients steps")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    model = load_sentiment(args.artifact)
    model.network.eval()
    dev = load_sst2().dev
    sentences = [t.split() for t in dev.texts if len(t.split()) >= 4][: args.sentences]
    results: dict[str, dict[str, list[float]]] = {
        "occlusion": {"aopc": [], "ms": []},
        "integrated gradients": {"aopc": [], "ms": []},
    }
    for words in sentences:
        with torch.inference_mode():
            label = int(model.predict_proba([" ".join(words)]).argmax())
        for name in results:
            started = time.perf_counter()
            if name == "occlusion":
                scores = occlusion(model, words, label)
            else:
                scores = integrated_gradients(model, words, label, args.steps)
            results[name]["ms"].append(1000 * (time.perf_counter() - started))
            drops = [deletion_drop(model, words, label, scores, k) for k in (1, 2, 3)]
            results[name]["aopc"].append(sum(drops) / len(drops))
    report = {
        name: {"deletion_aopc": statistics.mean(r["aopc"]), "median_ms": statistics.median(r["ms"])}
        for name, r in results.items()
    }
    report_all = {"sentences": len(sentences), "ig_steps": args.steps, "methods": report}
    save_json("explanations", report_all)
    rows = [[name, r["deletion_aopc"], f"{r['median_ms']:.1f}"] for name, r in report.items()]
    md = table(["method", "deletion AOPC (k = 1..3, higher is more faithful)", "median ms per sentence"], rows)
    md += f"\n\n{len(sentences)} SST-2 dev sentences of 4+ words; integrated gradients with {args.steps} steps."
    if args.update_readme:
        update_section("explanations", md)
    print(json.dumps(report_all, indent=2))


if __name__ == "__main__":
    main()
