"""model/versions.py and the CLI's --new-version: which versions a directory holds, which may serve, which one is
chosen (newest, or pinned), and how a trainer takes the next number."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from model.__main__ import main
from model.artifacts import ArtifactConfig, ArtifactError, DataInfo, read_config, save_artifact
from model.sentiment.config import ClassifierConfig
from model.sentiment.network import SentimentClassifier
from model.tokenization import build_word_tokenizer
from model.versions import RESERVED, choose, is_versioned, new_version, numbers, release, resolve, scan, writing
from tests.helpers import tiny_train_argv


def write(out: Path, task: str = "sentiment", run: int = 0) -> Path:
    """A small classifier artifact (marked with `run`), saved the way every trainer saves one."""
    tok = build_word_tokenizer(["a good movie", "a bad film"], "word")
    torch.manual_seed(run)
    net = SentimentClassifier(ClassifierConfig(vocab_size=tok.get_vocab_size(), num_classes=2, embedding_dim=4,
                                               hidden_size=4))  # fmt: skip
    config = ArtifactConfig(task=task, network=asdict(net.config), tokenizer={"kind": "word"}, training={"run": run},
                            data=DataInfo("tiny", {}), metrics={}, labels=["negative", "positive"],
                            max_length=8)  # fmt: skip
    return save_artifact(out, config, net.state_dict(), tok)


@pytest.fixture
def shelf(tmp_path: Path) -> Path:
    """A directory of versions: 1 and 3 good, 2 corrupt, 4 a tagger's, 5 incomplete (no manifest), with a
    version being written, a reservation and a checkpoint beside them."""
    base = tmp_path / "sentiment"
    for n in (1, 2, 3, 5):
        write(base / str(n), run=n)
    weights = base / "2" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    write(base / "4", task="tagging", run=4)
    (base / "5" / "manifest.json").unlink()
    (base / ".6.tmp-abc").mkdir()
    (base / f"{RESERVED}7").touch()
    (base / "7.ckpt").mkdir()
    return base


def test_a_scan_lists_every_numbered_version_and_says_which_may_serve(shelf: Path) -> None:
    versions = scan(shelf, "sentiment")
    assert [v.number for v in versions] == [1, 2, 3, 4, 5]
    assert [v.usable for v in versions] == [True, False, True, False, False]
    assert "model.safetensors" in (versions[1].problem or "")
    assert "'tagging' model, not 'sentiment'" in (versions[3].problem or "")
    assert "manifest" in (versions[4].problem or "")
    assert is_versioned(shelf) and not is_versioned(shelf / "1")


def test_the_newest_usable_version_serves_unless_one_is_pinned(shelf: Path) -> None:
    versions = scan(shelf, "sentiment")
    assert choose(versions).number == 3  # 4 and 5 are newer, and may not serve
    assert choose(versions, pin=1).number == 1
    with pytest.raises(ArtifactError, match="version 9 is not there .versions on disk: 1, 2, 3, 4, 5."):
        choose(versions, pin=9)
    with pytest.raises(ArtifactError, match="version 2 may not serve"):
        choose(versions, pin=2)
    assert resolve(shelf, "sentiment") == shelf / "3"
    assert resolve(shelf / "1") == shelf / "1"  # a plain artifact names itself


def test_a_directory_with_no_usable_version_says_why(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no version yet"):
        choose(scan(tmp_path))
    write(tmp_path / "1", task="generation")
    with pytest.raises(ArtifactError, match="no version may serve: 1: .*'generation' model"):
        choose(scan(tmp_path, "sentiment"))


def test_new_versions_take_the_next_free_number_and_refuse_a_plain_artifact(shelf: Path, tmp_path: Path) -> None:
    first, second = new_version(shelf), new_version(shelf)  # 7 is reserved by someone else
    assert (first.name, second.name) == ("8", "9")
    release(first)
    assert not (shelf / f"{RESERVED}8").exists() and (shelf / f"{RESERVED}9").exists()
    assert new_version(tmp_path / "fresh").name == "1"  # created on demand
    with pytest.raises(ArtifactError, match="holds an artifact of its own.*move it to .*/1"):
        new_version(shelf / "1")


def test_the_cli_writes_numbered_versions_and_reads_the_newest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = tiny_train_argv("sentiment", tmp_path)  # --out tmp_path/sentiment
    for expected in ("1", "2"):
        assert main([*argv, "--new-version"]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["artifact"] == str(tmp_path / "sentiment" / expected)
    base = tmp_path / "sentiment"
    assert numbers(base) == [1, 2] and not list(base.glob(RESERVED + "*"))
    assert read_config(base / "2").task == "sentiment"
    # --if-missing: a version that may serve is there, so nothing is trained
    assert main([*argv, "--new-version", "--if-missing"]) == 0
    assert json.loads(capsys.readouterr().out)["artifact"] == str(base / "2")
    assert numbers(base) == [1, 2]
    # evaluate and predict take the directory and use its newest version
    assert main(["predict", str(base), "a good movie"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1
    # --resume belongs to one run's --out
    assert main([*argv, "--new-version", "--resume"]) == 2
    assert "drop --new-version" in capsys.readouterr().err


def test_an_artifact_missing_its_config_is_a_broken_artifact_not_a_directory_of_versions(tmp_path: Path) -> None:
    out = write(tmp_path / "sentiment")
    (out / "config.json").unlink()
    assert not is_versioned(out)
    assert resolve(out) == out  # loading it then names the missing file


def test_unless_newest_trains_a_preset_once_over_the_quick_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """make serve's two steps: the quick version when none may serve (--if-missing), then the default preset as the
    next version unless the newest already is one (--unless-newest), so running it again trains nothing."""
    quick = [*tiny_train_argv("generator", tmp_path), "--new-version"]
    default = [*quick, "--preset", "default", "--min-steps", "0", "--unless-newest"]  # the last --preset wins
    base = tmp_path / "generator"
    assert main([*quick, "--if-missing"]) == 0 and numbers(base) == [1]
    assert main(default) == 0 and numbers(base) == [1, 2]
    assert [read_config(base / n).training["preset"] for n in ("1", "2")] == ["quick", "default"]
    capsys.readouterr()
    for again in (default, [*quick, "--if-missing"]):
        assert main(again) == 0
        assert json.loads(capsys.readouterr().out)["skipped"] == "version 2 (default preset) may serve already"
    assert numbers(base) == [1, 2]
    assert main([*default[: default.index("--new-version")], "--unless-newest"]) == 2
    assert "add --new-version" in capsys.readouterr().err


def test_writing_adds_a_version_to_a_directory_of_versions_and_leaves_other_paths_alone(
    shelf: Path, tmp_path: Path
) -> None:
    """A benchmark's --keep: into a directory of versions as its next version (reserved meanwhile), elsewhere as
    the path itself."""
    with writing(shelf) as out:
        assert out == shelf / "8" and (shelf / f"{RESERVED}8").exists()  # 7 is reserved by someone else
    assert not (shelf / f"{RESERVED}8").exists()
    for plain in (tmp_path / "new", shelf / "1"):
        with writing(plain) as out:
            assert out == plain
