"""Fixtures for the service tests: four tiny artifacts (a classifier, a generator, a tagger, a translator) trained
once per session (a second or two each), settings that ignore the caller's RNN_* environment and any .env file, and
TestClients whose lifespan has run.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from app.config import Settings, load_settings
from app.main import create_app
from model import evaluate
from model.generator.config import GeneratorTrainConfig
from model.generator.data import load_corpus
from model.sentiment.data import load_user_data
from model.tagger.config import TaggerTrainConfig
from model.tagger.conll import TaggedCorpus, TaggedSentence
from model.translator.config import TranslatorTrainConfig
from model.translator.data import Pairs, ParallelCorpus
from tests.helpers import PNG_STUB, sentences, small_config, write_csv

REPO = Path(__file__).resolve().parents[2]
LABELS = ["negative", "positive"]
THREE_LABELS = ["calm", "eager", "weary"]
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
) * 8

# part-of-speech tags where the context decides: "saw" is a VERB after a pronoun or a noun, a NOUN after a determiner
TAGGED = [
    ("I saw the saw .", "PRON VERB DET NOUN PUNCT"),
    ("they saw a dog .", "PRON VERB DET NOUN PUNCT"),
    ("the dog saw it .", "DET NOUN VERB PRON PUNCT"),
    ("a saw cut the dog .", "DET NOUN VERB DET NOUN PUNCT"),
    ("it saw a saw .", "PRON VERB DET NOUN PUNCT"),
    ("the saw saw the dog .", "DET NOUN VERB DET NOUN PUNCT"),
]
TAGS = sorted({tag for _, tags in TAGGED for tag in tags.split()})

# pairs the tiny translator learns by heart: its answers are these translations
PARALLEL = [
    ("ein Hund läuft .", "a dog runs ."),
    ("eine Katze schläft .", "a cat sleeps ."),
    ("zwei Hunde spielen .", "two dogs play ."),
    ("ein Mann liest ein Buch .", "a man reads a book ."),
    ("eine Frau trinkt Kaffee .", "a woman drinks coffee ."),
    ("zwei Kinder laufen .", "two children run ."),
]


@dataclass(frozen=True)
class Artifacts:
    sentiment: Path
    generator: Path
    tagger: Path
    translator: Path


def _rnn_vars() -> list[str]:
    return [k for k in os.environ if k.startswith("RNN_")]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Artifacts:
    """A sentiment, a generator, a tagger and a translator artifact, trained in a second or two each (plots
    stubbed: they are not served)."""
    from model.generator.train import train_generator
    from model.sentiment.train import train_sentiment
    from model.tagger.train import train_tagger
    from model.translator import train as translator_train

    root = tmp_path_factory.mktemp("service-artifacts")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_learning_curves", "plot_confusion", "plot_reliability", "plot_tag_confusion"):
            patch.setattr(evaluate, name, lambda *args, **kwargs: PNG_STUB)
        patch.setattr(translator_train, "plot_attention", lambda *args, **kwargs: PNG_STUB)
        train_csv = write_csv(root / "train.csv", sentences(48, LABELS, seed=1))
        train_sentiment(small_config(), load_user_data(train_csv, dev_fraction=0.25, seed=0), root / "sentiment")
        corpus = root / "corpus.txt"
        corpus.write_text(CORPUS, encoding="utf-8")
        cfg = GeneratorTrainConfig(epochs=1, batch_size=4, seq_len=16, hidden_size=16, embedding_dim=8, threads=1,
                                   min_steps=0)  # fmt: skip
        train_generator(cfg, load_corpus(corpus), root / "generator")
        rows = [TaggedSentence(text.split(), tags.split()) for text, tags in TAGGED]
        tagged = TaggedCorpus("tiny-pos", rows * 4, rows, None)
        tagger_cfg = TaggerTrainConfig(epochs=12, batch_size=4, embedding_dim=16, char_dim=8, char_hidden=8,
                                       hidden_size=16, num_layers=1, dropout=0.0, word_dropout=0.0, lr=2e-2,
                                       patience=100, threads=1, min_steps=0)  # fmt: skip
        train_tagger(tagger_cfg, tagged, root / "tagger")
        source, target = [s for s, _ in PARALLEL], [t for _, t in PARALLEL]
        parallel = ParallelCorpus(Pairs(source * 4, target * 4), Pairs(source, target), None, "tiny-de-en")
        translator_cfg = TranslatorTrainConfig(
            epochs=30, batch_size=4, embedding_dim=16, hidden_size=32, vocab_size=100, dropout=0.0,
            label_smoothing=0.0, lr=1e-2, patience=100, threads=1, min_steps=0, dev_sentences=6, beam=2,
            # BPE: the tests expect these pairs word for word, and the Unigram trainer's vocabulary (the default)
            # changes from run to run (docs/training.md), with which so small a model misses a pair now and then
            subwords="bpe",
        )  # fmt: skip
        translator_train.train_translator(translator_cfg, parallel, root / "translator")
    return Artifacts(root / "sentiment", root / "generator", root / "tagger", root / "translator")


@pytest.fixture(scope="session")
def three_labels(artifacts: Artifacts) -> Path:
    """Another classifier, with three labels of its own: served by name beside the default one (RNN_MODELS)."""
    from model.sentiment.train import train_sentiment

    root = artifacts.sentiment.parent
    with pytest.MonkeyPatch.context() as patch:
        for name in ("plot_learning_curves", "plot_confusion", "plot_reliability"):
            patch.setattr(evaluate, name, lambda *args, **kwargs: PNG_STUB)
        train_csv = write_csv(root / "three.csv", sentences(60, THREE_LABELS, seed=2))
        train_sentiment(small_config(epochs=4), load_user_data(train_csv, dev_fraction=0.25, seed=0), root / "three")
    return root / "three"


def clean_settings(artifacts: Artifacts, **overrides: Any) -> Settings:
    """Settings for the tiny artifacts: no RNN_* variable of the caller, no .env file, only `overrides`."""
    with pytest.MonkeyPatch.context() as patch:
        for key in _rnn_vars():
            patch.delenv(key)
        values: dict[str, Any] = {
            "sentiment_artifact": artifacts.sentiment,
            "generator_artifact": artifacts.generator,
            "tagger_artifact": artifacts.tagger,
            "translator_artifact": artifacts.translator,
            "torch_threads": 1,
            **overrides,
        }
        return load_settings(_env_file=None, **values)


@pytest.fixture(autouse=True)
def _no_rnn_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings read the environment: start each test without the caller's RNN_* variables."""
    for key in _rnn_vars():
        if key != "RNN_CACHE_DIR":
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def client(artifacts: Artifacts) -> Iterator[TestClient]:
    """One started app per test module, with default limits (for tests that only read)."""
    with TestClient(create_app(clean_settings(artifacts))) as c:
        yield c


ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(artifacts: Artifacts) -> Iterator[ClientFactory]:
    """`make_client(**settings)`: a started app with those settings; stopped after the test."""
    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(TestClient(create_app(clean_settings(artifacts, **overrides))))


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan run in the current event loop, and an AsyncClient calling the app in-process, so that
    `asyncio.gather` puts many requests in flight at once, all in this one loop."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30) as c:
            yield c


