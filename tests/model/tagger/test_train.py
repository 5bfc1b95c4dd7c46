"""model/tagger/train.py and model/tagger/cli.py: tiny taggers trained in about a second on sentences where only
the context tells the noun "saw" from the verb "saw"; the artifact, calibration, the baseline, resume, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import model.train as shared
from model.__main__ import main
from model.artifacts import read_config
from model.tagger import train as tt
from model.tagger.config import TaggerTrainConfig
from model.tagger.conll import TaggedCorpus, TaggedSentence
from model.tagger.predictor import load_tagger
from tests.helpers import tagged_sentences, write_conllu


def tiny(**overrides: Any) -> TaggerTrainConfig:
    settings: dict[str, Any] = {
        "epochs": 12, "batch_size": 8, "embedding_dim": 16, "char_dim": 8, "char_hidden": 8, "hidden_size": 16,
        "num_layers": 1, "lr": 1e-2, "dropout": 0.0, "word_dropout": 0.0, "threads": 1, "patience": 12,
        "min_steps": 0,
    }  # fmt: skip
    return TaggerTrainConfig(**{**settings, **overrides})


def corpus(n: int = 120) -> TaggedCorpus:
    rows = [TaggedSentence(t, g) for t, g in tagged_sentences(n, seed=1)]
    cut = n * 3 // 4
    return TaggedCorpus("tiny", rows[:cut], rows[cut:], rows[cut:], {"tiny": "0" * 64})


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tagger") / "tagger"
    return out, tt.train_tagger(tiny(), corpus(), out)


def test_learns_what_only_context_decides(trained: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = trained
    assert metrics["test"]["accuracy"] == 1.0
    tagger = load_tagger(out)
    [noun_saw, verb_saw] = tagger.tag_tokens([["the", "saw", "cut", "the", "wood", "."], ["I", "saw", "a", "dog"]])
    assert [t["tag"] for t in noun_saw] == ["DET", "NOUN", "VERB", "DET", "NOUN", "PUNCT"]
    assert [t["tag"] for t in verb_saw] == ["PRON", "VERB", "DET", "NOUN"]
    assert all(0.5 < t["score"] <= 1.0 for t in noun_saw + verb_saw)


def test_the_artifact_holds_what_serving_needs(trained: tuple[Path, dict[str, Any]]) -> None:
    out, metrics = trained
    config = read_config(out)
    assert config.task == "tagging" and config.labels == ["DET", "NOUN", "PRON", "PUNCT", "VERB"]
    assert config.tokenizer["kind"] == "word+char" and "s" in config.tokenizer["chars"]
    assert config.calibration is not None and config.calibration["temperature"] > 0
    assert config.metrics == metrics and {"learning_curves.png", "confusion_matrix.png"} <= {
        p.name for p in out.iterdir()
    }
    test = metrics["test"]
    assert test["most_frequent_tag_accuracy"] < test["accuracy"]  # "saw" and "cut" defeat the baseline
    assert set(test["per_tag"]) >= {"NOUN", "VERB"} and 0 <= test["ece"] <= 1
    assert test["unseen_tokens"] == 0 and test["seen_accuracy"] == 1.0


def test_text_input_gets_offsets_into_the_text(trained: tuple[Path, dict[str, Any]]) -> None:
    text = "They saw  the saw."
    [tokens] = load_tagger(trained[0]).tag_texts([text])
    assert [(t["text"], t["tag"]) for t in tokens] == [
        ("They", "PRON"), ("saw", "VERB"), ("the", "DET"), ("saw", "NOUN"), (".", "PUNCT")
    ]  # fmt: skip
    assert all(text[t["start"] : t["end"]] == t["text"] for t in tokens)
    assert load_tagger(trained[0]).tag_texts([""]) == [[]]


def test_unseen_words_are_tagged_from_context_and_spelling(tmp_path: Path) -> None:
    tt.train_tagger(tiny(), corpus(), tmp_path / "t")
    [tokens] = load_tagger(tmp_path / "t").tag_tokens([["the", "zebra", "saw", "we", "."]])
    assert [t["tag"] for t in tokens] == ["DET", "NOUN", "VERB", "PRON", "PUNCT"]


@pytest.mark.parametrize("overrides", [{"crf": True}, {"cell": "gru", "bidirectional": False}, {"chars": False}])
def test_variants_train_and_load(tmp_path: Path, overrides: dict[str, Any]) -> None:
    metrics = tt.train_tagger(tiny(**overrides), corpus(), tmp_path / "v")
    tagger = load_tagger(tmp_path / "v")
    assert tagger.config.crf == overrides.get("crf", False)
    assert (tagger.config.char_vocab_size > 0) == overrides.get("chars", True)
    assert metrics["test"]["accuracy"] > 0.8


def test_small_data_trains_for_its_minimum_steps_and_large_data_for_its_epochs(tmp_path: Path) -> None:
    cfg = tiny(epochs=1, min_steps=30)  # 90 training sentences in batches of 8: 12 steps an epoch
    assert tt.planned_epochs(cfg, 90) == 3
    metrics = tt.train_tagger(cfg, corpus(), tmp_path / "t")
    history = read_config(tmp_path / "t").training["history"]
    assert metrics["epochs_run"] == len(history) == 3
    # UD English EWT's 12,543 sentences: the default's 12 epochs already hold more steps than the minimum
    assert tt.planned_epochs(TaggerTrainConfig(), 12543) == TaggerTrainConfig().epochs
    assert tt.planned_epochs(TaggerTrainConfig(), 1100) > TaggerTrainConfig().epochs


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny(epochs=3)
    reference = tt.train_tagger(cfg, corpus(), tmp_path / "ref")
    real = shared.train_epoch

    def crash_on_third(trainee: Any, state: Any, budget: Any, loop: Any) -> Any:
        if state.epoch == 2:
            raise KeyboardInterrupt
        return real(trainee, state, budget, loop)

    with monkeypatch.context() as patch:
        patch.setattr(shared, "train_epoch", crash_on_third)
        with pytest.raises(KeyboardInterrupt):
            tt.train_tagger(cfg, corpus(), tmp_path / "run")
    assert (tmp_path / "run.ckpt" / "state.json").exists() and not (tmp_path / "run").exists()
    resumed = tt.train_tagger(cfg, corpus(), tmp_path / "run", resume=True)
    assert resumed["test"]["accuracy"] == reference["test"]["accuracy"]
    assert [h["epoch"] for h in read_config(tmp_path / "run").training["history"]] == [1, 2, 3]


def test_most_frequent_tag_baseline() -> None:
    train = [
        TaggedSentence(["The", "saw", "saw", "runs"], ["DET", "NOUN", "NOUN", "VERB"]),
        TaggedSentence(["I", "saw", "Paris"], ["PRON", "VERB", "PROPN"]),
        TaggedSentence(["The", "I", "Rome"], ["DET", "PRON", "PROPN"]),
    ]
    baseline = tt.MostFrequentTag(train)
    assert baseline.tag("saw") == "NOUN" and baseline.tag("the") == "DET"  # exact, then lower-cased
    assert baseline.tag("walks") != "PROPN" and baseline.tag("Lyon") == "PROPN"  # unseen: like the rare words
    assert baseline.tag("jumps") == "VERB"  # the rare "runs" shares its ending and case
    test = [TaggedSentence(["I", "saw", "Oslo", "the"], ["PRON", "VERB", "PROPN", "PRON"])]
    assert tt.baseline_accuracy(train, test) == 2 / 4  # "saw" is a NOUN more often; "the" is a DET


def test_cli_trains_evaluates_and_predicts_on_your_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_plots: None
) -> None:
    rows = tagged_sentences(120, seed=2)
    train, test = write_conllu(tmp_path / "train.conllu", rows[:90]), write_conllu(tmp_path / "test.conllu", rows[90:])
    out = tmp_path / "tagger"
    argv = ["train", "tagger", "--train", str(train), "--test", str(test), "--out", str(out), "--epochs", "12",
            "--hidden-size", "16", "--embedding-dim", "16", "--char-hidden", "8", "--batch-size", "8", "--lr", "1e-2",
            "--layers", "1", "--threads", "1", "--min-steps", "0"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["split"] == "test" and summary["accuracy"] > 0.95
    assert main(["evaluate", str(out), "--test", str(test), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["accuracy"] == pytest.approx(summary["accuracy"]) and report["tokens"] == sum(
        len(t) for t, _ in rows[90:]
    )
    trained_on = read_config(out).metrics["test"]
    assert report["unseen_tokens"] == trained_on["unseen_tokens"] and report["per_tag"] == trained_on["per_tag"]
    assert main(["predict", str(out), "They saw the saw.", "we like   a dog", "--pretokenized"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [t["text"] for t in lines[0]["tokens"]] == ["They", "saw", "the", "saw."]
    assert [t["tag"] for t in lines[1]["tokens"]] == ["PRON", "VERB", "DET", "NOUN"]
    assert "start" not in lines[1]["tokens"][0]
    assert main(["predict", str(out), "They saw the saw."]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(t["text"], t["tag"], t["start"]) for t in line["tokens"]] == [
        ("They", "PRON", 0), ("saw", "VERB", 5), ("the", "DET", 9), ("saw", "NOUN", 13), (".", "PUNCT", 16)
    ]  # fmt: skip


def test_cli_bio_data_reports_entity_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_plots: None
) -> None:
    people, places = ["Ann", "Bob Smith", "Cy"], ["Paris", "New York", "Rome"]
    lines = []
    for i in range(60):
        who, where = people[i % 3].split(), places[(i // 3) % 3].split()
        tokens = [*who, "lives", "in", *where]
        tags = ["B-PER", *["I-PER"] * (len(who) - 1), "O", "O", "B-LOC", *["I-LOC"] * (len(where) - 1)]
        lines += [f"{t}\t{g}" for t, g in zip(tokens, tags, strict=True)] + [""]
    data = tmp_path / "ner.txt"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    argv = ["train", "tagger", "--train", str(data), "--test", str(data), "--out", str(tmp_path / "ner"), "--crf",
            "--epochs", "10", "--hidden-size", "16", "--embedding-dim", "16", "--char-hidden", "8", "--lr", "1e-2",
            "--batch-size", "8", "--layers", "1", "--threads", "1", "--min-steps", "0"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["entity_f1"] > 0.9


def test_cli_stops_on_a_bad_line_or_skips_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = tagged_sentences(40, seed=3)
    good = write_conllu(tmp_path / "train.conllu", rows).read_text(encoding="utf-8").splitlines()
    good[2] = "\t".join(good[2].split("\t")[:4])  # four columns instead of ten
    bad = tmp_path / "bad.conllu"
    bad.write_text("\n".join(good) + "\n", encoding="utf-8")
    argv = ["train", "tagger", "--train", str(bad), "--out", str(tmp_path / "t"), "--preset", "quick",
            "--epochs", "1", "--threads", "1"]  # fmt: skip
    assert main(argv) == 2
    assert f"{bad}:3:" in capsys.readouterr().err
    assert main([*argv, "--skip-bad-rows"]) == 0
    assert read_config(tmp_path / "t").training["skipped_rows"] == 1


def test_cli_evaluates_a_builtin_split_reading_only_that_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, fast_plots: None
) -> None:
    from model import data
    from model.data import RemoteFile, sha256_file

    out = tmp_path / "tagger"
    tt.train_tagger(tiny(), corpus(), out)
    test = write_conllu(tmp_path / "mirror" / "ud_english_ewt" / "test.conllu", tagged_sentences(30, seed=4))
    entry = RemoteFile("ud_english_ewt/test.conllu", sha256_file(test), "https://example.invalid/test.conllu")
    monkeypatch.setitem(data.BUILTIN, "ud_english_ewt", {"test": entry})  # no train or dev file anywhere
    assert main(["evaluate", str(out), "--data", "ud_english_ewt", "--split", "test", "--json",
                 "--data-dir", str(tmp_path / "mirror")]) == 0  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == "ud_english_ewt/test" and report["accuracy"] == 1.0
    assert report["tokens"] == sum(len(t) for t, _ in tagged_sentences(30, seed=4))
    assert main(["evaluate", str(out), "--data", "sst2", "--split", "test"]) == 2
    assert "'sst2' is not a tagged data set" in capsys.readouterr().err
