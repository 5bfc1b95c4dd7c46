"""model/evaluate.py: metrics on hand-checkable inputs, calibration error, temperature scaling, the plots."""

from __future__ import annotations

import pytest
import torch

from model.evaluate import (
    calibration_report,
    classification_metrics,
    expected_calibration_error,
    fit_mixture,
    fit_temperature,
    plot_confusion,
    plot_learning_curves,
    reliability,
)


def confident(preds: list[int], k: int, confidence: float) -> torch.Tensor:
    """Probabilities (N, k) putting `confidence` on each predicted class and the rest evenly elsewhere."""
    probs = torch.full((len(preds), k), (1 - confidence) / (k - 1))
    probs[torch.arange(len(preds)), torch.tensor(preds)] = confidence
    return probs


def test_ece_of_perfectly_calibrated_predictions_is_zero() -> None:
    # 100 predictions at confidence 0.8 of which 80 are right, and 50 at 0.6 of which 30 are right
    preds = [0] * 100 + [1] * 50
    targets = [0] * 80 + [1] * 20 + [1] * 30 + [0] * 20
    probs = torch.cat([confident(preds[:100], 2, 0.8), confident(preds[100:], 2, 0.6)])
    assert expected_calibration_error(probs, torch.tensor(targets)) == pytest.approx(0.0, abs=1e-6)


def test_ece_of_overconfident_predictions() -> None:
    probs = confident([0] * 10, 2, 0.9)
    targets = torch.tensor([0] * 5 + [1] * 5)  # right half the time at confidence 0.9
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4, abs=1e-6)


def test_reliability_bins_cover_every_prediction() -> None:
    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(200, 3) * 2, dim=-1)
    targets = torch.randint(0, 3, (200,))
    rows = reliability(probs, targets, bins=10)
    assert sum(r["count"] for r in rows) == 200
    assert all(r["lo"] < r["confidence"] <= r["hi"] for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def _sampled(n: int, scale: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits `z` and targets drawn from softmax(z): calibrated at temperature 1, so scale*z needs T = scale."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 3, generator=g) * 1.5
    targets = torch.multinomial(torch.softmax(z, dim=-1), 1, generator=g).squeeze(1)
    return z * scale, targets


@pytest.mark.parametrize("scale", [3.0, 1.0, 0.5])
def test_fit_temperature_recovers_a_known_temperature(scale: float) -> None:
    logits, targets = _sampled(4000, scale)
    assert fit_temperature(logits, targets) == pytest.approx(scale, rel=0.15)


def test_fit_temperature_accepts_inference_tensors() -> None:
    logits, targets = _sampled(500, 2.0)
    with torch.inference_mode():
        frozen = logits * 1.0
    assert fit_temperature(frozen, targets) == pytest.approx(2.0, rel=0.3)


def test_calibration_report_cools_an_overconfident_model() -> None:
    dev_logits, dev_targets = _sampled(2000, 4.0, seed=1)
    eval_logits, eval_targets = _sampled(2000, 4.0, seed=2)
    temperature, summary, png = calibration_report(dev_logits, dev_targets, eval_logits, eval_targets)
    assert temperature == summary["temperature"] == pytest.approx(4.0, rel=0.15)
    assert summary["ece_after"] < summary["ece_before"] / 2
    assert png.startswith(b"\x89PNG")


def test_classification_metrics_on_a_hand_checked_example() -> None:
    labels = ["a", "b", "c"]
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = [0, 1, 1, 1, 2, 0]
    probs = confident(preds, 3, 0.8)
    got = classification_metrics(probs, targets, labels)
    assert got["n"] == 6
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]  # rows true, columns predicted
    # a: P 1/2 R 1/2; b: P 2/3 R 1 -> F1 0.8; c: P 1 R 1/2 -> F1 2/3
    assert got["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert got["per_class"]["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert got["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert got["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # the true class gets 0.8 when right and 0.1 when wrong
    expected_nll = -(4 * torch.tensor(0.8).log() + 2 * torch.tensor(0.1).log()).item() / 6
    assert got["nll"] == pytest.approx(expected_nll, rel=1e-5)
    assert got["ece"] == pytest.approx(abs(4 / 6 - 0.8), abs=1e-6)


def test_classification_metrics_with_a_class_never_predicted() -> None:
    got = classification_metrics(confident([0, 0, 0], 2, 0.7), torch.tensor([0, 1, 0]), ["x", "y"])
    assert got["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert got["macro_f1"] == pytest.approx((0.8 + 0.0) / 2)


def test_plots_are_png_bytes() -> None:
    history = [
        {"epoch": 1, "train_loss": 0.7, "dev_loss": 0.6, "dev_accuracy": 0.6},
        {"epoch": 2, "train_loss": 0.5, "dev_loss": 0.55, "dev_accuracy": 0.7},
    ]
    assert plot_learning_curves(history).startswith(b"\x89PNG")
    assert plot_confusion([[3, 1], [0, 4]], ["neg", "pos"]).startswith(b"\x89PNG")


def test_fit_mixture_weighs_the_informative_part_more() -> None:
    torch.manual_seed(0)
    targets = torch.randint(0, 3, (400,))
    informative = torch.nn.functional.one_hot(targets, 3).float() * 3 + torch.randn(400, 3)  # mostly right
    noise = torch.randn(400, 3) * 3  # unrelated to the labels
    weights = fit_mixture(torch.stack([noise, informative]), targets)
    assert weights.shape == (2,) and bool((weights > 0).all())
    assert weights[1] > 5 * weights[0]
