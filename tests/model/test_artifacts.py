"""model/artifacts.py: save and load round trips, manifest verification, atomic replacement, no pickle."""

from __future__ import annotations

import importlib.util
import json
import stat
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

from model import artifacts
from model.artifacts import (
    MANIFEST,
    ArtifactConfig,
    ArtifactError,
    DataInfo,
    copy_artifact,
    load_artifact,
    save_artifact,
    verify,
)
from model.data import sha256_file
from model.generator.predictor import load_generator
from model.sentiment.config import ClassifierConfig
from model.sentiment.network import SentimentClassifier
from model.sentiment.predictor import load_sentiment, pad
from model.tokenization import build_word_tokenizer, encode_batch
from tests.conftest import Trained

TEXTS = ["a good movie", "a bad film", "great acting and a good plot , really", "", "unseen words only"]


def _classifier(seed: int = 0) -> tuple[SentimentClassifier, Any]:
    tok = build_word_tokenizer(["a good movie", "a bad film", "great acting", "a dull plot"], "word")
    torch.manual_seed(seed)
    config = ClassifierConfig(vocab_size=tok.get_vocab_size(), num_classes=2, embedding_dim=8, hidden_size=8)
    return SentimentClassifier(config).eval(), tok


def _save(
    out: Path, seed: int = 0, calibration: dict[str, float] | None = None, **training: Any
) -> tuple[SentimentClassifier, Any]:
    net, tok = _classifier(seed)
    config = ArtifactConfig(
        task="sentiment", network=asdict(net.config), tokenizer={"kind": "word"}, training=training,
        data=DataInfo("tiny", {}), metrics={"accuracy": 0.5}, labels=["negative", "positive"], max_length=16,
        calibration=calibration,
    )  # fmt: skip
    save_artifact(out, config, net.state_dict(), tok, {"metrics.json": b'{"accuracy": 0.5}\n'})
    return net, tok


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, SentimentClassifier, Any]:
    out = tmp_path / "artifacts" / "sentiment"
    net, tok = _save(out)
    return out, net, tok


