"""model/sentiment/train.py (+ model/train.py): reproducible runs, resuming, early stopping, budgets, what the
artifact records. Every run here is a tiny classifier on a few dozen sentences, with one torch thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from tokenizers import Tokenizer

import model.train as shared
from model.sentiment import train as ts
from model.sentiment import trainee as tr
from model.sentiment.data import LabelledData, SentimentData, load_user_data
from model.sentiment.network import SentimentClassifier
from model.sentiment.predictor import load_sentiment
from model.sentiment.train import train_sentiment
from model.tokenization import PAD_ID, UNK_ID
from tests.conftest import Trained
from tests.helpers import TIMING_KEYS, sentences, small_config, write_csv

pytestmark = pytest.mark.usefixtures("fast_plots")


def weights(out: Path) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(out / "model.safetensors"))


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def history(out: Path) -> list[dict[str, Any]]:
    """The per-epoch history stored in the artifact, less the fields that measure time."""
    rows = json.loads((out / "config.json").read_text())["training"]["history"]
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in rows]


def untimed(metrics: dict[str, Any]) -> dict[str, Any]:
    kept = {k: v for k, v in metrics.items() if k != "train_seconds"}
    if "refit" in kept:
        kept["refit"] = {k: v for k, v in kept["refit"].items() if k != "seconds"}
    return kept


def checkpoint_of(out: Path) -> Path:
    return out.parent / f"{out.name}.ckpt"


def test_same_seed_gives_identical_weights_and_metrics(tiny_data: SentimentData, tmp_path: Path) -> None:
    first = train_sentiment(small_config(), tiny_data, tmp_path / "a")
    second = train_sentiment(small_config(), tiny_data, tmp_path / "b")
    other = train_sentiment(small_config(seed=1), tiny_data, tmp_path / "c")
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert untimed(first) == untimed(second)
    assert history(tmp_path / "a") == history(tmp_path / "b")
    # and the seed matters: another seed is another model
    assert not same_weights(weights(tmp_path / "a"), weights(tmp_path / "c"))
    assert history(tmp_path / "a") != history(tmp_path / "c") or untimed(first) != untimed(other)


@pytest.mark.parametrize("tokenizer", ["wordpiece", "bpe"])
def test_same_seed_is_reproducible_with_subword_tokenizers(
    tiny_data: SentimentData, tmp_path: Path, tokenizer: str
) -> None:
    cfg = small_config(epochs=1, tokenizer=tokenizer, vocab_size=60)
    train_sentiment(cfg, tiny_data, tmp_path / "a")
    train_sentiment(cfg, tiny_data, tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert_same_weights(weights(tmp_path / "a"), weights(tmp_path / "b"))


def _interrupt_before_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make the run stop with Ctrl-C as epoch `epoch` (0-based) begins, as a user or a preempted job would."""
    real = shared.train_epoch

    def interrupted(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        if state.epoch == epoch:
            raise KeyboardInterrupt
        return real(trainee, state, budget, loop)

    monkeypatch.setattr(shared, "train_epoch", interrupted)


def _record_epochs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    started: list[int] = []
    real = shared.train_epoch

    def recording(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        started.append(state.epoch)
        return real(trainee, state, budget, loop)

    monkeypatch.setattr(shared, "train_epoch", recording)
    return started


def test_resume_continues_after_the_last_finished_epoch(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # word dropout: the resumed epoch must replay its randomness too; two members: both must be restored
    cfg = small_config(epochs=2, word_dropout=0.1, ensemble=2)
    reference = train_sentiment(cfg, tiny_data, tmp_path / "reference")

    out = tmp_path / "resumed"
    with monkeypatch.context() as patch:
        _interrupt_before_epoch(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train_sentiment(cfg, tiny_data, out)
    assert not out.exists()
    state = json.loads((checkpoint_of(out) / "state.json").read_text())["train_state"]
    assert state["epoch"] == 1 and len(state["history"]) == 1

    started = _record_epochs(monkeypatch)
    resumed = train_sentiment(cfg, tiny_data, out, resume=True)
    assert started == [1], "epoch 1 was trained again instead of being taken from the checkpoint"
    assert_same_weights(weights(out), weights(tmp_path / "reference"))
    assert untimed(resumed) == untimed(reference)
    assert history(out) == history(tmp_path / "reference")
    assert not checkpoint_of(out).exists()


def test_resume_refuses_a_checkpoint_made_with_other_settings(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "model"
    with monkeypatch.context() as patch:
        _interrupt_before_epoch(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            train_sentiment(small_config(), tiny_data, out)
    with pytest.raises(ValueError, match="made with other settings or data"):
        train_sentiment(small_config(lr=5e-3), tiny_data, out, resume=True)
    # without --resume a stale checkpoint is simply replaced: training starts at epoch 0
    started = _record_epochs(monkeypatch)
    train_sentiment(small_config(lr=5e-3), tiny_data, out)
    assert started == [0, 1]
    assert not checkpoint_of(out).exists()


def _scripted_dev(monkeypatch: pytest.MonkeyPatch, script: list[list[float]]) -> list[dict[str, torch.Tensor]]:
    """Make dev accuracy per part follow `script` (one list per epoch); return the weights seen at each epoch."""
    rows = iter(script)
    seen: list[dict[str, torch.Tensor]] = []

    def scripted(net: torch.nn.Module, dev: Any, rt: Any) -> dict[str, Any]:
        seen.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        parts = next(rows)
        return {"dev_loss": 1.0, "dev_accuracy": max(parts), "dev_part_accuracy": parts}

    monkeypatch.setattr(tr, "_dev_metrics", scripted)
    return seen


def test_early_stopping_keeps_the_best_weights(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _scripted_dev(monkeypatch, [[0.5], [0.9], [0.6], [0.4], [0.95], [0.99]])
    out = tmp_path / "model"
    cfg = small_config(epochs=6, patience=2, bag=False, char_ngrams=False, weighted=False)
    metrics = train_sentiment(cfg, tiny_data, out)
    assert metrics["epochs_run"] == 4  # epochs 3 and 4 did not beat epoch 2
    assert metrics["best_epoch"] == 2
    assert [row["dev_accuracy"] for row in history(out)] == [0.5, 0.9, 0.6, 0.4]
    assert len(seen) == 4
    assert_same_weights(weights(out), seen[1])
    assert not same_weights(weights(out), seen[3])


def test_each_part_keeps_its_own_best_epoch(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BiLSTM and the bag learn on their own losses and peak at different epochs: each keeps its best, and
    training goes on while either still improves."""
    seen = _scripted_dev(monkeypatch, [[0.8, 0.5], [0.7, 0.6], [0.6, 0.7], [0.6, 0.6], [0.6, 0.6], [0.9, 0.9]])
    out = tmp_path / "model"
    metrics = train_sentiment(small_config(epochs=6, patience=2, char_ngrams=False), tiny_data, out)
    assert metrics["epochs_run"] == 5 and metrics["best_epoch"] == 3
    stored = weights(out)
    member = {k: v for k, v in stored.items() if k.startswith("members.0.")}
    bag = {k: v for k, v in stored.items() if k.startswith("bag.")}
    assert member and bag
    assert_same_weights(member, {k: seen[0][k] for k in member})  # the member's best: epoch 1
    assert_same_weights(bag, {k: seen[2][k] for k in bag})  # the bag's best: epoch 3
    assert not same_weights(bag, {k: seen[0][k] for k in bag})
    config = json.loads((out / "config.json").read_text())
    assert config["network"]["bag"] is True and config["network"]["weighted"] is True
    mixture = stored["mixture"]
    assert mixture.shape == (2,) and bool((mixture > 0).all())  # fitted on dev once training ended


def test_small_data_trains_more_epochs_up_to_min_steps(tiny_data: SentimentData, tmp_path: Path) -> None:
    steps_per_epoch = math.ceil(len(tiny_data.train) / 8)  # small_config's batch size
    cfg = small_config(epochs=1, min_steps=3 * steps_per_epoch, patience=9)
    metrics = train_sentiment(cfg, tiny_data, tmp_path / "m")
    assert metrics["epochs_run"] == 3
    assert history(tmp_path / "m")[-1]["epoch"] == 3


@pytest.mark.parametrize("given", [0.1, 0.0])
def test_word_dropout_reads_words_as_unknown_while_training(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: float
) -> None:
    """--word-dropout P: while training, each word the network reads is [UNK] with probability P; 0 reads them all."""
    fed: list[torch.Tensor] = []
    forward = SentimentClassifier.forward

    def recording(self: SentimentClassifier, ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.training:
            fed.append(ids.clone())
        return forward(self, ids, *args, **kwargs)

    monkeypatch.setattr(SentimentClassifier, "forward", recording)
    out = tmp_path / "m"
    train_sentiment(small_config(epochs=3, word_dropout=given), tiny_data, out)
    assert json.loads((out / "config.json").read_text())["training"]["word_dropout"] == given
    unknown = sum(int((ids == UNK_ID).sum()) for ids in fed) / sum(int((ids != PAD_ID).sum()) for ids in fed)
    if given:
        assert 0.5 * given < unknown < 2 * given
    else:
        assert unknown < 0.02  # only words the tokenizer itself could not spell


def test_the_artifact_holds_plain_tables_not_ngrams(trained: Trained) -> None:
    """Character n-grams exist only while training: the artifact's embeddings are ordinary tables."""
    stored = weights(trained.path)
    assert "members.0.embedding.weight" in stored and "bag.words.weight" in stored
    assert not any("grams" in name for name in stored)
    config = json.loads((trained.path / "config.json").read_text())
    assert config["training"]["char_ngrams"] is True and config["tokenizer"]["pieces"] == 50
    ids, _ = load_sentiment(trained.path).encode(["goodfilm"])
    assert len(ids[0]) > 1 and 1 not in ids[0].tolist()  # a word never seen is spelled with pieces, not [UNK]


def test_gradient_norms_and_clipping_are_recorded(tiny_data: SentimentData, tmp_path: Path) -> None:
    out = tmp_path / "clipped"
    train_sentiment(small_config(epochs=1, clip_norm=1e-4), tiny_data, out)
    (row,) = history(out)
    assert row["grad_norm_mean"] > 1e-4
    assert row["clipped_fraction"] == 1.0  # every step's norm was above the tiny clip threshold


def test_trained_history_records_gradient_norms(trained: Trained) -> None:
    rows = history(trained.path)
    assert [row["epoch"] for row in rows] == [1, 2]
    for row in rows:
        for key in ("grad_norm_mean", "grad_norm_max", "grad_norm_p99", "train_loss", "dev_loss", "lr"):
            assert math.isfinite(row[key]) and row[key] > 0, key
        assert row["grad_norm_mean"] <= row["grad_norm_max"]
        assert row["grad_norm_p99"] <= row["grad_norm_max"] + 1e-6
        assert 0.0 <= row["clipped_fraction"] <= 1.0
        assert row["complete"] == 1.0
        assert 0.0 <= row["dev_accuracy"] <= 1.0


def test_max_minutes_budget_stops_mid_epoch(tiny_data: SentimentData, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    metrics = train_sentiment(small_config(epochs=3, max_minutes=1e-9), tiny_data, out)
    assert metrics["epochs_run"] == 1
    (row,) = history(out)
    assert row["complete"] == 0.0
    assert load_sentiment(out).labels == ["neg", "pos"]  # a usable artifact all the same
    assert not checkpoint_of(out).exists()


def test_a_tiny_model_learns_the_cue_words(tiny_data: SentimentData, tmp_path: Path) -> None:
    metrics = train_sentiment(small_config(epochs=12, lr=3e-2, dropout=0.0), tiny_data, tmp_path / "m")
    assert metrics["dev"]["accuracy"] >= 0.9, metrics["dev"]
    model = load_sentiment(tmp_path / "m")
    assert [r["label"] for r in model.predict(["a superb brilliant film", "a dull dreadful film"])] == ["pos", "neg"]


def test_trained_artifact_records_its_provenance(trained: Trained) -> None:
    config = json.loads((trained.path / "config.json").read_text())
    assert config["task"] == "sentiment"
    assert config["labels"] == ["neg", "pos"]
    assert config["tokenizer"]["kind"] == "word" and config["tokenizer"]["lowercase"] is True
    assert config["network"]["hidden_size"] == 8 and config["network"]["embedding_dim"] == 8
    assert config["training"]["epochs"] == 2 and config["training"]["world_size"] == 1
    assert config["data"]["name"] == "train"
    assert (
        config["data"]["sha256"][str(trained.train_csv)] == hashlib.sha256(trained.train_csv.read_bytes()).hexdigest()
    )
    assert config["calibration"]["temperature"] == config["metrics"]["calibration"]["temperature"] > 0
    metrics = json.loads((trained.path / "metrics.json").read_text())
    assert metrics == config["metrics"] == json.loads(json.dumps(trained.metrics))
    assert metrics["calibration"]["split"] == "test"
    assert metrics["test"]["n"] == 12 and metrics["dev"]["n"] == 12
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == 12
    for name in ("learning_curves.png", "confusion_matrix.png", "reliability.png"):
        assert (trained.path / name).read_bytes().startswith(b"\x89PNG")
    # the checkpoint beside the artifact is gone once the artifact is written; nothing else is left behind
    assert sorted(p.name for p in trained.path.parent.iterdir()) == ["sentiment"]


@pytest.mark.parametrize(
    ("tokenizer", "cell", "pooling"), [("wordpiece", "gru", "mean"), ("bpe", "rnn", "last")], ids=["wordpiece", "bpe"]
)
def test_multi_class_with_other_tokenizers_and_cells(tmp_path: Path, tokenizer: str, cell: str, pooling: str) -> None:
    labels = ["5", "3", "1", "4", "2"]
    path = write_csv(tmp_path / "stars.csv", sentences(50, labels))
    data = load_user_data(path, dev_fraction=0.2)
    cfg = small_config(epochs=1, tokenizer=tokenizer, cell=cell, pooling=pooling, bidirectional=False, vocab_size=60)
    metrics = train_sentiment(cfg, data, tmp_path / "out")
    model = load_sentiment(tmp_path / "out")
    assert model.labels == ["1", "2", "3", "4", "5"]
    assert model.config.cell == cell and model.config.pooling == pooling and model.config.num_classes == 5
    assert model.artifact.config.tokenizer["kind"] == tokenizer
    assert len(metrics["dev"]["confusion_matrix"]) == 5
    (result,) = model.predict(["one1 two2 story"])
    assert list(result["probabilities"]) == ["1", "2", "3", "4", "5"]


def distill_checkpoint_of(out: Path) -> Path:
    return out.parent / f"{out.name}.distill.ckpt"


def test_distillation_ships_one_encoder_and_records_the_teacher(tiny_data: SentimentData, tmp_path: Path) -> None:
    cfg = small_config(ensemble=3, distill=True, distill_epochs=2, augment=2)
    metrics = train_sentiment(cfg, tiny_data, tmp_path / "one")
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    assert config["network"]["ensemble"] == 1 and config["network"]["bag"] is True  # what is served: one encoder
    names = set(weights(tmp_path / "one"))
    assert all(name.startswith(("members.0.", "bag.")) or name == "mixture" for name in names)
    teacher = metrics["teacher"]
    assert teacher["ensemble"] == 3 and len(teacher["member_dev_accuracy"]) == 3 and len(teacher["mixture"]) == 4
    assert teacher["member_dev_accuracy"][teacher["start"]] == max(teacher["member_dev_accuracy"])
    assert 0 <= teacher["dev_accuracy"] <= 1 and ("test_accuracy" in teacher) == (tiny_data.test is not None)
    assert 0 <= teacher["bag_dev_accuracy"] <= 1
    assert len(config["training"]["teacher_history"]) == 2 and len(config["training"]["history"]) == 2
    assert json.loads((tmp_path / "one" / "metrics.json").read_text())["teacher"] == teacher
    model = load_sentiment(tmp_path / "one")
    assert len(model.predict(["a fine film", "dull"])) == 2
    assert not checkpoint_of(tmp_path / "one").exists() and not distill_checkpoint_of(tmp_path / "one").exists()


def test_distillation_learns_from_the_augmented_transfer_set(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The student trains on the training texts and `augment` variants of each, labelled by the teacher; the
    teacher's bag joins the student unchanged."""
    sizes: list[tuple[int, bool]] = []
    bags: list[dict[str, torch.Tensor]] = []
    real_fit = ts.fit

    def recording(cfg: Any, net: Any, train: Any, *args: Any) -> Any:
        sizes.append((len(train.ids), train.soft is not None))
        result = real_fit(cfg, net, train, *args)
        bags.append({k: v.clone() for k, v in tr.unwrap(net).bag.state_dict().items()})
        return result

    monkeypatch.setattr(ts, "fit", recording)
    cfg = small_config(ensemble=2, distill=True, distill_epochs=1, augment=3)
    train_sentiment(cfg, tiny_data, tmp_path / "one")
    n = len(tiny_data.train)
    assert sizes == [(n, False), (n * 4, True)]
    assert_same_weights(bags[1], bags[0])  # the student's bag is the teacher's


def test_distillation_fits_the_teacher_not_the_labels(tiny_data: SentimentData, tmp_path: Path) -> None:
    """The student's loss is the KL to the teacher's probabilities: with a teacher that is every member of a
    one-member ensemble, starting from that very member, the student starts at a loss of zero."""
    cfg = small_config(
        ensemble=1, epochs=3, distill=True, distill_epochs=1, distill_lr=1e-9, dropout=0.0, augment=2, bag=False,
        weighted=False,
    )  # fmt: skip
    train_sentiment(cfg, tiny_data, tmp_path / "self")
    config = json.loads((tmp_path / "self" / "config.json").read_text())
    assert config["training"]["history"][0]["train_loss"] < 1e-6
    assert config["training"]["teacher_history"][-1]["train_loss"] > 1e-3  # cross-entropy to labels


def test_distillation_resumes_after_a_kill(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(ensemble=2, distill=True, distill_epochs=2, augment=2)
    reference = train_sentiment(cfg, tiny_data, tmp_path / "reference")
    out = tmp_path / "resumed"
    calls = {"n": 0}
    real = shared.train_epoch

    def killed_in_distillation(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        # the teacher's 2 epochs and the student's first are done
        if trainee.data.soft is not None and state.epoch == 1:
            raise KeyboardInterrupt
        calls["n"] += 1
        return real(trainee, state, budget, loop)

    with monkeypatch.context() as patch:
        patch.setattr(shared, "train_epoch", killed_in_distillation)
        with pytest.raises(KeyboardInterrupt):
            train_sentiment(cfg, tiny_data, out)
    assert calls["n"] == 3 and not out.exists() and distill_checkpoint_of(out).exists()
    started = _record_epochs(monkeypatch)
    resumed = train_sentiment(cfg, tiny_data, out, resume=True)
    assert started == [1], "only the student's second epoch is left"
    assert_same_weights(weights(out), weights(tmp_path / "reference"))
    assert untimed(resumed) == untimed(reference)
    assert not checkpoint_of(out).exists() and not distill_checkpoint_of(out).exists()


# --------------------------------------------------------------------------- the refit on train + dev


def _with_a_dev_only_word(data: SentimentData) -> SentimentData:
    """tiny_data with a word that occurs in dev and nowhere in train."""
    texts = [*data.dev.texts[:-1], data.dev.texts[-1] + " zyzzyva"]
    return dataclasses.replace(data, dev=LabelledData(texts, data.dev.labels, data.dev.source))


def _record_refit_epochs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The network's weights after each epoch of a refit."""
    seen: list[dict[str, torch.Tensor]] = []
    real = shared.train_epoch

    def recording(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        stats = real(trainee, state, budget, loop)
        if trainee.fixed is not None:
            seen.append({k: v.detach().clone() for k, v in trainee.module.state_dict().items()})
        return stats

    monkeypatch.setattr(shared, "train_epoch", recording)
    return seen


def test_the_refit_trains_on_train_and_dev_repeating_what_dev_chose(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a dev file of its own, the artifact is a second fit on train + dev (its vocabulary too) that keeps
    each part at the epoch dev chose in the first fit and uses the first fit's mixture; its dev scores and its
    temperature are the first fit's, on dev it had not seen."""
    data = _with_a_dev_only_word(tiny_data)
    script = [[0.8, 0.5], [0.7, 0.6], [0.6, 0.7], [0.6, 0.6], [0.6, 0.6]]  # the member peaks at 1, the bag at 3
    cfg = small_config(epochs=5, patience=2, char_ngrams=False)
    with monkeypatch.context() as patch:
        _scripted_dev(patch, script)
        first = train_sentiment(cfg, data, tmp_path / "first")
    with monkeypatch.context() as patch:
        _scripted_dev(patch, script)
        seen = _record_refit_epochs(patch)
        refit = train_sentiment(dataclasses.replace(cfg, refit=True), data, tmp_path / "refit")
    assert "refit" not in first
    assert refit["refit"]["train_sentences"] == len(data.train) + len(data.dev)
    assert refit["refit"]["first_fit"] == {"train_sentences": len(data.train)}  # no test split to score
    assert refit["refit"]["schedule"]["teacher"] == {"planned": 5, "epochs": [1, 3]}
    assert len(seen) == 3, "the refit runs to the last part's epoch, not to the first fit's early stop"
    stored = weights(tmp_path / "refit")
    member = {k: v for k, v in stored.items() if k.startswith("members.0.")}
    bag = {k: v for k, v in stored.items() if k.startswith("bag.")}
    assert_same_weights(member, {k: seen[0][k] for k in member})
    assert_same_weights(bag, {k: seen[2][k] for k in bag})
    assert not same_weights(member, {k: v for k, v in weights(tmp_path / "first").items() if k in member})
    assert torch.equal(stored["mixture"], weights(tmp_path / "first")["mixture"])
    assert refit["dev"] == first["dev"] and refit["calibration"] == first["calibration"]
    vocab = {name: Tokenizer.from_file(str(tmp_path / name / "tokenizer.json")) for name in ("first", "refit")}
    assert vocab["first"].token_to_id("zyzzyva") is None and vocab["refit"].token_to_id("zyzzyva") is not None
    config = json.loads((tmp_path / "refit" / "config.json").read_text())
    assert [row["dev_accuracy"] for row in config["training"]["history"]] == [0.8, 0.7, 0.7, 0.6, 0.6]
    assert len(config["training"]["refit_history"]) == 3
    assert not any(row.get("dev_accuracy") for row in config["training"]["refit_history"])
    assert not any(path.exists() for path in ts.checkpoints(tmp_path / "refit"))
    assert load_sentiment(tmp_path / "refit").predict(["zyzzyva"])[0]["label"] in data.label_names


def test_no_refit_with_a_dev_file_of_ones_own(tiny_data: SentimentData, tmp_path: Path) -> None:
    own_dev = dataclasses.replace(tiny_data, dev_from_train=False)
    plain = train_sentiment(small_config(), own_dev, tmp_path / "plain")
    asked = train_sentiment(small_config(refit=True), own_dev, tmp_path / "asked")
    assert "refit" not in asked and untimed(asked) == untimed(plain)
    assert_same_weights(weights(tmp_path / "asked"), weights(tmp_path / "plain"))


def test_the_refit_repeats_the_distillation_on_train_and_dev(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The teacher, then the student from the member the first fit started from, each for the first fit's
    epochs, on train + dev and its augmented variants; the first fit's test accuracy is kept beside the refit's."""
    data = dataclasses.replace(tiny_data, test=tiny_data.dev)
    fits: list[tuple[int, bool]] = []
    real_fit = ts.fit

    def recording(cfg: Any, net: Any, train: Any, *args: Any) -> Any:
        fits.append((len(train.ids), train.soft is not None))
        return real_fit(cfg, net, train, *args)

    monkeypatch.setattr(ts, "fit", recording)
    seen = _record_refit_epochs(monkeypatch)
    cfg = small_config(ensemble=2, distill=True, distill_epochs=2, augment=1, refit=True)
    metrics = train_sentiment(cfg, data, tmp_path / "one")
    n, whole = len(data.train), len(data.train) + len(data.dev)
    assert fits == [(n, False), (2 * n, True), (whole, False), (2 * whole, True)]
    schedule = metrics["refit"]["schedule"]
    assert schedule["start"] == metrics["teacher"]["start"] and len(schedule["teacher"]["epochs"]) == 3
    assert len(seen) == max(schedule["teacher"]["epochs"]) + max(schedule["student"]["epochs"])
    assert 0 <= metrics["refit"]["first_fit"]["test_accuracy"] <= 1
    config = json.loads((tmp_path / "one" / "config.json").read_text())
    assert config["network"]["ensemble"] == 1 and len(config["training"]["refit_history"]) == len(seen) - max(
        schedule["teacher"]["epochs"]
    )
    assert not any(path.exists() for path in ts.checkpoints(tmp_path / "one"))


def test_a_refit_cut_short_by_the_budget_leaves_the_first_fit(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    first = train_sentiment(small_config(), tiny_data, tmp_path / "first")
    real = shared.train_epoch

    def out_of_time(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        stats = real(trainee, state, budget, loop)
        return {**stats, "complete": 0.0} if trainee.fixed is not None else stats

    monkeypatch.setattr(shared, "train_epoch", out_of_time)
    cut = train_sentiment(small_config(refit=True), tiny_data, tmp_path / "cut")
    assert "refit" not in cut and untimed(cut) == untimed(first)
    assert_same_weights(weights(tmp_path / "cut"), weights(tmp_path / "first"))
    assert "the artifact keeps the first fit" in caplog.text


def test_a_refit_resumes_after_a_kill(
    tiny_data: SentimentData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = small_config(epochs=2, refit=True)
    script = [[0.5, 0.5], [0.6, 0.6]]  # both parts peak at epoch 2: the refit trains two epochs
    with monkeypatch.context() as patch:
        _scripted_dev(patch, script)
        reference = train_sentiment(cfg, tiny_data, tmp_path / "reference")
    out = tmp_path / "resumed"
    real = shared.train_epoch

    def killed_in_the_refit(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        if trainee.fixed is not None and state.epoch == 1:
            raise KeyboardInterrupt
        return real(trainee, state, budget, loop)

    with monkeypatch.context() as patch:
        _scripted_dev(patch, script)
        patch.setattr(shared, "train_epoch", killed_in_the_refit)
        with pytest.raises(KeyboardInterrupt):
            train_sentiment(cfg, tiny_data, out)
    assert not out.exists() and checkpoint_of(out).exists() and ts.checkpoints(out)[2].exists()
    started = _record_epochs(monkeypatch)
    resumed = train_sentiment(cfg, tiny_data, out, resume=True)
    assert started == [1], "only the refit's second epoch is left"
    assert_same_weights(weights(out), weights(tmp_path / "reference"))
    assert untimed(resumed) == untimed(reference)
    assert not any(path.exists() for path in ts.checkpoints(out))
