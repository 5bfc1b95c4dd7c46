"""The character generator: data errors, BOM, step API, artifact round trip, resume, CLI, precision and device."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import model.train as shared
from model.__main__ import main
from model.artifacts import read_config
from model.data import DataError
from model.generator.config import CharLMConfig, GeneratorTrainConfig
from model.generator.data import load_corpus
from model.generator.network import CharRNN
from model.generator.predictor import load_generator
from model.generator.sampling import SamplingParams, generate
from model.generator.train import evaluate_loss, planned_epochs, rank_share, stateful_batches, train_generator

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n"
) * 12


def tiny(**overrides: object) -> GeneratorTrainConfig:
    settings: dict = {"epochs": 2, "batch_size": 4, "seq_len": 16, "hidden_size": 16, "embedding_dim": 8,
                      "threads": 1, "patience": 5, "min_steps": 0}  # fmt: skip
    settings.update(overrides)
    return GeneratorTrainConfig(**settings)


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_bytes(b"\xef\xbb\xbf" + TEXT.encode())
    return path


def test_bom_is_stripped_and_split_is_ninety_ten(corpus_file: Path) -> None:
    corpus = load_corpus(corpus_file, val_fraction=0.1)
    assert not corpus.train.startswith("\ufeff")
    assert corpus.train + corpus.val == TEXT
    assert len(corpus.train) == int(len(TEXT) * 0.9)


@pytest.mark.parametrize("content", ["", "   \n", "short text"])
def test_empty_or_short_corpus_is_refused_before_training(tmp_path: Path, content: str) -> None:
    path = tmp_path / "c.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="corpus is"):
        load_corpus(path)


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_stepping_equals_full_forward(cell: str) -> None:
    torch.manual_seed(0)
    net = CharRNN(CharLMConfig(vocab_size=20, cell=cell, hidden_size=12, embedding_dim=6, num_layers=2)).eval()
    tokens = torch.randint(0, 20, (3, 15))
    full, _ = net(tokens)
    hidden = net.init_hidden(3)
    steps = []
    for t in range(tokens.shape[1]):
        logits, hidden = net(tokens[:, t : t + 1], hidden)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


def test_stateful_batches_walk_contiguous_rows() -> None:
    ids = torch.arange(101)
    batches = stateful_batches(ids, batch=4, seq_len=5)
    x0, y0 = batches[0]
    x1, _ = batches[1]
    assert x0.shape == (4, 5)
    assert torch.equal(y0, x0 + 1)  # targets are the next character
    assert torch.equal(x1[:, 0], x0[:, -1] + 1)  # the next window continues each row


@pytest.mark.parametrize(("length", "world"), [(101, 2), (1000, 3), (257, 4), (64, 1)])
def test_rank_shares_split_the_stream_evenly(length: int, world: int) -> None:
    ids = torch.arange(length)
    shares = [rank_share(ids, rank, world) for rank in range(world)]
    pairs = [(share[:-1], share[1:]) for share in shares]
    inputs = torch.cat([x for x, _ in pairs])
    # contiguous and disjoint: together the shares' inputs are the stream's first characters, in order
    assert torch.equal(inputs, torch.arange(len(inputs)))
    assert len(inputs) > length - 1 - world  # all but fewer than `world` of the (character, next) pairs
    assert all(torch.equal(y, x + 1) for x, y in pairs)  # each share's targets: its inputs' next characters
    # every rank takes the same number of steps, on batches of its own share only
    batches = [stateful_batches(share, batch=4, seq_len=5) for share in shares]
    assert len({len(b) for b in batches}) == 1 and len(batches[0]) > 0
    for share, rank_batches in zip(shares, batches, strict=True):
        seen = torch.cat([x.reshape(-1) for x, _ in rank_batches])
        assert int(seen.min()) >= int(share[0]) and int(seen.max()) < int(share[-1])


def test_one_rank_trains_on_the_whole_stream_as_before() -> None:
    ids = torch.arange(1001)
    assert torch.equal(rank_share(ids, 0, 1), ids)
    ours, today = stateful_batches(rank_share(ids, 0, 1), 4, 16), stateful_batches(ids, 4, 16)
    assert len(ours) == len(today)
    for (x, y), (x2, y2) in zip(ours, today, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)


def test_train_round_trip_and_sampling(tmp_path: Path, corpus_file: Path) -> None:
    corpus = load_corpus(corpus_file)
    out = tmp_path / "gen"
    metrics = train_generator(tiny(), corpus, out)
    assert metrics["val_loss"] > 0 and metrics["val_bpc"] == pytest.approx(metrics["val_loss"] / 0.6931471805599453)
    assert not (tmp_path / "gen.ckpt").exists()
    gen = load_generator(out)
    ids = torch.tensor(gen.tokenizer.encode(corpus.val).ids)
    assert evaluate_loss(gen.network, ids) == pytest.approx(metrics["val_loss"], rel=1e-5)
    # the loaded network gives the same text for the same seed; unknown characters in a prompt are fine
    params = SamplingParams(max_new_tokens=20, temperature=0.8, seed=3)
    assert (
        generate(gen.network, gen.tokenizer, "Ω First", params).text
        == generate(gen.network, gen.tokenizer, "Ω First", params).text
    )
    assert {"model.safetensors", "tokenizer.json", "config.json", "manifest.json"} <= {p.name for p in out.iterdir()}


def test_a_short_text_trains_for_its_minimum_steps_and_a_long_one_for_its_epochs(
    tmp_path: Path, corpus_file: Path
) -> None:
    corpus = load_corpus(corpus_file)
    cfg = tiny(epochs=1, min_steps=70, patience=100)
    steps_per_epoch = len(stateful_batches(torch.arange(len(corpus.train)), cfg.batch_size, cfg.seq_len))
    planned = planned_epochs(cfg, steps_per_epoch)
    assert planned == -(-70 // steps_per_epoch) > 1
    metrics = train_generator(cfg, corpus, tmp_path / "g")
    history = read_config(tmp_path / "g").training["history"]
    assert metrics["epochs_run"] == len(history) == planned and history[-1]["step"] >= 70
    # tiny-shakespeare's 1,003,854 training characters: the default's eight epochs hold more steps than the minimum
    default = GeneratorTrainConfig()
    per_epoch = len(stateful_batches(torch.arange(1_003_854), default.batch_size, default.seq_len))
    assert planned_epochs(default, per_epoch) == default.epochs
    # a five-kilobyte text: epochs enough for the minimum, which early stopping ends once validation loss turns
    assert planned_epochs(default, 2) == default.min_steps // 2


def test_a_short_text_stops_early_once_validation_loss_turns(tmp_path: Path, corpus_file: Path) -> None:
    corpus = load_corpus(corpus_file)
    cfg = tiny(epochs=1, min_steps=2000, patience=1, lr=3e-2)
    planned = planned_epochs(cfg, len(stateful_batches(torch.arange(len(corpus.train)), cfg.batch_size, cfg.seq_len)))
    metrics = train_generator(cfg, corpus, tmp_path / "g")
    history = read_config(tmp_path / "g").training["history"]
    assert metrics["epochs_run"] == len(history) < planned // 2
    assert metrics["best_epoch"] == len(history) - 1  # patience 1: the epoch after the best one ends the run


def test_training_learns_something(tmp_path: Path, corpus_file: Path) -> None:
    corpus = load_corpus(corpus_file)
    metrics = train_generator(tiny(epochs=6, lr=1e-2, hidden_size=32), corpus, tmp_path / "g")
    history = json.loads((tmp_path / "g" / "config.json").read_text())["training"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert metrics["val_loss"] < 3.0  # uniform over ~30 characters would be ~3.4 nats


def test_resume_matches_uninterrupted_run(tmp_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:

    corpus = load_corpus(corpus_file)
    reference = train_generator(tiny(epochs=3), corpus, tmp_path / "ref")

    real = crash_in_second_epoch(monkeypatch, lambda: train_generator(tiny(epochs=3), corpus, tmp_path / "run"))
    assert (tmp_path / "run.ckpt" / "state.json").exists() and not (tmp_path / "run").exists()
    monkeypatch.setattr(shared, "train_epoch", real)
    resumed = train_generator(tiny(epochs=3), corpus, tmp_path / "run", resume=True)
    assert resumed["val_loss"] == pytest.approx(reference["val_loss"], abs=1e-6)
    history = json.loads((tmp_path / "run" / "config.json").read_text())["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]


def test_cli_train_evaluate_sample(tmp_path: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "g"
    args = ["train", "generator", "--train", str(corpus_file), "--preset", "quick", "--epochs", "1",
            "--hidden-size", "16", "--seq-len", "16", "--threads", "1", "--out", str(out)]  # fmt: skip
    args += ["--batch-size", "4"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["artifact"] == str(out)
    assert main(["evaluate", str(out), "--text", str(corpus_file), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["val_loss"] > 0 and report["characters"] == len(TEXT)
    argv = ["sample", str(out), "--prompt", "All:", "--max-new-tokens", "12", "--temperature", "0", "--seed", "1"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert first.out.startswith("All:") and json.loads(first.err)["tokens"] == 12
    assert main(argv) == 0
    assert capsys.readouterr().out == first.out


@pytest.mark.parametrize(("preset", "cell"), [("default", "gru"), ("lstm", "lstm")])
def test_cli_presets_name_the_cell_they_train(
    tmp_path: Path, corpus_file: Path, capsys: pytest.CaptureFixture[str], preset: str, cell: str
) -> None:
    """The default preset trains a GRU, the lstm preset an LSTM; the artifact and its loaded network say so."""
    out = tmp_path / preset
    args = ["train", "generator", "--train", str(corpus_file), "--preset", preset, "--epochs", "1",
            "--hidden-size", "16", "--embedding-dim", "8", "--seq-len", "16", "--batch-size", "4", "--threads", "1",
            "--min-steps", "0", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    training = read_config(out).training
    assert (read_config(out).network["cell"], training["cell"], training["max_minutes"]) == (cell, cell, None)
    assert load_generator(out).config.cell == cell


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "model", "train", "generator", "--train", str(empty), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "empty" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "model", "sample", str(tmp_path / "missing"), "--prompt", "x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_random_windows_are_seeded_next_character_pairs() -> None:
    from model.generator.train import random_batches

    ids = torch.arange(500)
    first = list(random_batches(ids, 4, 8, steps=3, g=torch.Generator().manual_seed(1)))
    again = list(random_batches(ids, 4, 8, steps=3, g=torch.Generator().manual_seed(1)))
    assert len(first) == 3
    for (x, y), (x2, y2) in zip(first, again, strict=True):
        assert x.shape == (4, 8) and torch.equal(y, x + 1) and torch.equal(x, x2) and torch.equal(y, y2)
        assert torch.equal(x[:, 1:], x[:, :-1] + 1)  # each window is contiguous text


def test_random_batching_trains(tmp_path: Path, corpus_file: Path) -> None:
    metrics = train_generator(tiny(batching="random", epochs=1), load_corpus(corpus_file), tmp_path / "r")
    assert metrics["val_loss"] > 0 and (tmp_path / "r" / "model.safetensors").exists()


def test_evaluate_loss_scores_every_character() -> None:
    torch.manual_seed(0)
    net = CharRNN(CharLMConfig(vocab_size=10, hidden_size=8, embedding_dim=4)).eval()
    ids = torch.randint(0, 10, (103,))  # 102 targets: not a multiple of the 16 streams
    with torch.inference_mode():
        logits, _ = net(ids[:-1].view(1, -1))
        reference = torch.nn.functional.cross_entropy(logits[0], ids[1:]).item()
    assert evaluate_loss(net, ids, streams=1, chunk=7) == pytest.approx(reference, rel=1e-5)
    assert evaluate_loss(net, ids) == pytest.approx(reference, rel=0.05)  # 16 rows restart their hidden state


def test_a_max_minutes_cap_ends_a_long_corpus_mid_epoch_with_an_artifact_that_samples(
    tmp_path: Path, corpus_file: Path
) -> None:
    """The cap for a corpus far larger than the preset was sized on: the run stops inside its first epoch and
    still writes a whole artifact; the preset alone would have run all its epochs."""
    out = tmp_path / "capped"
    metrics = train_generator(tiny(epochs=3, max_minutes=1e-9), load_corpus(corpus_file), out)
    history = read_config(out).training["history"]
    assert metrics["epochs_run"] == len(history) == 1 and history[0]["complete"] == 0.0
    gen = load_generator(out)
    assert len(generate(gen.network, gen.tokenizer, "All:", SamplingParams(max_new_tokens=8, seed=0)).text) > 0


def test_the_budget_says_how_much_of_it_is_spent() -> None:
    """Under --max-minutes the generator's learning-rate schedule follows the budget's spent fraction (a resumed
    run counts the time it already had), so a run that the budget ends has still decayed its rate."""
    from model.runtime import Runtime
    from model.train import Budget, lr_at

    cpu = Runtime(torch.device("cpu"))
    assert Budget(None, 0.0, cpu).used() == 0.0
    assert Budget(1.0, 30.0, cpu).used() == pytest.approx(0.5, abs=0.01)
    assert Budget(1.0, 90.0, cpu).used() == 1.0
    total = 1000
    at = max(10, int(total * Budget(1.0, 60.0, cpu).used()))  # few steps taken, all the time spent
    assert lr_at(at, total, 3e-3, 0.02) == pytest.approx(0.05 * 3e-3)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(out / "model.safetensors"))


@pytest.mark.parametrize("cell", ["gru", "lstm", "rnn"])
def test_bf16_on_the_cpu_trains_each_cell_into_fp32_weights(tmp_path: Path, corpus_file: Path, cell: str) -> None:
    """bf16 autocast changes the arithmetic (other weights than fp32's), not the artifact: fp32 weights that load
    and sample on the CPU."""
    corpus = load_corpus(corpus_file)
    train_generator(tiny(cell=cell, epochs=1), corpus, tmp_path / "fp32")
    metrics = train_generator(tiny(cell=cell, epochs=1), corpus, tmp_path / "bf16", precision="bf16")
    fp32, bf16 = _weights(tmp_path / "fp32"), _weights(tmp_path / "bf16")
    assert {t.dtype for t in bf16.values()} == {torch.float32}
    assert any(not torch.equal(fp32[k], bf16[k]) for k in fp32)
    training = json.loads((tmp_path / "bf16" / "config.json").read_text())["training"]
    assert training["precision"] == "bf16" and 0 < metrics["val_loss"] < 4.0
    gen = load_generator(tmp_path / "bf16")
    assert generate(gen.network, gen.tokenizer, "All:", SamplingParams(max_new_tokens=5, seed=1)).text


def test_resume_with_another_precision_is_refused(
    tmp_path: Path, corpus_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    corpus = load_corpus(corpus_file)
    real = crash_in_second_epoch(monkeypatch, lambda: train_generator(tiny(epochs=2), corpus, tmp_path / "run"))
    monkeypatch.setattr(shared, "train_epoch", real)
    with pytest.raises(ValueError, match="made with other settings or data"):
        train_generator(tiny(epochs=2), corpus, tmp_path / "run", resume=True, precision="bf16")
    assert train_generator(tiny(epochs=2), corpus, tmp_path / "run", resume=True)["val_loss"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_runs_with_one_seed_agree_and_load_on_the_cpu(tmp_path: Path, corpus_file: Path) -> None:
    corpus = load_corpus(corpus_file)
    cfg = tiny(epochs=2, dropout=0.1, batching="random")  # dropout draws from the CUDA generator
    first = train_generator(cfg, corpus, tmp_path / "a", device="cuda")
    second = train_generator(cfg, corpus, tmp_path / "b", device="cuda")
    assert first["val_loss"] == second["val_loss"]
    assert json.loads((tmp_path / "a" / "config.json").read_text())["training"]["device"] == "cuda"
    gen = load_generator(tmp_path / "a")  # on the CPU, as serving loads it
    ids = torch.tensor(gen.tokenizer.encode(corpus.val).ids)
    assert evaluate_loss(gen.network, ids) == pytest.approx(first["val_loss"], rel=1e-4)


def crash_in_second_epoch(monkeypatch: pytest.MonkeyPatch, run: Any) -> Any:
    """Run `run` with the generator's second training epoch interrupted (a kill after the first checkpoint);
    returns the real model.train.train_epoch, for the caller to put back before resuming."""

    real = shared.train_epoch
    calls = {"n": 0}

    def crash_on_second(*args, **kwargs):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(shared, "train_epoch", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        run()
    return real
