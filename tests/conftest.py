"""Shared fixtures: tiny labelled files written by the tests themselves, a small training config, and one tiny
sentiment artifact trained once per session. Nothing here reads ../shared data or touches the network.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from model import evaluate
from model.sentiment.data import SentimentData, load_user_data
from tests.helpers import PNG_STUB, sentences, small_config, write_csv

REAL_URLOPEN = urllib.request.urlopen


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Two busy cores: one intra-op thread keeps the tiny models fast and their results reproducible."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _offline_urlopen(url: Any, *args: Any, **kwargs: Any) -> Any:
    target = url if isinstance(url, str) else url.full_url
    if not target.startswith(("file:", "http://127.0.0.1:")):  # files and this machine's own loopback servers
        raise urllib.error.URLError(f"network disabled in tests: {target}")
    return REAL_URLOPEN(url, *args, **kwargs)


@pytest.fixture(autouse=True, scope="session")
def _offline() -> Iterator[None]:
    """No mirror from the environment (the Makefile exports one) and no network, session fixtures included."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("RNN_DATA_DIR", raising=False)
        patch.setattr(urllib.request, "urlopen", _offline_urlopen)
        yield


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test gets an empty download cache, never ~/.cache."""
    monkeypatch.setenv("RNN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "data" / "tiny.csv", sentences(48, ["neg", "pos"]))


@pytest.fixture
def tiny_data(tiny_csv: Path) -> SentimentData:
    return load_user_data(tiny_csv, dev_fraction=0.25, seed=0)


@pytest.fixture
def fast_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Matplotlib takes most of a tiny training run; tests about weights and resuming do not need real plots."""
    for name in ("plot_learning_curves", "plot_confusion", "plot_reliability", "plot_tag_confusion"):
        monkeypatch.setattr(evaluate, name, lambda *args, **kwargs: PNG_STUB)


@dataclass
class Trained:
    path: Path
    metrics: dict[str, Any]
    train_csv: Path
    test_csv: Path
    labels: list[str]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """One tiny artifact, trained once per session with real plots, a held-out test file and the default paths."""
    from model.sentiment.train import train_sentiment

    root = tmp_path_factory.mktemp("trained")
    train_csv = write_csv(root / "train.csv", sentences(48, ["neg", "pos"], seed=1))
    test_csv = write_csv(root / "test.csv", sentences(12, ["neg", "pos"], seed=2))
    data = load_user_data(train_csv, test=test_csv, dev_fraction=0.25, seed=0)
    out = root / "artifacts" / "sentiment"
    metrics = train_sentiment(small_config(), data, out)
    return Trained(out, metrics, train_csv, test_csv, data.label_names)
