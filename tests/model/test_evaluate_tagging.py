"""Tests for the sequence-tagging metrics in model/evaluate.py: token/sentence/unseen-word accuracy, per-tag
scores and the confusion matrix by hand, and BIO entity scores cross-checked against the real seqeval package."""

from __future__ import annotations

import random

import pytest

seqeval_metrics = pytest.importorskip("seqeval.metrics")
from seqeval.metrics.sequence_labeling import get_entities  # noqa: E402

from model.evaluate import bio_spans, entity_metrics, is_bio, plot_tag_confusion, tagging_metrics  # noqa: E402

BIO = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
SCORE_KEYS = ("precision", "recall", "f1", "support")
UPOS = "ADJ ADP ADV AUX CCONJ DET INTJ NOUN NUM PART PRON PROPN PUNCT SCONJ SYM VERB X".split()

HAND_MADE = [
    ["B-PER", "I-PER", "O", "B-LOC"],
    ["I-PER", "I-PER", "O"],  # a span opened by I- (no B-)
    ["B-PER", "I-LOC", "I-LOC"],  # the type changes inside: two spans
    ["B-PER", "B-PER", "I-PER"],  # adjacent spans of one type
    ["O", "I-LOC", "B-LOC", "I-ORG"],
    ["I-ORG"],
    ["O", "O"],
    [],
]


def _random_sequences(rng: random.Random, n: int) -> list[list[str]]:
    return [[rng.choice(BIO) for _ in range(rng.randint(0, 12))] for _ in range(n)]


def _noisy(rng: random.Random, gold: list[list[str]], rate: float) -> list[list[str]]:
    return [[rng.choice(BIO) if rng.random() < rate else tag for tag in tags] for tags in gold]


@pytest.mark.parametrize("tags", HAND_MADE)
def test_bio_spans_match_seqeval_on_hand_made_sequences(tags: list[str]) -> None:
    assert bio_spans(tags) == get_entities(tags)


