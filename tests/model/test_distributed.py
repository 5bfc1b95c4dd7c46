"""Data-parallel training under torchrun: two CPU processes over gloo on the loopback interface only.

Slow (two interpreters importing torch), so marked; it still runs by default.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from model.generator.predictor import load_generator
from model.sentiment.predictor import load_sentiment
from tests.helpers import sentences, write_csv

REPO = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"rank (\d)/2 parameter digest ([0-9a-f]{64})")


def train_on_two_replicas(tmp_path: Path, kind: str, train: Path, *options: str) -> Path:
    """`torchrun --standalone --nproc_per_node 2 -m model train KIND` on loopback gloo; checks what every kind
    must hold: identical replicas, one report (rank 0's), one artifact and nothing else beside it. Returns it."""
    out = tmp_path / "artifacts" / kind
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RNN_", "MASTER_", "WORLD_", "RANK", "LOCAL_"))}
    env.update(
        GLOO_SOCKET_IFNAME="lo",
        MASTER_ADDR="127.0.0.1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
        RNN_CACHE_DIR=str(tmp_path / "cache"),
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "model", "train", kind, "--train", str(train), "--out", str(out), "--threads", "1", *options]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]

    digests = dict(DIGEST.findall(log))
    assert sorted(digests) == ["0", "1"], log[-4000:]
    assert len(DIGEST.findall(log)) == 2
    assert digests["0"] == digests["1"]
    assert "all 2 replicas hold identical parameters" in log
    # only rank 0 reports and writes
    (printed,) = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert json.loads(printed)["artifact"] == str(out)
    assert [p.name for p in out.parent.iterdir()] == [kind]  # no tmp, .old or .ckpt directories
    return out


@pytest.mark.slow
def test_two_replicas_train_identically_and_write_one_artifact(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "data" / "tiny.csv", sentences(48, ["neg", "pos"]))
    out = train_on_two_replicas(tmp_path, "sentiment", train, "--preset", "quick", "--epochs", "2",
                                "--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "8")  # fmt: skip
    model = load_sentiment(out)
    assert model.artifact.config.training["world_size"] == 2
    assert model.labels == ["neg", "pos"]


@pytest.mark.slow
def test_two_generator_replicas_train_identically_and_write_one_artifact(tmp_path: Path) -> None:
    text = tmp_path / "data" / "tiny.txt"
    text.parent.mkdir(parents=True)
    text.write_text(
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
        "First Citizen:\nYou are all resolved rather to die than to famish?\n\nAll:\nResolved. resolved.\n\n" * 16,
        encoding="utf-8",
    )
    out = train_on_two_replicas(tmp_path, "generator", text, "--preset", "quick", "--epochs", "2",
                                "--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4",
                                "--seq-len", "16")  # fmt: skip
    assert load_generator(out).artifact.config.training["world_size"] == 2