@pytest.fixture
def settings_for(artifacts: Artifacts) -> Callable[..., Settings]:
    """`settings_for(**overrides)`: settings for the tiny artifacts, free of the caller's environment."""
    return lambda **overrides: clean_settings(artifacts, **overrides)


def metric(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from a Prometheus exposition (`/metrics`), or None when it is absent."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# ---------------------------------------------------------------------------------------------- real server
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-4000:]


@contextmanager
def running_server(
    artifacts: Artifacts, workdir: Path, log_level: str = "info", env: dict[str, str] | None = None
) -> Iterator[Server]:
    """`python -m app` on a free loopback port with the tiny artifacts (and `env` on top), ready when entered."""
    port, extra = free_port(), env
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNN_")}
    env.update(
        PYTHONPATH=str(REPO),
        RNN_HOST=HOST,
        RNN_PORT=str(port),
        RNN_SENTIMENT_ARTIFACT=str(artifacts.sentiment),
        RNN_GENERATOR_ARTIFACT=str(artifacts.generator),
        RNN_TAGGER_ARTIFACT=str(artifacts.tagger),
        RNN_TRANSLATOR_ARTIFACT=str(artifacts.translator),
        RNN_TORCH_THREADS="1",
        RNN_LOG_LEVEL=log_level,
    )
    env.update(extra or {})
    log = workdir / "server.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "app"], cwd=workdir, env=env, stdout=sink, stderr=sink)
    server = Server(proc, f"http://{HOST}:{port}", log)
    try:
        _wait_ready(server, timeout=60)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.proc.poll() is None, f"the server exited with {server.proc.returncode}:\n{server.output()}"
        try:
            if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"/ready did not answer 200 within {timeout} s:\n{server.output()}")