def test_bio_spans_hand_made_values() -> None:
    assert bio_spans(["I-PER", "I-PER", "O"]) == [("PER", 0, 1)]
    assert bio_spans(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert bio_spans(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]


def test_bio_spans_match_seqeval_on_random_sequences() -> None:
    rng = random.Random(0)
    for tags in _random_sequences(rng, 500):
        assert bio_spans(tags) == get_entities(tags), tags


def _seqeval(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    """seqeval's default-mode scores, flat: overall P/R/F1 and `TYPE/metric` for each entity type."""
    report = seqeval_metrics.classification_report(gold, pred, output_dict=True, zero_division=0)
    flat = {
        "precision": seqeval_metrics.precision_score(gold, pred, zero_division=0),
        "recall": seqeval_metrics.recall_score(gold, pred, zero_division=0),
        "f1": seqeval_metrics.f1_score(gold, pred, zero_division=0),
    }
    for name, row in report.items():
        if not name.endswith("avg"):
            flat |= {f"{name}/{key}": float(row[f"{key}-score" if key == "f1" else key]) for key in SCORE_KEYS}
    return flat


def _ours(gold: list[list[str]], pred: list[list[str]]) -> dict[str, float]:
    got = entity_metrics(gold, pred)
    flat = {key: got[f"entity_{key}"] for key in ("precision", "recall", "f1")}
    for name, row in got["per_entity"].items():
        flat |= {f"{name}/{key}": row[key] for key in SCORE_KEYS}
    return flat


@pytest.mark.parametrize(("seed", "rate"), [(1, 0.1), (2, 0.3), (3, 0.6), (4, 1.0)])
def test_entity_scores_match_seqeval_on_random_predictions(seed: int, rate: float) -> None:
    rng = random.Random(seed)
    gold = _random_sequences(rng, 200)
    pred = _noisy(rng, gold, rate)
    assert _ours(gold, pred) == pytest.approx(_seqeval(gold, pred))


def test_entity_scores_match_seqeval_on_hand_made_predictions() -> None:
    pred = [
        ["B-PER", "I-PER", "O", "O"],  # one of two spans found
        ["B-PER", "I-PER", "O"],  # the same span as gold's I- opened one
        ["B-PER", "B-LOC", "I-LOC"],
        ["B-PER", "I-PER", "I-PER"],  # merged: both gold spans missed
        ["O", "O", "B-LOC", "I-ORG"],
        ["B-ORG"],
        ["B-LOC", "O"],  # a false positive
        [],
    ]
    got = _ours(HAND_MADE, pred)
    assert got == pytest.approx(_seqeval(HAND_MADE, pred))
    assert got["PER/support"] == 5


def test_entity_scores_with_no_predicted_spans_are_zero() -> None:
    gold = [["B-PER", "O"]]
    got = entity_metrics(gold, [["O", "O"]])
    assert (got["entity_precision"], got["entity_recall"], got["entity_f1"]) == (0.0, 0.0, 0.0)


def test_spans_do_not_cross_sentences() -> None:
    # gold: PER at the end of one sentence and I-PER opening the next are two spans, not one
    got = entity_metrics([["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]])
    assert got["entity_f1"] == 1.0


@pytest.mark.parametrize(
    ("labels", "expected"),
    [(BIO, True), (["O", "I-X"], False), (["O", "B-X", "NOUN"], False), (UPOS, False), (["B-X"], True)],
)
def test_is_bio(labels: list[str], expected: bool) -> None:
    assert is_bio(labels) is expected


def test_tagging_metrics_by_hand() -> None:
    tokens = [["the", "cat", "sat"], ["a", "dog"]]
    gold = [["DET", "NOUN", "VERB"], ["DET", "NOUN"]]
    pred = [["DET", "NOUN", "VERB"], ["DET", "VERB"]]
    labels = ["DET", "NOUN", "VERB", "X"]
    got = tagging_metrics(gold, pred, tokens, {"the", "cat", "sat", "a"}, labels)
    assert got["accuracy"] == pytest.approx(4 / 5)
    assert (got["tokens"], got["sentences"], got["sentence_accuracy"]) == (5, 2, 0.5)
    assert (got["unseen_tokens"], got["unseen_accuracy"], got["seen_accuracy"]) == (1, 0.0, 1.0)
    assert got["confusion"] == [[2, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert got["per_tag"]["NOUN"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 1 + 1})
    assert got["per_tag"]["VERB"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert got["per_tag"]["X"]["support"] == 0
    # macro-F1 over the tags that occur (X occurs in neither gold nor predictions)
    assert got["macro_f1"] == pytest.approx((1.0 + 2 / 3 + 2 / 3) / 3)
    assert "entity_f1" not in got


def test_tagging_metrics_without_unseen_words() -> None:
    got = tagging_metrics([["DET"]], [["DET"]], [["the"]], {"the"}, ["DET"])
    assert (got["unseen_tokens"], got["unseen_accuracy"], got["seen_accuracy"]) == (0, None, 1.0)


def test_tagging_metrics_adds_entity_scores_for_bio_labels() -> None:
    rng = random.Random(5)
    gold = [tags for tags in _random_sequences(rng, 50) if tags]
    pred = _noisy(rng, gold, 0.2)
    tokens = [[f"w{i}" for i in range(len(tags))] for tags in gold]
    got = tagging_metrics(gold, pred, tokens, set(), BIO)
    assert got["entity_f1"] == pytest.approx(seqeval_metrics.f1_score(gold, pred, zero_division=0))
    assert set(got["per_entity"]) <= {"PER", "LOC", "ORG"}
    assert got["unseen_tokens"] == got["tokens"]


@pytest.mark.parametrize(
    ("gold", "pred", "tokens", "message"),
    [
        ([["DET"]], [["DET"], ["DET"]], [["a"]], "1 gold, 2 predicted and 1 token sequences"),
        ([["DET"]], [["DET", "DET"]], [["a"]], "sentence 0: 1 gold tags but 2 predicted"),
        ([["DET"]], [["DET"]], [["a", "b"]], "sentence 0: 2 tokens but 1 gold tags"),
        ([["DET"]], [["ADJ"]], [["a"]], "tag 'ADJ' is not in labels"),
        ([[]], [[]], [[]], "no tokens to evaluate"),
    ],
)
def test_tagging_metrics_rejects_mismatched_input(
    gold: list[list[str]], pred: list[list[str]], tokens: list[list[str]], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        tagging_metrics(gold, pred, tokens, set(), ["DET"])


def test_plot_tag_confusion_is_a_png_for_17_tags() -> None:
    rng = random.Random(0)
    confusion = [[rng.randint(0, 3) if i != j else rng.randint(0, 5000) for j in UPOS] for i in UPOS]
    confusion[3] = [0] * len(UPOS)  # a tag with no gold tokens
    png = plot_tag_confusion(confusion, UPOS)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
