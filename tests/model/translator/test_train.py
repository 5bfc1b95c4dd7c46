"""Training the translator through the CLI on your own files: it learns them, the artifact carries both
vocabularies and the report's metrics, evaluate and predict give the same answers, and bad pairs are clear."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model.__main__ import main
from model.artifacts import read_config
from model.translator.predictor import load_translator

PAIRS = [
    ("ein Hund läuft .", "a dog runs ."),
    ("eine Katze schläft .", "a cat sleeps ."),
    ("zwei Hunde spielen .", "two dogs play ."),
    ("ein Mann liest ein Buch .", "a man reads a book ."),
    ("eine Frau trinkt Kaffee .", "a woman drinks coffee ."),
    ("zwei Kinder laufen .", "two children run ."),
]
TINY = ["--epochs", "30", "--batch-size", "4", "--embedding-dim", "16", "--hidden-size", "32", "--vocab-size", "100",
        "--dropout", "0", "--label-smoothing", "0", "--lr", "1e-2", "--patience", "100", "--threads", "1",
        "--min-steps", "0", "--dev-sentences", "6", "--beam", "2",
        # BPE: on six sentences Unigram's pieces are mostly single characters, too long a target for so small a
        # model to learn in 30 epochs (the service's tests train the default, Unigram: tests/app/conftest.py)
        "--subwords", "bpe"]  # fmt: skip


@pytest.fixture
def fast_attention_plot(monkeypatch: pytest.MonkeyPatch, fast_plots: None) -> None:
    from model.translator import train

    monkeypatch.setattr(train, "plot_attention", lambda *args, **kwargs: b"\x89PNG")


def write_aligned(root: Path, name: str, pairs: list[tuple[str, str]]) -> tuple[Path, Path]:
    source, target = root / f"{name}.de", root / f"{name}.en"
    source.write_text("".join(f"{s}\n" for s, _ in pairs), encoding="utf-8")
    target.write_text("".join(f"{t}\n" for _, t in pairs), encoding="utf-8")
    return source, target


def test_cli_trains_evaluates_and_predicts_on_your_own_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_attention_plot: None
) -> None:
    source, target = write_aligned(tmp_path, "train", PAIRS * 4)
    dev = tmp_path / "dev.tsv"
    dev.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS), encoding="utf-8")
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS), encoding="utf-8")
    out = tmp_path / "translator"
    argv = ["train", "translator", "--source", str(source), "--target", str(target), "--dev", str(dev), "--test",
            str(test), "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["split"] == "test" and summary["bleu"] > 99 and summary["chrf"] > 99
    config = read_config(out)
    assert config.task == "translation" and config.network["cell"] == "gru" and config.network["bidirectional"]
    assert set(config.metrics["test"]) == {"bleu", "bleu_lowercase_tokens", "chrf", "perplexity"}
    assert (out / "target_tokenizer.json").is_file() and (out / "attention.png").is_file()

    assert main(["evaluate", str(out), "--test", str(test), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {k: report[k] for k in ("bleu", "bleu_lowercase_tokens", "chrf")} == pytest.approx(
        {k: config.metrics["test"][k] for k in ("bleu", "bleu_lowercase_tokens", "chrf")}
    )
    assert report["pairs"] == len(PAIRS) and report["perplexity"] == pytest.approx(config.metrics["test"]["perplexity"])

    assert main(["predict", str(out), PAIRS[0][0], PAIRS[3][0], "--beam", "2", "--n-best", "2", "--alignment"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["translation"] for line in lines] == [PAIRS[0][1], PAIRS[3][1]]
    assert all(len(line["alternatives"]) == 1 and line["alignment"] for line in lines)
    model = load_translator(out)
    assert model.translate([PAIRS[1][0]])[0]["translation"] == PAIRS[1][1]


def test_pairs_over_the_length_limit_stop_the_run_or_are_skipped_and_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fast_attention_plot: None
) -> None:
    long = ("ein " * 40 + "Hund .", "a " * 40 + "dog .")
    pairs = tmp_path / "train.tsv"
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in [long, ("", "empty"), *PAIRS * 4]), encoding="utf-8")
    out = tmp_path / "translator"
    argv = ["train", "translator", "--train", str(pairs), "--out", str(out), "--max-length", "20", *TINY]
    assert main(argv) == 2
    assert "train.tsv:2: empty source" in capsys.readouterr().err
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in [long, *PAIRS * 4]), encoding="utf-8")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "over max_length 20" in err and "--skip-bad-rows" in err and not out.exists()
    pairs.write_text("".join(f"{s}\t{t}\n" for s, t in [long, ("", "empty"), *PAIRS * 4]), encoding="utf-8")
    assert main([*argv, "--skip-bad-rows"]) == 0
    assert read_config(out).training["skipped_rows"] == {"empty source": 1, "over max_length": 1}


def test_line_counts_that_differ_are_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, target = write_aligned(tmp_path, "train", PAIRS)
    target.write_text("a dog runs .\n", encoding="utf-8")
    assert main(["train", "translator", "--source", str(source), "--target", str(target), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "has 6 lines and" in err and "has 1" in err and "Traceback" not in err
