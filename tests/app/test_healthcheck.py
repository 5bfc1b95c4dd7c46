"""app/healthcheck.py: the container's HEALTHCHECK command, against a real server and against nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.healthcheck import main, ready_url
from tests.app.conftest import REPO, Artifacts, _rnn_vars, free_port, running_server


@pytest.fixture
def no_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RNN_* variable of the caller and no .env file: the probe sees only what a test sets."""
    for key in _rnn_vars():
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8000/ready"),
        ("::", "http://127.0.0.1:8000/ready"),
        ("127.0.0.1", "http://127.0.0.1:8000/ready"),
        ("::1", "http://[::1]:8000/ready"),
    ],
)
def test_the_probe_targets_this_machine(host: str, url: str) -> None:
    assert ready_url(host, 8000) == url


def test_healthy_when_ready(
    artifacts: Artifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_settings: None
) -> None:
    with running_server(artifacts, tmp_path) as server:
        monkeypatch.setenv("RNN_PORT", str(urlsplit(server.url).port))
        assert main() == 0


def test_unhealthy_when_nothing_answers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], no_settings: None
) -> None:
    monkeypatch.setenv("RNN_PORT", str(free_port()))
    assert main(timeout=1) == 1
    assert "unhealthy" in capsys.readouterr().err


def test_unhealthy_on_a_bad_setting_as_a_process(tmp_path: Path) -> None:
    env = {"RNN_PORT": "not-a-port", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "app.healthcheck"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    assert "RNN_PORT" in proc.stderr
