"""model/__main__.py: `python -m model train sentiment | evaluate | predict`, in process (fast) and once as a real
process, and the run options every kind's `train` shares (model/cli.py: --device, --precision). A user's mistake
exits with status 2 and a single `error: …` line, never a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import safetensors.torch
import torch

from model.__main__ import build_parser, main
from model.artifacts import read_config
from model.sentiment.config import sentiment_preset
from model.sentiment.predictor import load_sentiment
from model.tasks import TASKS, load_model
from tests.conftest import Trained
from tests.helpers import sentences, tiny_train_argv, write_bytes, write_csv

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "sentiment", "--help"], ["--preset", "--train", "--resume", "--max-minutes", "--skip-bad-rows"]),
        (["evaluate", "--help"], ["artifact", "--test", "--split", "--json"]),
        (["predict", "--help"], ["artifact", "TEXT", "--file"]),
        (["--help"], ["train", "evaluate", "predict"]),
    ],
    ids=["train", "evaluate", "predict", "top"],
)
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str], expected: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m model")
    for word in expected:
        assert word in out


def test_train_writes_an_artifact(
    capsys: pytest.CaptureFixture[str], tiny_csv: Path, tmp_path: Path, fast_plots: None
) -> None:
    out = tmp_path / "artifacts" / "cli"
    argv = ["train", "sentiment", "--train", str(tiny_csv), "--out", str(out), "--preset", "quick"]
    argv += ["--epochs", "1", "--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "16", "--threads", "1"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["artifact"] == str(out) and printed["split"] == "dev"
    assert 0.0 <= printed["accuracy"] <= 1.0
    model = load_sentiment(out)
    training = model.artifact.config.training
    # the preset's values, with the command line's overrides on top
    overrides = {"epochs": 1, "embedding_dim": 8, "hidden_size": 8, "batch_size": 16, "threads": 1}
    expected = {**asdict(sentiment_preset("quick")), **overrides}
    assert {k: training[k] for k in expected} == expected
    assert expected != asdict(sentiment_preset("default"))
    assert model.labels == ["neg", "pos"]
    assert printed["accuracy"] == model.artifact.config.metrics["dev"]["accuracy"]
    assert "refit" not in model.artifact.config.metrics  # the quick preset does not refit


def test_refit_from_the_command_line(tiny_csv: Path, tmp_path: Path, fast_plots: None) -> None:
    out = tmp_path / "refit"
    argv = ["train", "sentiment", "--train", str(tiny_csv), "--out", str(out), "--preset", "quick", "--refit"]
    argv += ["--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "16", "--threads", "1"]
    assert main(argv) == 0
    metrics = load_sentiment(out).artifact.config.metrics
    assert metrics["refit"]["train_sentences"] == 48  # every row of tiny_csv, its dev split included


def test_predict_prints_one_json_object_per_text(capsys: pytest.CaptureFixture[str], trained: Trained) -> None:
    texts = ["a superb lovely film", "a dull dreadful plot", "ünïcödé 😀 text"]
    assert main(["predict", str(trained.path), *texts]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    expected = load_sentiment(trained.path).predict(texts)
    for line, want in zip(lines, expected, strict=True):
        got = json.loads(line)
        assert set(got) == {"label", "score", "probabilities"}
        assert got["label"] in trained.labels and list(got["probabilities"]) == trained.labels
        assert got["score"] == max(got["probabilities"].values())
        assert sum(got["probabilities"].values()) == pytest.approx(1.0)
        assert got == want  # JSON keeps floats exactly


def test_predict_reads_a_file_after_the_arguments(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path
) -> None:
    path = write_bytes(tmp_path / "texts.txt", "a superb film\na dull plot\n", newline="\r\n", bom=True)
    assert main(["predict", str(trained.path), "first", "--file", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = load_sentiment(trained.path).predict(["first", "a superb film", "a dull plot"])
    assert lines == expected


def test_evaluate_json_matches_the_predictions(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path
) -> None:
    assert main(["evaluate", str(trained.path), "--test", str(trained.test_csv), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["split"] == str(trained.test_csv) and report["artifact"] == str(trained.path)
    assert report["n"] == 12
    model = load_sentiment(trained.path)
    rows = sentences(12, ["neg", "pos"], seed=2)  # what the trained fixture wrote to test.csv
    predicted = [r["label"] for r in model.predict([text for text, _ in rows])]
    correct = sum(p == label for p, (_, label) in zip(predicted, rows, strict=True))
    assert report["accuracy"] == pytest.approx(correct / 12)
    assert sum(map(sum, report["confusion_matrix"])) == 12
    assert set(report["per_class"]) == {"neg", "pos"}
    assert {"macro_f1", "ece", "nll"} <= set(report)


def test_evaluate_prints_a_readable_summary(capsys: pytest.CaptureFixture[str], trained: Trained) -> None:
    assert main(["evaluate", str(trained.path), "--test", str(trained.test_csv)]) == 0
    out = capsys.readouterr().out
    assert f"{trained.test_csv}: n=12 accuracy=" in out
    assert "ECE=" in out and "neg: precision=" in out and "pos: precision=" in out


def _user_error_cases(trained: Trained, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    bad_row = write_bytes(tmp_path / "bad.csv", "text,label\ngood,pos\nbad,neg\n,neg\n")
    one_class = write_csv(tmp_path / "one.csv", [("good", "pos"), ("great", "pos")])
    other_labels = write_csv(tmp_path / "stars.csv", [("good", "5 stars"), ("bad", "1 star")])
    good = write_csv(tmp_path / "good.csv", sentences(8, ["neg", "pos"]))
    train = ["train", "sentiment", "--out", str(tmp_path / "never")]
    return {
        "missing-train-file": (train + ["--train", str(tmp_path / "missing.csv")], "missing.csv: no such file"),
        "bad-row": (train + ["--train", str(bad_row)], "bad.csv:4: bad row (empty text)"),
        "unknown-column": (train + ["--train", str(good), "--text-column", "review"], "no text column 'review'"),
        "single-class": (train + ["--train", str(one_class)], "only one class ('pos')"),
        "data-and-train": (train + ["--train", str(good), "--data", "sst2"], "either --data or --train"),
        "predict-missing-artifact": (["predict", str(tmp_path / "none"), "hi"], "none does not exist"),
        "predict-missing-file": (["predict", str(trained.path), "--file", str(tmp_path / "no.txt")], "no.txt"),
        "predict-nothing": (["predict", str(trained.path)], "nothing to predict"),
        "evaluate-missing-artifact": (["evaluate", str(tmp_path / "none"), "--test", str(good)], "none does not exist"),
        "evaluate-unknown-labels": (["evaluate", str(trained.path), "--test", str(other_labels)], "'5 stars'"),
        "evaluate-bad-row": (["evaluate", str(trained.path), "--test", str(bad_row)], "bad.csv:4"),
    }


USER_ERRORS = [
    "missing-train-file",
    "bad-row",
    "unknown-column",
    "single-class",
    "data-and-train",
    "predict-missing-artifact",
    "predict-missing-file",
    "predict-nothing",
    "evaluate-missing-artifact",
    "evaluate-unknown-labels",
    "evaluate-bad-row",
]


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_mistakes_exit_2_with_one_error_line(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path, case: str
) -> None:
    argv, needle = _user_error_cases(trained, tmp_path)[case]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("error: ")
    assert needle in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "never").exists()


def test_user_error_cases_are_all_parametrized(trained: Trained, tmp_path: Path) -> None:
    assert sorted(_user_error_cases(trained, tmp_path)) == sorted(USER_ERRORS)


def test_damaged_artifact_is_a_user_error(capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for file in trained.path.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    (copy / "tokenizer.json").write_text("{}")
    assert main(["predict", str(copy), "hello"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"{copy / 'tokenizer.json'} is corrupt" in err


def test_real_process_reports_a_user_error_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNN_")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run(
        [sys.executable, "-m", "model", "predict", str(tmp_path / "no-artifact"), "hello"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: artifact directory {tmp_path / 'no-artifact'} does not exist (train one with `python -m model train`)"
    ]


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--vocab-size", "1"),
        ("--dropout", "1.0"),
        ("--ensemble", "0"),
        ("--dev-fraction", "0"),
        ("--batch-size", "0"),
        ("--epochs", "0"),
        ("--patience", "0"),
        ("--word-dropout", "1.5"),
        ("--lr", "0"),
        ("--pieces", "-1"),
        ("--min-steps", "-5"),
        ("--augment", "-1"),
        ("--embedding-std", "0"),
    ],
)
def test_invalid_settings_are_user_errors_naming_the_setting(
    capsys: pytest.CaptureFixture[str], tiny_csv: Path, tmp_path: Path, fast_plots: None, flag: str, value: str
) -> None:
    out = tmp_path / "never"
    argv = ["train", "sentiment", "--train", str(tiny_csv), "--out", str(out), "--preset", "quick"]
    argv += ["--embedding-dim", "8", "--hidden-size", "8", "--threads", "1", flag, value]
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    name = flag[2:]
    assert any(spelling in lines[0] for spelling in (name, name.replace("-", "_"), name.replace("-", " "))), lines[0]
    assert not out.exists()


def test_if_missing_keeps_a_verified_artifact(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path
) -> None:
    """The compose trainer's `--if-missing`: a verified artifact of the same task is left exactly as it is."""
    out = tmp_path / "kept"
    shutil.copytree(trained.path, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    argv = ["train", "sentiment", "--train", str(trained.train_csv), "--out", str(out), "--if-missing"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["skipped"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_if_missing_retrains_over_a_damaged_artifact(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path, fast_plots: None
) -> None:
    out = tmp_path / "damaged"
    shutil.copytree(trained.path, out)
    (out / "model.safetensors").write_bytes(b"not weights")
    argv = ["train", "sentiment", "--train", str(trained.train_csv), "--out", str(out), "--if-missing"]
    argv += ["--preset", "quick", "--epochs", "1", "--embedding-dim", "8", "--hidden-size", "8", "--threads", "1"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "model.safetensors is corrupt" in captured.err and "training a new one" in captured.err
    load_sentiment(out)  # verifies the manifest again


def test_if_missing_refuses_an_artifact_of_the_other_task(
    capsys: pytest.CaptureFixture[str], trained: Trained, tmp_path: Path
) -> None:
    argv = ["train", "generator", "--train", str(trained.train_csv), "--out", str(trained.path), "--if-missing"]
    assert main(argv) == 2
    assert "holds a 'sentiment' artifact, not 'generation'" in capsys.readouterr().err


KINDS = sorted(TASKS)
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


def test_every_kind_defaults_to_the_cpu_in_fp32() -> None:
    for kind in KINDS:
        args = build_parser().parse_args(["train", kind])
        assert (args.device, args.precision) == ("cpu", "fp32"), kind


def _trained_on(out: Path) -> tuple[set[torch.dtype], dict[str, object]]:
    """The artifact's weight dtypes, and what its config says of where and in what precision it was trained."""
    dtypes = {t.dtype for t in safetensors.torch.load_file(str(out / "model.safetensors")).values()}
    training = read_config(out).training
    return dtypes, {"device": training["device"], "precision": training["precision"]}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_on_the_cpu_in_the_precision_given(
    tmp_path: Path, fast_plots: None, kind: str, precision: str
) -> None:
    """bf16 autocasts the training forward passes; the weights, and so the artifact, stay float32."""
    assert main([*tiny_train_argv(kind, tmp_path), "--device", "cpu", "--precision", precision]) == 0
    assert _trained_on(tmp_path / kind) == ({torch.float32}, {"device": "cpu", "precision": precision})
    load_model(tmp_path / kind, kind)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        pytest.param(["--device", "cuda"], "--device cuda: no CUDA device here", marks=no_cuda, id="cuda"),
        pytest.param(["--precision", "fp16"], "--precision fp16 needs CUDA", id="fp16-on-cpu"),
        pytest.param(["--device", "auto", "--precision", "fp16"], "--precision fp16 needs CUDA", marks=no_cuda,
                     id="fp16-on-auto"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("kind", KINDS)
def test_a_device_or_precision_this_machine_lacks_is_one_error_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, kind: str, option: list[str], needle: str
) -> None:
    """Refused before any data is read: the training file does not even exist."""
    argv = ["train", kind, "--train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "never"), *option]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [captured.err.strip()] and captured.err.startswith(f"error: {needle}")
    assert "Traceback" not in captured.err + captured.out and not (tmp_path / "never").exists()


@no_cuda
def test_real_process_refuses_cuda_without_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RNN_")}
    env["PYTHONPATH"] = str(REPO)
    argv = [sys.executable, "-m", "model", *tiny_train_argv("generator", tmp_path), "--device", "cuda"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    [line] = proc.stderr.splitlines()
    assert line.startswith("error: --device cuda: no CUDA device here") and "--device cpu" in line


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_trains_on_cuda_and_loads_on_the_cpu(
    tmp_path: Path, fast_plots: None, kind: str, precision: str
) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    assert main([*tiny_train_argv(kind, tmp_path), "--device", "cuda", "--precision", precision]) == 0
    assert _trained_on(tmp_path / kind) == ({torch.float32}, {"device": "cuda", "precision": precision})
    network = load_model(tmp_path / kind, kind).network
    assert {p.device.type for p in network.parameters()} == {"cpu"}
