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

from model.predictors import load_sentiment
from tests.helpers import sentences, write_csv

REPO = Path(__file__).resolve().parents[2]
DIGEST = re.compile(r"rank (\d)/2 parameter digest ([0-9a-f]{64})")


@pytest.mark.slow
def test_two_replicas_train_identically_and_write_one_artifact(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "data" / "tiny.csv", sentences(48, ["neg", "pos"]))
    out = tmp_path / "artifacts" / "sentiment"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RNN_", "MASTER_", "WORLD_", "RANK", "LOCAL_"))}
    env.update(
        GLOO_SOCKET_IFNAME="lo",
        MASTER_ADDR="127.0.0.1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(REPO),
        RNN_CACHE_DIR=str(tmp_path / "cache"),
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "model", "train", "sentiment", "--train", str(train), "--out", str(out), "--threads", "1"]
    command += ["--preset", "quick", "--epochs", "2", "--embedding-dim", "8", "--hidden-size", "8", "--batch-size", "8"]
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
    assert [p.name for p in out.parent.iterdir()] == ["sentiment"]  # no tmp, .old or .ckpt directories
    model = load_sentiment(out)
    assert model.artifact.config.training["world_size"] == 2
    assert model.labels == ["neg", "pos"]
