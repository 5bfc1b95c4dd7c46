"""Non-neural baselines computed in the same run as the networks they are compared with."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from model.sentiment.data import SentimentData
from model.tagger.conll import TaggedSentence


def tfidf_logreg(data: SentimentData, grid: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)) -> dict[str, Any]:
    """TF-IDF (word 1-2 grams, sublinear tf) + logistic regression, C chosen on dev."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=r"\S+")
    x_train = vec.fit_transform(data.train.texts)
    x_dev = vec.transform(data.dev.texts)
    best: tuple[float, float, Any] = (-1.0, 0.0, None)
    for c in grid:
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit(x_train, data.train.labels)
        acc = accuracy_score(data.dev.labels, clf.predict(x_dev))
        if acc > best[0]:
            best = (acc, c, clf)
    dev_acc, c, clf = best
    result: dict[str, Any] = {"model": "tfidf+logreg", "C": c, "dev_accuracy": dev_acc}
    if data.test is not None:
        pred = clf.predict(vec.transform(data.test.texts))
        result["test_accuracy"] = accuracy_score(data.test.labels, pred)
        result["test_macro_f1"] = f1_score(data.test.labels, pred, average="macro")
    result["wall_s"] = time.perf_counter() - started
    result["parameters"] = int(clf.coef_.size + clf.intercept_.size)
    return result


def tfidf_words_and_chars(data: SentimentData, grid: tuple[float, ...] = (1.0, 4.0, 16.0, 64.0)) -> dict[str, Any]:
    """TF-IDF over word 1-2 grams and character 2-5 grams (sublinear tf) + logistic regression, C chosen by 3-fold
    cross-validation on all the labelled training texts (train and dev): the small data sets' reference recipe."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.model_selection import cross_val_score

    started = time.perf_counter()
    texts, labels = data.train.texts + data.dev.texts, data.train.labels + data.dev.labels
    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True, token_pattern=r"\S+")
    chars = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True, lowercase=True)
    x = sp.hstack([words.fit_transform(texts), chars.fit_transform(texts)]).tocsr()
    scores = {c: cross_val_score(LogisticRegression(C=c, max_iter=3000), x, labels, cv=3).mean() for c in grid}
    c = max(grid, key=lambda k: scores[k])
    clf = LogisticRegression(C=c, max_iter=3000).fit(x, labels)
    result: dict[str, Any] = {"model": "tfidf(words+chars)+logreg", "C": c, "cv_accuracy": scores[c]}
    if data.test is not None:
        x_test = sp.hstack([words.transform(data.test.texts), chars.transform(data.test.texts)]).tocsr()
        result["test_accuracy"] = accuracy_score(data.test.labels, clf.predict(x_test))
    result["wall_s"] = time.perf_counter() - started
    return result


class KneserNeyCharLM:
    """Interpolated Kneser-Ney character n-gram model (absolute discount D per order; lower orders use
    continuation counts; the unigram level is interpolated with a uniform distribution over the vocabulary)."""

    def __init__(self, text: str, order: int = 5, discount: float = 0.75) -> None:
        from collections import Counter, defaultdict

        self.order, self.d = order, discount
        self.vocab = sorted(set(text)) + ["<unk>"]
        # counts[k]: k-gram -> count (raw for the top order, continuation counts below it)
        self.counts: list[Counter[str]] = [Counter() for _ in range(order + 1)]
        top = self.counts[order]
        for i in range(len(text) - order + 1):
            top[text[i : i + order]] += 1
        for k in range(order - 1, 0, -1):
            higher = self.counts[k + 1]
            cont: Counter[str] = Counter()
            for gram in higher:
                cont[gram[1:]] += 1  # number of distinct left extensions
            self.counts[k] = cont
        self.context_total: list[dict[str, int]] = [defaultdict(int) for _ in range(order + 1)]
        self.context_types: list[dict[str, int]] = [defaultdict(int) for _ in range(order + 1)]
        for k in range(1, order + 1):
            for gram, c in self.counts[k].items():
                self.context_total[k][gram[:-1]] += c
                self.context_types[k][gram[:-1]] += 1

    def prob(self, history: str, ch: str) -> float:
        p = 1.0 / len(self.vocab)
        for k in range(1, self.order + 1):
            ctx = history[len(history) - (k - 1) :] if k > 1 else ""
            if k > 1 and len(history) < k - 1:
                break
            total = self.context_total[k].get(ctx, 0)
            if total == 0:
                continue
            count = self.counts[k].get(ctx + ch, 0)
            backoff = self.d * self.context_types[k][ctx] / total
            p = max(count - self.d, 0.0) / total + backoff * p
        return p

    def loss(self, text: str, warmup: str = "") -> float:
        """Mean negative log-likelihood (nats/char) of `text`, with `warmup` as the initial history."""
        import math

        history = warmup[-(self.order - 1) :] if self.order > 1 else ""
        total = 0.0
        for ch in text:
            total -= math.log(self.prob(history, ch))
            history = (history + ch)[-(self.order - 1) :] if self.order > 1 else ""
        return total / max(len(text), 1)


def kneser_ney(train: str, val: str, order: int = 5) -> dict[str, Any]:
    started = time.perf_counter()
    lm = KneserNeyCharLM(train, order)
    loss = lm.loss(val[1:], warmup=val[:1])
    return {"model": f"Kneser-Ney {order}-gram", "val_loss": loss, "wall_s": time.perf_counter() - started}


def most_frequent_tag(train: Sequence[TaggedSentence], test: Sequence[TaggedSentence]) -> dict[str, Any]:
    """model/tagger/train.py's MostFrequentTag scored on `test`, overall and on words unseen in training."""
    from model.tagger.tagging import normalize_word
    from model.tagger.train import MostFrequentTag

    started = time.perf_counter()
    baseline = MostFrequentTag(train)
    seen = {normalize_word(t) for s in train for t in s.tokens}  # "unseen" as the tagger's report counts it
    pairs = [(baseline.tag(t), g, normalize_word(t) in seen) for s in test for t, g in zip(s.tokens, s.tags,
                                                                                              strict=True)]  # fmt: skip
    unseen = [p == g for p, g, known in pairs if not known]
    return {
        "model": "most frequent tag per word",
        "test_accuracy": sum(p == g for p, g, _ in pairs) / max(len(pairs), 1),
        "unseen_accuracy": sum(unseen) / max(len(unseen), 1),
        "wall_s": time.perf_counter() - started,
    }