def test_round_trip_gives_the_same_logits(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out, net, tok = saved
    loaded = load_sentiment(out)
    with torch.no_grad():
        expected = net(*pad(encode_batch(tok, TEXTS, 16)))
    torch.testing.assert_close(loaded.logits(TEXTS), expected, atol=1e-6, rtol=0)
    # length-sorted batching must return rows in input order
    torch.testing.assert_close(loaded.logits(TEXTS, batch_size=2), expected, atol=1e-6, rtol=0)
    assert loaded.labels == ["negative", "positive"]
    assert loaded.parameters == sum(p.numel() for p in net.parameters())
    assert loaded.artifact.config.network == {**net.config.__dict__}


def test_predict_applies_the_stored_temperature(tmp_path: Path) -> None:
    out = tmp_path / "calibrated"
    _save(out, calibration={"temperature": 2.5})
    model = load_sentiment(out)
    assert model.temperature == 2.5
    torch.testing.assert_close(model.predict_proba(TEXTS), torch.softmax(model.logits(TEXTS) / 2.5, dim=-1))
    results = model.predict(TEXTS)
    assert len(results) == len(TEXTS)
    for result in results:
        assert set(result) == {"label", "score", "probabilities"}
        assert list(result["probabilities"]) == ["negative", "positive"]
        assert sum(result["probabilities"].values()) == pytest.approx(1.0)
        assert result["score"] == max(result["probabilities"].values())
        assert result["probabilities"][result["label"]] == result["score"]


def test_config_and_manifest_contents(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out, net, _ = saved
    config = json.loads((out / "config.json").read_text())
    assert config["schema_version"] == 1 and config["task"] == "sentiment"
    assert config["parameters"] == sum(p.numel() for p in net.parameters())
    assert {"torch", "tokenizers", "safetensors", "python"} <= set(config["versions"])
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == ["config.json", "metrics.json", "model.safetensors", "tokenizer.json"]
    assert all(manifest["files"][name] == sha256_file(out / name) for name in manifest["files"])
    assert verify(out) == manifest["files"]
    assert load_artifact(out).sha256 == manifest["files"]["model.safetensors"]


def _flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE: dict[str, Callable[[Path], None]] = {
    "flip-byte": _flip_middle_byte,
    "truncate": _truncate,
    "delete": Path.unlink,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "config.json", "metrics.json"])
def test_damaged_file_is_refused_by_name(saved: tuple[Path, SentimentClassifier, Any], name: str, damage: str) -> None:
    out = saved[0]
    DAMAGE[damage](out / name)
    with pytest.raises(ArtifactError) as err:
        load_sentiment(out)
    assert str(out / name) in str(err.value)
    assert ("missing" if damage == "delete" else "corrupt") in str(err.value)


def test_missing_manifest_is_refused_by_name(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out = saved[0]
    (out / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match=rf"{out / MANIFEST} is missing"):
        load_sentiment(out)


def test_corrupt_manifest_is_refused_by_name(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out = saved[0]
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match=rf"{out / MANIFEST} is corrupt"):
        load_sentiment(out)


def test_manifest_without_a_required_file_is_refused(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out = saved[0]
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["files"]["tokenizer.json"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="does not list required file tokenizer.json"):
        load_sentiment(out)


def _rewrite_config(out: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit config.json and re-sign the manifest, as a buggy or foreign writer would."""
    config = json.loads((out / "config.json").read_text())
    change(config)
    (out / "config.json").write_text(json.dumps(config))
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"]["config.json"] = sha256_file(out / "config.json")
    (out / MANIFEST).write_text(json.dumps(manifest))


def test_unknown_schema_version_is_refused(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out = saved[0]
    _rewrite_config(out, lambda c: c.update(schema_version=99))
    with pytest.raises(ArtifactError, match=r"config\.json: schema_version 99, this code reads 1"):
        load_sentiment(out)


def test_weights_that_do_not_match_the_config_are_refused(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    out = saved[0]
    _rewrite_config(out, lambda c: c["network"].update(hidden_size=12))
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match its config\.json"):
        load_sentiment(out)


def test_wrong_task_and_missing_directory(saved: tuple[Path, SentimentClassifier, Any], tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="holds a 'sentiment' model, expected 'generation'"):
        load_generator(saved[0])
    with pytest.raises(ArtifactError, match=r"artifact directory .*nowhere does not exist"):
        load_sentiment(tmp_path / "nowhere")


def test_saving_over_an_existing_artifact_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "artifacts" / "sentiment"
    _save(out, seed=0, run="first")
    (out / "stale.txt").write_text("left over from an older artifact")
    net, tok = _save(out, seed=1, run="second")
    loaded = load_sentiment(out)
    assert loaded.artifact.config.training["run"] == "second"
    assert not (out / "stale.txt").exists()
    with torch.no_grad():
        expected = net(*pad(encode_batch(tok, TEXTS, 16)))
    torch.testing.assert_close(loaded.logits(TEXTS), expected, atol=1e-6, rtol=0)
    # no temporary or moved-aside directories are left beside it
    assert [p.name for p in out.parent.iterdir()] == ["sentiment"]


def test_copying_an_artifact_over_another_replaces_it_whole(tmp_path: Path) -> None:
    src, out = tmp_path / "trained" / "sentiment", tmp_path / "artifacts" / "sentiment"
    _save(src, seed=1, run="new")
    _save(out, seed=0, run="old")
    (out / "stale.txt").write_text("left over from the older artifact")
    copy_artifact(src, out)
    assert verify(out) == verify(src)
    assert load_sentiment(out).artifact.config.training["run"] == "new"
    assert [p.name for p in out.parent.iterdir()] == ["sentiment"]
    assert stat.S_IMODE(out.stat().st_mode) & 0o055 == 0o055  # readable by others, as save_artifact leaves it


def test_a_corrupt_artifact_is_not_copied(saved: tuple[Path, SentimentClassifier, Any], tmp_path: Path) -> None:
    src = saved[0]
    _flip_middle_byte(src / "model.safetensors")
    with pytest.raises(ArtifactError, match="corrupt"):
        copy_artifact(src, tmp_path / "copy")
    assert not (tmp_path / "copy").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="renameat2 is Linux-only")
def test_replacing_an_artifact_is_one_atomic_exchange(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux the old and the new artifact swap places in one renameat2 call: no moment with nothing at the
    path, so the two-step move-aside never runs (it would call os.replace on the artifact)."""
    out = tmp_path / "sentiment"
    _save(out, run="first")
    moved: list[str] = []
    real_replace = artifacts.os.replace

    def watch(src: Any, dst: Any) -> None:
        moved.append(str(src))
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", watch)
    _save(out, run="second")
    assert str(out) not in moved
    assert load_sentiment(out).artifact.config.training["run"] == "second"
    assert [p.name for p in tmp_path.iterdir()] == ["sentiment"]


def test_a_failed_save_leaves_the_old_artifact_and_no_temporary_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "sentiment"
    _save(out, run="first")
    net, tok = _classifier()
    with pytest.raises(ValueError, match="task must be one of"):
        config = ArtifactConfig("nope", asdict(net.config), {}, {}, DataInfo("tiny", {}), {})
        save_artifact(out, config, net.state_dict(), tok)

    def crash(path: Path) -> None:  # the last step before the rename: every file is written by then
        raise OSError("disk full")

    with monkeypatch.context() as patch, pytest.raises(OSError, match="disk full"):
        patch.setattr(artifacts, "_fsync_dir", crash)
        _save(out, run="second")
    assert load_sentiment(out).artifact.config.training["run"] == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["sentiment"]


def test_artifact_is_readable_by_other_users(saved: tuple[Path, SentimentClassifier, Any]) -> None:
    """Serving often runs as another user than training (a container user): the artifact must not be private."""
    out = saved[0]
    assert stat.S_IMODE(out.stat().st_mode) & 0o055 == 0o055, oct(out.stat().st_mode)
    for file in out.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) & 0o044 == 0o044, (file.name, oct(file.stat().st_mode))


# --------------------------------------------------------------------------- a trained artifact


def test_trained_artifact_holds_no_pickle(trained: Trained) -> None:
    names = sorted(p.name for p in trained.path.iterdir())
    graph = ["model.onnx", "model.onnx.data"] if importlib.util.find_spec("onnx") else []  # the onnx extra
    assert names == sorted(
        [
            "config.json",
            "confusion_matrix.png",
            "learning_curves.png",
            "manifest.json",
            "metrics.json",
            "model.safetensors",
            "reliability.png",
            "tokenizer.json",
            *graph,
        ]
    )
    artifact = load_artifact(trained.path)
    assert (artifact.file("model.onnx") is not None) == bool(graph) and artifact.file("nothing.bin") is None
    assert not [n for n in names if n.endswith((".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt"))]
    for name in names:
        assert not (trained.path / name).read_bytes().startswith(b"\x80"), f"{name} looks like a pickle"
    state = safetensors.torch.load_file(str(trained.path / "model.safetensors"))
    assert any(name.endswith("embedding.weight") for name in state)
    assert any(name.endswith("head.weight") for name in state)


def test_trained_artifact_loads_and_predicts_with_nothing_but_the_directory(trained: Trained, tmp_path: Path) -> None:
    moved = tmp_path / "copy"
    moved.mkdir()
    for file in trained.path.iterdir():
        (moved / file.name).write_bytes(file.read_bytes())
    model = load_sentiment(moved)
    assert model.labels == trained.labels == ["neg", "pos"]
    assert 0.01 < model.temperature < 100
    results = model.predict(["a superb lovely film", "a dreadful boring film", "", "zzz"])
    assert [set(r["probabilities"]) for r in results] == [{"neg", "pos"}] * 4
    torch.testing.assert_close(load_sentiment(trained.path).logits(TEXTS), model.logits(TEXTS))
