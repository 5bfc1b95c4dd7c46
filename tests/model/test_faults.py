"""Faults in real processes: SIGKILL during training, then `--resume`, ends with the same model and metrics as an
uninterrupted run with the same seed; SIGKILL while an artifact is written never leaves a loadable half-artifact
(and never damages the artifact that was there before).

Each victim runs `python -m model` under a small wrapper that pauses it at a chosen point (after a checkpoint, in
the middle of writing one, in the middle of writing an artifact) and says so on stdout; the test then SIGKILLs it
there. That makes the kill points exact instead of a race against a timer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import safetensors.torch
import torch

from model.artifacts import ArtifactError, load_artifact, verify
from tests.helpers import sentences, write_csv

REPO = Path(__file__).resolve().parents[2]
TIMING = {"sentences_per_s", "epoch_s", "elapsed_s", "train_seconds"}

# the wrapper: pause at PAUSE_AT (a "module:function" to wrap, and after which call), print PAUSED, sleep
WRAPPER = textwrap.dedent(
    """
    import importlib, os, sys, time
    target, when, nth = os.environ["PAUSE_AT"].split("|")
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)
    calls = []

    def paused(*args, **kwargs):
        calls.append(1)
        if when == "before" and len(calls) == int(nth):
            print("PAUSED", flush=True); time.sleep(60)
        out = original(*args, **kwargs)
        if when == "after" and len(calls) == int(nth):
            print("PAUSED", flush=True); time.sleep(60)
        return out

    setattr(module, name, paused)
    from model.__main__ import main
    sys.exit(main(sys.argv[1:]))
    """
)


def run_until_paused(argv: list[str], pause_at: str, workdir: Path) -> None:
    """Start `python -m model argv` under the wrapper, wait for it to pause at `pause_at`, SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PAUSE_AT=pause_at)
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *argv], cwd=workdir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "PAUSED":
                break
        else:
            pytest.fail(
                f"never paused at {pause_at}; status {proc.wait()}:\n{proc.stderr.read() if proc.stderr else ''}"
            )
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def train(argv: list[str], workdir: Path) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "model", *argv], cwd=workdir, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def untimed_history(out: Path) -> list[dict[str, object]]:
    rows = json.loads((out / "config.json").read_text())["training"]["history"]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def same_weights(a: Path, b: Path) -> bool:
    wa = safetensors.torch.load_file(str(a / "model.safetensors"))
    wb = safetensors.torch.load_file(str(b / "model.safetensors"))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    write_csv(root / "train.csv", sentences(400, ["neg", "pos"], seed=3))
    return root


def sentiment_argv(out: Path) -> list[str]:
    return ["train", "sentiment", "--train", "train.csv", "--out", str(out), "--preset", "quick", "--epochs", "3",
            "--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "32", "--threads", "1", "--seed", "5",
            "--ensemble", "2"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(workdir: Path) -> Path:
    out = workdir / "reference"
    train(sentiment_argv(out), workdir)
    return out


@pytest.mark.parametrize(
    "pause_at",
    [
        "model.train:save_checkpoint|after|1",  # killed after the first epoch's checkpoint
        "model.train:save_checkpoint|after|2",  # … after the second
        "safetensors.torch:save_file|after|2",  # in the middle of writing the second checkpoint
    ],
    ids=["after-epoch-1", "after-epoch-2", "mid-checkpoint"],
)
def test_sigkill_then_resume_equals_an_uninterrupted_run(workdir: Path, reference: Path, pause_at: str) -> None:
    out = workdir / f"killed-{pause_at.split('|', 2)[-1]}-{abs(hash(pause_at))}"
    run_until_paused(sentiment_argv(out), pause_at, workdir)
    assert not out.exists()  # no artifact from a killed run
    with pytest.raises(ArtifactError):
        verify(out)
    train([*sentiment_argv(out), "--resume"], workdir)
    assert same_weights(out, reference)
    assert untimed_history(out) == untimed_history(reference)
    metrics = json.loads((out / "config.json").read_text())["metrics"]
    expected = json.loads((reference / "config.json").read_text())["metrics"]
    assert {k: v for k, v in metrics.items() if k not in TIMING} == {
        k: v for k, v in expected.items() if k not in TIMING
    }


@pytest.mark.parametrize(
    "pause_at",
    [
        "safetensors.torch:save_file|after|1",  # the weights are written, nothing else
        "model.artifacts:sha256_file|after|2",  # the manifest is being computed
        "model.artifacts:_fsync_dir|after|1",  # every file written and synced, not yet renamed into place
    ],
    ids=["after-weights", "mid-manifest", "before-rename"],
)
def test_sigkill_while_an_artifact_is_written(workdir: Path, reference: Path, pause_at: str) -> None:
    """Killed while `train` publishes its artifact: where nothing was, nothing loadable is left; where an artifact
    was, it is still there, whole and verified."""
    fresh = workdir / f"fresh-{abs(hash(pause_at))}"
    run_until_paused(["train", "sentiment", "--train", "train.csv", "--out", str(fresh), "--preset", "quick",
                      "--epochs", "1", "--embedding-dim", "8", "--hidden-size", "8", "--threads", "1"], pause_at,
                     workdir)  # fmt: skip
    with pytest.raises(ArtifactError):
        load_artifact(fresh)

    kept = workdir / f"kept-{abs(hash(pause_at))}"
    train(sentiment_argv(kept), workdir)
    before = verify(kept)
    run_until_paused(["train", "sentiment", "--train", "train.csv", "--out", str(kept), "--preset", "quick",
                      "--epochs", "1", "--embedding-dim", "8", "--hidden-size", "8", "--threads", "1"], pause_at,
                     workdir)  # fmt: skip
    assert verify(kept) == before  # the old artifact, untouched
    assert load_artifact(kept).task == "sentiment"
